"""Helpers of the window integration tests: a config with one window of each type over one
source stream, events shuffled within the grace period (a few held back beyond it), what
SQL says the results must be, and the window worker as a subprocess.

Not a test module: the window tests import it (``tests.integration.windowkit``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from agents.window_agent import INSTANCE_ENV
from agents.windows.assign import US, geometry_of
from agents.windows.processor import format_us
from agents.windows.sql import late_relation_sql, window_sql
from firelake.config import FirelakeConfig, load_config
from firelake.testing import write_config
from streams.envelope import encode
from streams.topics import ensure_topics
from tests.integration.routerkit import produce, read_records

__all__ = [
    "BASE",
    "GRACE",
    "Stream",
    "expected_late",
    "expected_results",
    "final_rows",
    "make_stream",
    "read_outputs",
    "result_key",
    "send_stream",
    "start_window",
    "window_config",
]

REPO = Path(__file__).resolve().parents[2]
BASE = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
GRACE = 5.0
PARTITIONS = 4

WINDOWS: dict[str, dict[str, Any]] = {
    "tumbling": {"type": "tumbling", "size_seconds": 10},
    "hopping": {"type": "hopping", "size_seconds": 10, "step_seconds": 5},
    "sliding": {"type": "sliding", "size_seconds": 3},
    "session": {"type": "session", "gap_seconds": 2},
}

AGGREGATES = {
    "n": "count(*)",
    "clicks": "count(*) FILTER (WHERE page <> 'home')",
    "total": "sum(v)",
    "low": "min(v)",
    "mean": "avg(v)",
    "pages": "count(DISTINCT page)",
}


def window_config(
    tmp_path: Path,
    bootstrap: str,
    suffix: str,
    kinds: list[str],
    *,
    sinks: bool = False,
    extra: dict[str, str] | None = None,
    **settings: Any,
) -> tuple[Path, FirelakeConfig]:
    """A config with source ``clicks-<suffix>`` and one window per kind (each with its own
    output and late stream), written, loaded and its topics created. ``sinks`` adds a sink
    (table = stream name with ``_``) for every stream; ``extra`` maps more window names to
    the kind they copy (windows no agent runs, for backfill)."""
    streams: dict[str, Any] = {f"clicks-{suffix}": {"partitions": PARTITIONS, "schema": "click"}}
    windows: dict[str, Any] = {}
    for kind in kinds:
        streams[f"{kind}-out-{suffix}"] = {"partitions": 2}
        streams[f"{kind}-late-{suffix}"] = {"partitions": 1}
        windows[f"{kind}-{suffix}"] = {
            "source": f"clicks-{suffix}",
            "output": f"{kind}-out-{suffix}",
            "late": f"{kind}-late-{suffix}",
            "key": ["user"],
            "aggregates": AGGREGATES,
            "grace_seconds": GRACE,
            "idle_timeout_seconds": 0,
            "batch_size": 2000,
            "batch_window_seconds": 0.2,
            **WINDOWS[kind],
            **settings,
        }
    for name, kind in (extra or {}).items():
        streams[f"{name}-out-{suffix}"] = {"partitions": 2}
        streams[f"{name}-late-{suffix}"] = {"partitions": 1}
        windows[f"{name}-{suffix}"] = dict(
            windows[f"{kind}-{suffix}"],
            output=f"{name}-out-{suffix}",
            late=f"{name}-late-{suffix}",
        )
    sink_tables = {
        f"sink-{stream}": {
            "stream": stream,
            "table": stream.replace("-", "_"),
            "max_seconds": 1,
        }
        for stream in streams
    }
    data = {
        "kafka": {"bootstrap": bootstrap},
        "lake": {"root": str(tmp_path / "lake")},
        "schemas": {
            "click": {
                "time_field": "t",
                "fields": {
                    "event_id": "string",
                    "user": "string",
                    "page": "string",
                    "t": "timestamp",
                    "v": "int",
                },
            }
        },
        "streams": streams,
        "windows": windows,
        **({"sinks": sink_tables} if sinks else {}),
    }
    path = write_config(tmp_path / "firelake.toml", data)
    config = load_config(path, environ={})
    ensure_topics(config, bootstrap)
    return path, config


@dataclass
class Stream:
    """Events per partition in the order they are sent, and the held-back ones."""

    partitions: dict[int, list[dict[str, Any]]]
    held_back: set[str]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for p in sorted(self.partitions) for e in self.partitions[p]]


def _at(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat(timespec="microseconds")[:-6] + "Z"


def make_stream(per_partition: int, seed: int = 1, users: int = 20) -> Stream:
    """``per_partition`` events on each partition over ~per_partition/20 seconds, shuffled
    within the grace period, one in 500 held back by 4 times the grace (late); then one far-future
    event per partition that closes every window before it."""
    rng = random.Random(seed)
    partitions: dict[int, list[dict[str, Any]]] = {}
    held: set[str] = set()
    for partition in range(PARTITIONS):
        items = []
        for i in range(per_partition):
            t = i * 0.05 + rng.uniform(0, 0.05)
            items.append(
                {
                    "event_id": f"e{partition}-{i}",
                    "user": f"u{rng.randrange(users)}",
                    "page": rng.choice(("home", "news", "sport", "tv")),
                    "t": t,
                    "v": rng.randrange(1000),
                }
            )
        order = sorted(items, key=lambda e: e["t"] + rng.uniform(0, GRACE * 0.9))
        for index in range(250, len(order) - 200, 500):
            event = order.pop(index)
            order.insert(index + int(4 * GRACE / 0.05), event)
            held.add(event["event_id"])
        order.append(
            {
                "event_id": f"end{partition}",
                "user": "zz",
                "page": "home",
                "t": per_partition * 0.05 + 10_000,
                "v": 0,
            }
        )
        partitions[partition] = [dict(e, t=_at(e["t"])) for e in order]
    return Stream(partitions, held)


def send_stream(bootstrap: str, topic: str, stream: Stream, per_message: int = 50) -> None:
    """Each partition's events in order, ``per_message`` per envelope."""
    queues = []
    for partition, events in sorted(stream.partitions.items()):
        queue = []
        for start in range(0, len(events), per_message):
            chunk = events[start : start + per_message]
            value, headers = encode([orjson.dumps(e) for e in chunk])
            queue.append((partition, value, headers, None))
        queues.append(queue)
    # Interleave the partitions, as producers would; each keeps its order.
    messages = [m for round_ in itertools.zip_longest(*queues) for m in round_ if m is not None]
    asyncio.run(produce(bootstrap, topic, messages))


def _us(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * US)


def expected_late(config: FirelakeConfig, window: str, stream: Stream) -> set[tuple[str, str]]:
    """(event id, missed window start) by the partition-order rule, computed here directly."""
    spec = config.windows[window]
    geometry = geometry_of(spec)
    grace = round(spec.grace_seconds * US)
    late: set[tuple[str, str]] = set()
    for events in stream.partitions.values():
        top: int | None = None
        for event in events:
            t = _us(event["t"])
            if top is not None:
                mark = top - grace
                if geometry.type in ("tumbling", "hopping"):
                    for start in geometry.starts(t):
                        if start + geometry.size <= mark:
                            late.add((event["event_id"], format_us(start)))
                elif t + 1 <= mark:
                    start = t if geometry.type == "session" else t - geometry.size
                    late.add((event["event_id"], format_us(start)))
            top = t if top is None else max(top, t)
    return late


def expected_results(
    config: FirelakeConfig, window: str, stream: Stream, late: set[tuple[str, str]]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """DuckDB SQL's answer over the events minus the late ones, by :func:`result_key`,
    without the far-future events' windows."""
    spec = config.windows[window]
    events = [e for e in stream.events if e["user"] != "zz"]
    table = pa.table(
        {
            "event_id": [e["event_id"] for e in events],
            "user": [e["user"] for e in events],
            "page": [e["page"] for e in events],
            "v": [e["v"] for e in events],
            "t": pa.array(
                [datetime.fromisoformat(e["t"]) for e in events], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    late_table = pa.table(
        {
            "event_id": [i for i, _ in late],
            "late_window": [window] * len(late),
            "late_reason": ["window_closed"] * len(late),
            "late_window_start": [s for _, s in late],
        },
        schema=pa.schema(
            [
                ("event_id", pa.string()),
                ("late_window", pa.string()),
                ("late_reason", pa.string()),
                ("late_window_start", pa.string()),
            ]
        ),
    )
    con = duckdb.connect()
    con.register("events", table)
    con.register("late_events", late_table)
    sql = window_sql(
        spec,
        geometry_of(spec),
        "events",
        "t",
        late=late_relation_sql("late_events", window, spec.id_field),
    )
    cursor = con.execute(sql)
    columns = [d[0] for d in cursor.description]
    out = {}
    for values in cursor.fetchall():
        row = dict(zip(columns, values, strict=True))
        row["window_start"] = format_us(row["window_start"])
        row["window_end"] = format_us(row["window_end"])
        out[result_key(row)] = row
    return out


def result_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["window_start"], row["window_end"], row["user"])


def final_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["is_final"] and r["user"] != "zz"]


def read_outputs(
    bootstrap: str,
    topics: dict[str, int],
    deadline: float,
    enough: Callable[[dict[str, list[dict[str, Any]]]], bool],
) -> dict[str, list[dict[str, Any]]]:
    """Every event of the topics as ``read_committed`` readers see them, until ``enough``."""

    def strip(got: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        return {t: [item[1] for item in items] for t, items in got.items()}

    got = asyncio.run(read_records(bootstrap, topics, deadline, lambda g: enough(strip(g))))
    return strip(got)


def start_window(
    tmp_path: Path, config_path: Path, window: str, bootstrap: str, label: str = ""
) -> tuple[subprocess.Popen[bytes], Path]:
    """``python -m agents.window_agent`` as a subprocess logging into tmp_path."""
    log_path = tmp_path / f"window-{window}{label}.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "FIRELAKE_KAFKA_BOOTSTRAP": bootstrap,
        INSTANCE_ENV: f"{window}{label}",
    }
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agents.window_agent",
                "--config",
                str(config_path),
                "--window",
                window,
            ],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc, log_path


def wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()

"""Open windows through the query service, on the real broker: while a window is open its
agent's snapshot answers ``firelake query`` and ``POST /v1/query`` as the view
``<window>_open`` with its current aggregates; once the watermark closes it, it leaves the
view (the next window shows instead)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from firelake.config import load_config
from firelake.testing import unique_suffix
from queries.open_windows import view_name
from queries.service import QueryServerThread
from streams.envelope import encode
from tests.integration.routerkit import produce
from tests.integration.windowkit import BASE, PARTITIONS, start_window, wait, window_config

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[2]


def _at(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat(timespec="microseconds")[:-6] + "Z"


def _send(bootstrap: str, topic: str, events: dict[int, list[dict[str, Any]]]) -> None:
    messages = []
    for partition, chunk in sorted(events.items()):
        value, headers = encode([orjson.dumps(e) for e in chunk])
        messages.append((partition, value, headers, None))
    asyncio.run(produce(bootstrap, topic, messages))


def _click(n: int, user: str, seconds: float, v: int) -> dict[str, Any]:
    return {"event_id": f"e{n}", "user": user, "page": "p", "t": _at(seconds), "v": v}


def _cli_rows(config_path: Path, sql: str) -> list[dict[str, Any]]:
    command = ["-m", "firelake.cli", "query", sql, "--format", "json", "--config"]
    done = subprocess.run(
        [sys.executable, *command, str(config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=config_path.parent,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _http_rows(url: str, sql: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        url + "/v1/query",
        data=json.dumps({"sql": sql}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    names = [c["name"] if isinstance(c, dict) else c for c in body["columns"]]
    return [r if isinstance(r, dict) else dict(zip(names, r, strict=True)) for r in body["rows"]]


def test_open_windows_are_a_view_while_open_and_leave_it_when_closed(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    suffix = unique_suffix()
    path, config = window_config(tmp_path, kafka_bootstrap, suffix, ["tumbling"])
    window = f"tumbling-{suffix}"
    view = view_name(window)
    source = f"clicks-{suffix}"
    proc, log = start_window(tmp_path, path, window, kafka_bootstrap)
    try:
        # Window [0 s, 10 s): a three events (v 1, 2, 3), b one (v 10); nothing closes it.
        _send(
            kafka_bootstrap,
            source,
            {
                0: [_click(1, "a", 1, 1), _click(2, "a", 2, 2)],
                1: [_click(3, "a", 3, 3), _click(4, "b", 4, 10)],
            },
        )
        sql = f"SELECT user, n, total, mean, event_count, window_start FROM {view} ORDER BY user"
        lake = Path(config.lake_root)
        snapshot = lake / "_firelake" / "windows" / window / "open.parquet"

        def rows_now() -> list[dict[str, Any]]:
            if not snapshot.exists():
                return []
            return _cli_rows(path, sql)

        assert wait(lambda: [r["event_count"] for r in rows_now()] == [3, 1], 90), (
            rows_now(),
            log.read_text()[-3000:],
        )
        rows = rows_now()
        assert [(r["user"], r["n"], r["total"], r["mean"]) for r in rows] == [
            ("a", 3, 6, 2.0),
            ("b", 1, 10, 10.0),
        ]
        opened = rows[0]["window_start"]
        served = load_config(path, environ={})
        with QueryServerThread(served, port=0) as server:
            http = _http_rows(server.url, sql)
            assert [(r["user"], r["n"], r["total"], r["event_count"]) for r in http] == [
                ("a", 3, 6, 3),
                ("b", 1, 10, 1),
            ]
            # Event time 30 s on every partition: the watermark (30 - grace) passes 10 s.
            _send(
                kafka_bootstrap,
                source,
                {p: [_click(100 + p, "c", 30, 1)] for p in range(PARTITIONS)},
            )

            def closed() -> bool:
                found = _http_rows(server.url, f"SELECT user, window_start FROM {view}")
                return bool(found) and all(r["user"] == "c" for r in found)

            assert wait(closed, 90), (
                _http_rows(server.url, f"SELECT * FROM {view}"),
                log.read_text()[-3000:],
            )
            now = _http_rows(server.url, f"SELECT window_start, event_count FROM {view}")
            assert now and all(r["window_start"] != opened for r in now)
            assert sum(r["event_count"] for r in now) == PARTITIONS
        assert [r["user"] for r in _cli_rows(path, f"SELECT user FROM {view}")] == ["c"] * 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)

"""Windowed aggregation: Firelake vs Quix Streams vs Faust on the same events (issue 10).

``python -m bench.windows [--events N] [--faust-events M]``: a tumbling 60 s count per key
over 10 000 keys, event time 1 ms apart (so N events span N/60 000 windows). The same
events are written twice to a 4-partition stream, in each framework's own model:

- as Firelake envelopes (500 events per message, as the ingest and routers write them), read
  by a Firelake window agent (default transactional engine, one worker process);
- one event per message (key = the window key, Kafka timestamp = event time), read by a
  Quix Streams app (``tumbling_window(60 s).count().final()``, event time from the value,
  its default at-least-once guarantee, RocksDB state) and by a Faust app (a tumbling table
  ``Table(...).tumbling(60)``, ``relative_to_stream``, ``table[key] += 1``).

Each runs as its own process and is timed from its group's first committed offset to the
commit of the last offset, by polling the group's committed offsets (group join and
start-up excluded; the events before the first commit are not counted). Faust handles one
message at a time at a few thousand per second, so it gets ``--faust-events`` events.
For Firelake the run also reports the state (open entries and the changelog's records and
bytes after compaction-free writes) and the restore time after a SIGKILL (from the
restarted agent's log).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from bench.harness import BenchResult, broker, render_markdown, scratch_dir
from firelake.config import load_config
from firelake.testing import unique_suffix, write_config
from streams.envelope import encode
from streams.partitioning import partition_for_key
from streams.topics import ensure_topics

__all__ = ["main", "run_windows_bench"]

PARTITIONS = 4
KEYS = 10_000
BASE_MS = 1_796_025_600_000  # 2026-12-01T00:00:00Z
REPO = Path(__file__).resolve().parents[1]


def _event(n: int) -> tuple[str, dict[str, Any]]:
    key = f"k{(n * 7919) % KEYS}"
    return key, {"key": key, "t_ms": BASE_MS + n, "event_time": _iso(BASE_MS + n)}


def _iso(ms: int) -> str:
    seconds, milli = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{milli:03d}Z"


async def _fill(bootstrap: str, envelopes: str, singles: str | None, events: int) -> dict[int, int]:
    """Envelopes of 500 events (and one message per event into ``singles``); the number of
    events per partition."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    groups: dict[int, tuple[list[bytes], list[str]]] = {}
    try:
        for n in range(events):
            key, event = _event(n)
            line = orjson.dumps(event)
            partition = partition_for_key(key, PARTITIONS)
            lines, keys = groups.setdefault(partition, ([], []))
            lines.append(line)
            keys.append(key)
            if singles is not None:
                await producer.send(
                    singles, line, key=key.encode(), partition=partition, timestamp_ms=event["t_ms"]
                )
        for partition, (lines, keys) in groups.items():
            for start in range(0, len(lines), 500):
                value, headers = encode(lines[start : start + 500], keys[start : start + 500])
                await producer.send(envelopes, value, partition=partition, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()
    return {p: len(lines) for p, (lines, _) in groups.items()}


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (and its threads) used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _time_group(
    bootstrap: str,
    group: str,
    topic: str,
    events_at: Callable[[dict[int, int]], int],
    proc: subprocess.Popen[bytes],
    timeout: float = 600,
    cpu: list[float] | None = None,
) -> tuple[int, float]:
    """(events, seconds) from the group's first commit to its last, by polling; the
    process's CPU seconds over the same span are appended to ``cpu``."""
    ends = asyncio.run(_ends(bootstrap, topic))
    total = events_at(ends)
    first: tuple[float, int, float] | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{group} exited with {proc.returncode}")
        committed = asyncio.run(_committed(bootstrap, group, topic))
        now = time.perf_counter()
        used = cpu_seconds(proc.pid)
        done = events_at({p: committed.get(p, 0) for p in ends})
        if first is None and done > 0:
            first = (now, done, used)
        if done >= total and first is not None:
            if cpu is not None:
                cpu.append(used - first[2])
            return total - first[1], now - first[0]
        time.sleep(0.05)
    raise RuntimeError(f"{group} did not finish within {timeout}s")


def _spawn(
    args: list[str], log: Path, env: dict[str, str] | None = None, tree: Path = REPO
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---------------------------------------------------------------- the competitors' apps


def quix_app(bootstrap: str, topic: str, group: str, state_dir: str) -> None:
    """Quix Streams' documented tumbling window: count per key, final results."""
    from datetime import timedelta

    from quixstreams import Application

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        state_dir=state_dir,
        loglevel="WARNING",
    )
    source = app.topic(
        topic,
        key_deserializer="str",
        value_deserializer="json",
        timestamp_extractor=lambda value, headers, ts, kind: value["t_ms"],
    )
    output = app.topic(f"{topic}-quix-out", value_serializer="json")
    sdf = app.dataframe(source)
    sdf = sdf.tumbling_window(duration_ms=timedelta(seconds=60)).count().final()
    sdf.to_topic(output)
    app.run()


def faust_app(bootstrap: str, topic: str, group: str, datadir: str) -> None:
    """Faust's tumbling table: ``table[key] += 1`` per event, windowed by event time."""
    from datetime import timedelta

    import faust

    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        topic_partitions=PARTITIONS,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="json")
    counts = app.Table(f"counts-{group}", default=int, partitions=PARTITIONS).tumbling(
        60, expires=timedelta(minutes=10)
    )

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for key, _value in stream.items():
            counts[key] += 1

    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()


# ---------------------------------------------------------------- the runs


def _firelake(
    bootstrap: str, folder: Path, suffix: str, events: int, tree: Path = REPO, label: str = ""
) -> list[BenchResult]:
    """The Firelake window agent, run from ``tree`` (this checkout, or another version's
    for a before/after comparison in one run)."""
    source = f"bench-win-{suffix}"
    name = f"per-key-{suffix}"
    data = {
        "kafka": {"bootstrap": bootstrap},
        "lake": {"root": str(folder / "lake")},
        "streams": {
            source: {"partitions": PARTITIONS},
            f"{source}-out": {"partitions": PARTITIONS},
            f"{source}-late": {"partitions": 1},
        },
        "windows": {
            name: {
                "source": source,
                "key": ["key"],
                "type": "tumbling",
                "size_seconds": 60,
                "time_field": "event_time",
                "grace_seconds": 5,
                "batch_size": 25_000,
                "aggregates": {"n": "count(*)"},
                "output": f"{source}-out",
                "late": f"{source}-late",
            }
        },
    }
    path = write_config(folder / "firelake.toml", data)
    config = load_config(path, environ={})
    ensure_topics(config, bootstrap)
    counts = asyncio.run(_fill(bootstrap, source, None, events))

    def events_at(offsets: dict[int, int]) -> int:
        # Envelopes hold 500 events, the last of a partition fewer.
        return sum(min(offsets[p] * 500, counts.get(p, 0)) for p in offsets)

    log = folder / f"firelake-{suffix}.log"
    args = ["-m", "agents.window_agent", "--config", str(path), "--window", name]
    env = {"FIRELAKE_KAFKA_BOOTSTRAP": bootstrap, "FIRELAKE_WINDOW_INSTANCE_ID": f"bench-{name}"}
    proc = _spawn(args, log, env, tree)
    cpu: list[float] = []
    try:
        counted, seconds = _time_group(
            bootstrap, f"firelake-window-{name}", source, events_at, proc, cpu=cpu
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    # Restore after a crash: the restarted agent reads the changelog and logs how long.
    restarted = _spawn(args, log, env, tree)
    try:
        deadline = time.monotonic() + 120
        found = None
        while time.monotonic() < deadline and found is None:
            found = re.findall(
                r"restored (\d+) entries from (\d+) changelog records in ([\d.]+)s",
                log.read_text(),
            )[1:]
            found = found[0] if found else None
            time.sleep(0.2)
    finally:
        _stop(restarted)
    entries, records, restore = found if found else ("?", "?", "?")
    return [
        BenchResult(
            f"Firelake window agent (transactional, envelopes of 500){label}",
            counted,
            seconds,
            {
                "agent CPU per event": f"{cpu[0] / max(counted, 1) * 1e6:.2f} µs",
                "open entries after the run": entries,
                "changelog records read at restore": records,
                "restore after SIGKILL": f"{restore} s",
            },
        )
    ]


def _single(
    label: str,
    short: str,
    module_function: str,
    bootstrap: str,
    folder: Path,
    suffix: str,
    events: int,
    group: str,
) -> BenchResult:
    topic = f"bench-win1-{short}-{suffix}"
    envelopes = f"bench-win1-{short}-{suffix}-env"
    admin_config = {
        "streams": {topic: {"partitions": PARTITIONS}, envelopes: {"partitions": PARTITIONS}}
    }
    config = load_config(write_config(folder / f"{short}.toml", admin_config), environ={})
    ensure_topics(config, bootstrap)
    asyncio.run(_fill(bootstrap, envelopes, topic, events))
    state = folder / f"{short}-state"
    state.mkdir()
    code = (
        f"import bench.windows as b; b.{module_function}({bootstrap!r}, {topic!r}, "
        f"{group!r}, {str(state)!r})"
    )
    proc = _spawn(["-c", code], folder / f"{short}.log")
    try:
        counted, seconds = _time_group(bootstrap, group, topic, lambda o: sum(o.values()), proc)
    finally:
        _stop(proc)
    size = sum(f.stat().st_size for f in state.rglob("*") if f.is_file())
    return BenchResult(label, counted, seconds, {"local state on disk": f"{size / 1e6:.1f} MB"})


def run_windows_bench(
    bootstrap: str,
    events: int,
    faust_events: int = 10_000,
    before: Path | None = None,
    rounds: int = 1,
    others: bool = True,
) -> list[BenchResult]:
    """Firelake, Quix Streams and Faust, one after the other, on the same broker; with
    ``before`` (another checkout) its agent too, alternating with this one ``rounds``
    times."""
    suffix = unique_suffix()
    results: list[BenchResult] = []
    with scratch_dir("firelake-bench-windows-") as folder:
        topics: list[str] = []
        try:
            for round_ in range(rounds):
                if before is not None:
                    results.extend(
                        _firelake(
                            bootstrap, folder, f"{suffix}b{round_}", events, before, " BEFORE"
                        )
                    )
                results.extend(_firelake(bootstrap, folder, f"{suffix}a{round_}", events))
            if not others:
                return results
            results.append(
                _single(
                    "Quix Streams tumbling_window().count() (one event per message)",
                    "quix",
                    "quix_app",
                    bootstrap,
                    folder,
                    suffix + "q",
                    events,
                    f"bench-quix-{suffix}",
                )
            )
            results.append(
                _single(
                    "Faust tumbling table (one event per message)",
                    "faust",
                    "faust_app",
                    bootstrap,
                    folder,
                    suffix + "f",
                    faust_events,
                    f"bench-faust-{suffix}",
                )
            )
        finally:
            for log in folder.glob("*.log"):
                text = log.read_text(errors="replace")
                if "Traceback" in text:
                    print(f"--- {log.name}\n{text[-2000:]}", file=sys.stderr)
            del topics
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.windows", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events per framework")
    parser.add_argument("--faust-events", type=int, default=10_000, help="events for Faust")
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout (e.g. `git archive <commit> | tar -x -C DIR`) whose window "
        "agent runs too, alternating with this one",
    )
    parser.add_argument("--rounds", type=int, default=1, help="Firelake runs (each version)")
    parser.add_argument("--firelake-only", action="store_true", help="skip Quix Streams and Faust")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    with broker() as bootstrap:
        results = run_windows_bench(
            bootstrap,
            args.events,
            args.faust_events,
            args.before,
            args.rounds,
            not args.firelake_only,
        )
    print(f"load average after: {os.getloadavg()}", file=sys.stderr)
    quix = [r.name for r in results if r.name.startswith("Quix")]
    title = "Tumbling 60 s count per key, 10 000 keys (issue 10)"
    print(render_markdown(title, results, quix[0] if quix else results[0].name))
    print(json.dumps([{r.name: r.notes} for r in results], indent=1))


if __name__ == "__main__":
    main()

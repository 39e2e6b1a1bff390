"""Sink benchmark (issue 5): the Parquet sink vs the minimal loop, and freshness.

One run, the same events for both paths: ``--events`` playback events (router-normalised,
500 a message, like the router's envelopes) on a 4-partition topic, then

- **minimal loop** — aiokafka ``getmany`` → join the values → ``pyarrow.json.read_json``
  → ``pyarrow.parquet.write_table`` per poll: no schema, no bookkeeping, no guarantees;
- **sink** — :class:`sinks.sink.ParquetSink` with the shipped playback sink's settings
  (explicit schema, hour folders, intent/state files, fsync, Kafka commit).

Each path is timed from its first polled records to its last file, so group joins do not
count. Then **freshness**: events are produced at a steady rate for 20 s while the sink runs
with ``max_seconds = 5``; each message's events carry its batch id, and a query loop over
the lake (DuckDB, 10 times a second) records when each batch becomes visible. Reported:
p50 and p99 of produce → visible (target: p99 ≤ interval + 2 s).

``python -m bench sink [--events N]`` prints it as Markdown.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from bench.harness import BenchResult, minimal_loop, scratch_dir
from firelake.config import FirelakeConfig
from firelake.testing import example_config, example_data, sample_event, unique_suffix
from queries.engine import QueryEngine
from sinks.progress import ProgressStore
from sinks.sink import ParquetSink
from streams.envelope import encode
from streams.topics import delete_topics, ensure_topics

__all__ = ["run_sink_bench"]

PARTITIONS = 4
PER_MESSAGE = 500
FRESHNESS_SECONDS = 20.0
FRESHNESS_RATE = 5_000  # events/s
INTERVAL = 5.0


def _line(n: int, batch: int = 0) -> bytes:
    event = sample_event(n, "start")
    # A live stream's pace: 100 events a second of event time (200 000 span 33 minutes).
    event["event_time"] = f"2026-11-29T08:{n // 6000 % 60:02d}:{n // 100 % 60:02d}.000000Z"
    event["receive_time"] = "2026-11-29T10:00:00.000000Z"
    event["content_id"] = f"b-{batch}"
    return orjson.dumps(event)


async def _produce(bootstrap: str, topic: str, events: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    try:
        for index, first in enumerate(range(0, events, PER_MESSAGE)):
            lines = [_line(n) for n in range(first, min(first + PER_MESSAGE, events))]
            value, headers = encode(lines)
            await producer.send(topic, value, partition=index % PARTITIONS, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


def _config(bootstrap: str, lake: Path, **sink: object) -> FirelakeConfig:
    data = example_data()
    data["sinks"] = {"playback": {"stream": "playback-events", "table": "playback", **sink}}
    data["streams"]["playback-events"]["partitions"] = PARTITIONS
    return example_config(bootstrap, lake, unique_suffix(), data)


async def _sink_path(config: FirelakeConfig, events: int) -> BenchResult:
    (name,) = config.sinks
    topic = config.sinks[name].stream
    sink = ParquetSink(config, name)
    store = ProgressStore(config.lake_root, name)
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    started = 0.0
    try:
        deadline = time.monotonic() + 300
        while sink.stats.rows < events and time.monotonic() < deadline:
            if not started and sink.stats.messages:
                started = time.perf_counter()
            await asyncio.sleep(0.005)
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    committed = sum(
        s.last_offset + 1 for p in range(PARTITIONS) if (s := store.state(topic, p)) is not None
    )
    return BenchResult(
        "Firelake sink (schema, hour folders, exactly-once files)",
        sink.stats.rows,
        seconds,
        {"files": str(sink.stats.files), "messages committed": str(committed)},
    )


async def _freshness(config: FirelakeConfig) -> BenchResult:
    (name,) = config.sinks
    topic = config.sinks[name].stream
    sink = ParquetSink(config, name)
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    await asyncio.sleep(3.0)  # let the group form before the clock starts
    produced: dict[str, float] = {}
    visible: dict[str, float] = {}
    producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap, linger_ms=0)
    await producer.start()

    async def produce() -> None:
        per_message = 100
        period = per_message / FRESHNESS_RATE
        n = batch = 0
        begin = time.monotonic()
        while time.monotonic() - begin < FRESHNESS_SECONDS:
            value, headers = encode([_line(n + i, batch) for i in range(per_message)])
            await producer.send_and_wait(
                topic, value, partition=batch % PARTITIONS, headers=headers
            )
            produced[f"b-{batch}"] = time.monotonic()
            n, batch = n + per_message, batch + 1
            await asyncio.sleep(max(0.0, begin + batch * period - time.monotonic()))

    async def watch() -> None:
        engine = QueryEngine(config.lake_root)
        try:
            deadline = time.monotonic() + FRESHNESS_SECONDS + INTERVAL + 15
            while time.monotonic() < deadline:
                if not engine.tables:
                    engine.refresh()
                if engine.tables:
                    rows = engine.query("SELECT DISTINCT content_id FROM playback", 10**7).rows
                    now = time.monotonic()
                    for (batch,) in rows:
                        visible.setdefault(batch, now)
                if producing.done() and set(produced) <= set(visible):
                    break
                await asyncio.sleep(0.1)
        finally:
            engine.close()

    try:
        producing = asyncio.create_task(produce())
        await asyncio.gather(producing, watch())
    finally:
        await producer.stop()
        stop.set()
        await asyncio.wait_for(task, 60)
    latencies = sorted(visible[b] - t for b, t in produced.items() if b in visible)
    missing = len(produced) - len(latencies)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return BenchResult(
        f"freshness at max_seconds = {INTERVAL:.0f} ({FRESHNESS_RATE} events/s)",
        len(latencies) * 100,
        FRESHNESS_SECONDS,
        {
            "p50 s": f"{p50:.2f}",
            "p99 s": f"{p99:.2f}",
            "target p99 s": f"{INTERVAL + 2:.0f}",
            "never visible": str(missing),
        },
    )


def run_sink_bench(bootstrap: str, events: int) -> list[BenchResult]:
    """[sink, minimal loop, freshness] on the same events."""
    with scratch_dir("firelake-bench-sink-") as root:
        # Flushed by size (10 000 events a partition buffer), as under load.
        config = _config(bootstrap, root / "lake", max_events=10_000, max_seconds=INTERVAL)
        ensure_topics(config, bootstrap)
        (name,) = config.sinks
        topic = config.sinks[name].stream
        try:
            asyncio.run(_produce(bootstrap, topic, events))
            (root / "minimal").mkdir()
            minimal = asyncio.run(
                minimal_loop(bootstrap, topic, events, root / "minimal", per_partition=True)
            )
            sink = asyncio.run(_sink_path(config, events))
        finally:
            delete_topics(bootstrap, config.streams)
        fresh_config = _config(bootstrap, root / "fresh", max_seconds=INTERVAL)
        ensure_topics(fresh_config, bootstrap)
        try:
            fresh = asyncio.run(_freshness(fresh_config))
        finally:
            delete_topics(bootstrap, fresh_config.streams)
    return [sink, minimal, fresh]

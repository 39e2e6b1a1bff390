"""Integration: the Parquet sink against the real broker.

Produces envelopes of sample events (router-normalized: ISO-8601 UTC timestamps with
microseconds) to the typed streams of a uniquely named example configuration, runs the
sink in-process, and checks through DuckDB that every event is in the lake exactly once,
with its values, in the right hour folders — and that a restarted sink resumes from the
lake without duplicates, that stopping flushes, and that bad lines land in the error prefix.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from firelake.config import FirelakeConfig
from firelake.testing import example_config, sample_event
from sinks.paths import state_key
from sinks.sink import ParquetSink, run_sink, run_sinks
from streams.envelope import encode
from streams.partitioning import partition_for_key
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.kafka

WAIT_SECONDS = 30.0
HIVE = "hive_partitioning=true, hive_types={'dt': DATE, 'hour': INTEGER}"


def normalized(n: int, event_type: str = "start", spacing: int = 1) -> dict[str, Any]:
    """A sample event as the router emits it: timestamps with microseconds, receive time."""
    event = sample_event(n * spacing, event_type)
    event["event_time"] = event["event_time"].replace("Z", ".000000Z")
    event["receive_time"] = "2026-11-29T10:00:00.000000Z"
    return event


async def produce(
    bootstrap: str,
    topic: str,
    partitions: int,
    events: Sequence[dict[str, Any] | bytes],
    per_message: int = 100,
) -> int:
    """Send events as envelopes, each on its key's partition; returns messages sent."""
    by_partition: dict[int, list[tuple[str, bytes]]] = {}
    for event in events:
        if isinstance(event, bytes):
            key, line = "bad", event
        else:
            key, line = str(event["user_id"]), orjson.dumps(event)
        by_partition.setdefault(partition_for_key(key, partitions), []).append((key, line))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        for partition, items in by_partition.items():
            for start in range(0, len(items), per_message):
                chunk = items[start : start + per_message]
                value, headers = encode([line for _, line in chunk], [k for k, _ in chunk], 1, 2)
                await producer.send(
                    topic,
                    value,
                    key=chunk[0][0].encode(),
                    partition=partition,
                    headers=headers,
                )
                sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def lake_query(lake: Path, table: str, sql: str) -> list[tuple]:
    """Run ``sql`` over ``t`` = the table's Parquet files ([] while there are none)."""
    if not any((lake / table).rglob("*.parquet")):
        return []
    source = f"read_parquet('{lake}/{table}/**/*.parquet', {HIVE})"
    return duckdb.sql(sql.replace("FROM t", f"FROM {source}")).fetchall()


def lake_count(lake: Path, table: str) -> int:
    rows = lake_query(lake, table, "SELECT count(*) FROM t")
    return rows[0][0] if rows else 0


async def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


async def with_sink(
    config: FirelakeConfig, name: str, body: Callable[[], Awaitable[None]]
) -> ParquetSink:
    """Run a sink while ``body`` runs, then stop it (bounded) and return it."""
    sink = ParquetSink(config, name)
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        await body()
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_SECONDS)
    return sink


def make_config(bootstrap: str, lake: Path, suffix: str, **sink: Any) -> FirelakeConfig:
    sinks = {
        name: {"stream": f"{name}-events" if name != "dlq" else "dlq", "table": name, **sink}
        for name in ("playback", "page", "dlq")
    }
    return example_config(bootstrap, lake, suffix, sinks=sinks)


@pytest.fixture
def config(kafka_bootstrap: str, lake: Path, suffix: str):
    cfg = make_config(kafka_bootstrap, lake, suffix, max_seconds=1, max_events=700)
    ensure_topics(cfg, kafka_bootstrap)
    yield cfg
    delete_topics(kafka_bootstrap, cfg.streams)


def names(config: FirelakeConfig) -> tuple[str, str]:
    (sink,) = [n for n in config.sinks if n.startswith("playback-")]
    return sink, config.sinks[sink].stream


def test_every_event_lands_once_and_a_restart_resumes_from_the_lake(
    config: FirelakeConfig, kafka_bootstrap: str, lake: Path
) -> None:
    sink_name, topic = names(config)
    first = [normalized(n, spacing=3) for n in range(2_000)]  # 08:00 .. 09:40
    second = [normalized(n, spacing=3) for n in range(2_000, 2_500)]
    bad = b'{"event_id":"evt-bad","event_time":"not a time","user_id":"u"}'

    async def scenario() -> tuple[ParquetSink, ParquetSink]:
        await produce(kafka_bootstrap, topic, 4, [*first[:1000], bad, *first[1000:]])

        async def body() -> None:
            await wait_until(lambda: lake_count(lake, "playback") == 2_000, "2000 rows")
            await wait_until(lambda: any((lake / "_errors").rglob("*.jsonl")), "error file")

        one = await with_sink(config, sink_name, body)
        await produce(kafka_bootstrap, topic, 4, second)

        async def body2() -> None:
            await wait_until(lambda: lake_count(lake, "playback") == 2_500, "2500 rows")

        two = await with_sink(config, sink_name, body2)
        return one, two

    one, two = asyncio.run(scenario())

    rows = lake_query(
        lake,
        "playback",
        "SELECT count(*), count(DISTINCT event_id), sum(position_seconds), min(event_time),"
        " max(event_time), count(DISTINCT hour), count(receive_time) FROM t",
    )
    expected_positions = sum(e["position_seconds"] for e in first + second)
    assert rows == [
        (
            2_500,
            2_500,
            expected_positions,
            datetime(2026, 11, 29, 8, 0, tzinfo=UTC),
            datetime(2026, 11, 29, 10, 4, 57, tzinfo=UTC),
            3,
            2_500,
        )
    ]
    # Every row sits in the folder of its own event hour.
    misplaced = lake_query(
        lake, "playback", "SELECT count(*) FROM t WHERE hour(event_time) <> hour"
    )
    assert misplaced == [(0,)]
    assert two.stats.rows == 500  # the restart re-read nothing the lake already had
    assert one.stats.bad_lines == 1
    (error_file,) = (lake / "_errors" / "playback").rglob("*.jsonl")
    (record,) = [orjson.loads(line) for line in error_file.read_bytes().splitlines()]
    assert base64.b64decode(record["rawData"]) == bad
    assert record["sourceTopic"] == topic and record["attemptsMade"] == 1
    assert "not a time" in record["errorMessage"]
    for partition in range(4):
        assert (lake / state_key(sink_name, topic, partition)).exists()

    async def committed() -> dict[int, int | None]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=f"firelake-sink-{sink_name}"
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(4)]
            ends = await consumer.end_offsets(tps)
            return {tp.partition: (await consumer.committed(tp), ends[tp]) for tp in tps}
        finally:
            await consumer.stop()

    for partition, (offset, end) in asyncio.run(committed()).items():
        assert offset == end, f"partition {partition}: committed {offset}, end {end}"


@pytest.mark.parametrize("how", ["stop", "cancel"])
def test_stopping_flushes_what_is_buffered(
    how: str, kafka_bootstrap: str, lake: Path, suffix: str
) -> None:
    config = make_config(kafka_bootstrap, lake, suffix, max_seconds=900, max_events=1_000_000)
    ensure_topics(config, kafka_bootstrap)
    sink_name, topic = names(config)
    events = [normalized(n) for n in range(300)]

    async def scenario() -> None:
        messages = await produce(kafka_bootstrap, topic, 4, events, per_message=50)
        sink = ParquetSink(config, sink_name)
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        await wait_until(lambda: sink.stats.messages == messages, "all messages consumed")
        assert lake_count(lake, "playback") == 0  # nothing is due before the stop
        if how == "stop":
            stop.set()
            await asyncio.wait_for(task, WAIT_SECONDS)
        else:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, WAIT_SECONDS)

    try:
        asyncio.run(scenario())
        assert lake_query(lake, "playback", "SELECT count(*), count(DISTINCT event_id) FROM t") == [
            (300, 300)
        ]
    finally:
        delete_topics(kafka_bootstrap, config.streams)


def test_all_sinks_run_in_one_process_including_the_dlq(
    config: FirelakeConfig, kafka_bootstrap: str, lake: Path
) -> None:
    playback = [normalized(n) for n in range(200)]
    pages = [normalized(n, "page_view") for n in range(150)]
    dlq_records = [
        {
            "failed_at": f"2026-11-29T08:00:{n:02d}.000000Z",
            "router": "clickstream",
            "error_type": "validation",
            "reason": f"missing field user_id ({n})",
            "source_topic": "raw-events",
            "source_partition": n % 4,
            "source_offset": n,
            "source_index": 0,
            "attempts": 1,
            "payload": '{"event_type":"start"}',
            "payload_base64": None,
            "user_id": f"dlq-{n}",  # only used as the partition key below
        }
        for n in range(30)
    ]
    stream = {s.split("-")[0]: s for s in config.streams}

    async def scenario() -> None:
        await produce(kafka_bootstrap, stream["playback"], 4, playback)
        await produce(kafka_bootstrap, stream["page"], 4, pages)
        await produce(kafka_bootstrap, stream["dlq"], 1, dlq_records)
        stop = asyncio.Event()
        task = asyncio.create_task(run_sinks(config, list(config.sinks), stop))
        try:
            await wait_until(
                lambda: (
                    (
                        lake_count(lake, "playback"),
                        lake_count(lake, "page"),
                        lake_count(lake, "dlq"),
                    )
                    == (200, 150, 30)
                ),
                "all three tables",
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, WAIT_SECONDS)

    asyncio.run(scenario())
    assert lake_query(lake, "page", "SELECT count(DISTINCT event_id), count(page) FROM t") == [
        (150, 150)
    ]
    rows = lake_query(
        lake,
        "dlq",
        "SELECT count(DISTINCT source_offset), min(failed_at), max(reason), sum(attempts) FROM t",
    )
    assert rows == [(30, datetime(2026, 11, 29, 8, tzinfo=UTC), "missing field user_id (9)", 30)]


def test_run_sink_refuses_an_unknown_sink(config: FirelakeConfig) -> None:
    with pytest.raises(ValueError, match="not configured"):
        asyncio.run(run_sink(config, "no-such-sink"))


def test_dynamic_partitions_by_field_then_time_are_written_listed_and_queried(
    kafka_bootstrap: str, lake: Path, suffix: str
) -> None:
    """The issue's Firehose prefix: a field partition first, then dt= and hour=."""
    prefix = (
        "product=!{partitionKeyFromQuery:product}/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/"
    )
    config = make_config(kafka_bootstrap, lake, suffix, max_seconds=1, prefix=prefix)
    ensure_topics(config, kafka_bootstrap)
    sink_name, topic = names(config)
    events = [normalized(n, spacing=7) for n in range(900)]  # 08:00 .. 09:44
    try:

        async def scenario() -> None:
            await produce(kafka_bootstrap, topic, 4, events)

            async def body() -> None:
                await wait_until(lambda: lake_count(lake, "playback") == 900, "900 rows")

            await with_sink(config, sink_name, body)

        asyncio.run(scenario())
    finally:
        delete_topics(kafka_bootstrap, config.streams)

    folders = {
        p.relative_to(lake / "playback").parts[0] for p in (lake / "playback").rglob("*.parquet")
    }
    assert folders == {f"product={p}" for p in {e["product"] for e in events}}
    from queries.catalog import list_tables
    from queries.engine import QueryEngine

    (table,) = [t for t in list_tables(lake) if t.name == "playback"]
    assert table.rows == 900 and not table.problems
    assert {(p.dt, p.hour) for p in table.partitions} == {("2026-11-29", 8), ("2026-11-29", 9)}
    with QueryEngine(lake) as engine:
        rows = engine.query(
            "SELECT product, count(*) FROM playback WHERE hour = 9 GROUP BY 1 ORDER BY 1"
        ).rows
    expected: dict[str, int] = {}
    for e in events:
        if e["event_time"][11:13] == "09":
            expected[e["product"]] = expected.get(e["product"], 0) + 1
    assert [tuple(r) for r in rows] == sorted(expected.items())


def test_a_recovery_failure_at_assignment_ends_the_sink(
    config: FirelakeConfig, kafka_bootstrap: str, lake: Path
) -> None:
    # aiokafka only logs what a rebalance listener raises: before, the sink went on reading
    # partition 0 from the group's offset, unrecovered and unfenced. A damaged state file
    # (not retriable) must end the sink with that error instead.
    from sinks.progress import ProgressError

    sink_name, topic = names(config)
    damaged = lake / state_key(sink_name, topic, 0)
    damaged.parent.mkdir(parents=True, exist_ok=True)
    damaged.write_bytes(b"not json")

    async def scenario() -> None:
        await produce(kafka_bootstrap, topic, 4, [normalized(n) for n in range(100)])
        sink = ParquetSink(config, sink_name)
        with pytest.raises(ProgressError, match="not valid JSON"):
            await asyncio.wait_for(sink.run(asyncio.Event()), WAIT_SECONDS)

    asyncio.run(scenario())
    assert lake_count(lake, "playback") == 0


def test_a_group_behind_the_lake_is_brought_up_to_it_at_assignment(
    config: FirelakeConfig, kafka_bootstrap: str, lake: Path
) -> None:
    # A flush whose offset commit is lost (a rebalance at that moment) leaves the group
    # behind the lake. The lake's progress is the truth, but lag — `firelake status`, a
    # replay case's quiescence — reads the group: with nothing new to flush, a sink that
    # resumed from the lake must still bring the group's offsets up to it.
    sink_name, topic = names(config)
    group = f"firelake-sink-{sink_name}"
    tps = [TopicPartition(topic, p) for p in range(4)]

    async def offsets() -> tuple[dict[int, int | None], dict[int, int]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(tps)
            committed = {tp.partition: await consumer.committed(tp) for tp in tps}
            return committed, {tp.partition: ends[tp] for tp in tps}
        finally:
            await consumer.stop()

    async def rewind() -> None:
        # The sink left the group: an outside commit (no generation) is allowed again.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.commit({tp: 0 for tp in tps})
        finally:
            await consumer.stop()

    async def scenario() -> ParquetSink:
        await produce(kafka_bootstrap, topic, 4, [normalized(n) for n in range(1_000)])

        async def flushed() -> None:
            await wait_until(lambda: lake_count(lake, "playback") == 1_000, "1000 rows")

        await with_sink(config, sink_name, flushed)
        await rewind()
        assert set((await offsets())[0].values()) <= {0}

        async def caught_up() -> None:
            deadline = time.monotonic() + WAIT_SECONDS
            while True:
                committed, ends = await offsets()
                if committed == ends:
                    return
                assert time.monotonic() < deadline, f"committed {committed}, ends {ends}"
                await asyncio.sleep(0.3)

        return await with_sink(config, sink_name, caught_up)

    again = asyncio.run(scenario())
    assert again.stats.rows == 0  # nothing re-read: the lake had it all
    assert lake_count(lake, "playback") == 1_000

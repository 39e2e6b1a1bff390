"""A sink's ``starting_position`` on the real broker: where a partition the destination
holds no progress for starts.

``LATEST`` skips what the stream held before the sink started, and a sink restarted
before its first flush resumes where it first started (the group offset it committed),
not at the end again. ``AT_TIMESTAMP`` starts at the first record Kafka stamped at or
after the time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from firelake.config import FirelakeConfig
from streams.topics import delete_topics, ensure_topics
from tests.integration.test_sink import (
    lake_count,
    lake_query,
    make_config,
    normalized,
    produce,
    wait_until,
    with_sink,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 4


def sink_named(config: FirelakeConfig, prefix: str) -> tuple[str, str]:
    """(sink name, stream) of the example's sink whose name starts with ``prefix``."""
    (name,) = [n for n in config.sinks if n.startswith(f"{prefix}-")]
    return name, config.sinks[name].stream


async def committed(bootstrap: str, sink: str, topic: str) -> dict[int, int | None]:
    """The sink group's committed offset of every partition (None: none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"firelake-sink-{sink}")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


def ids(lake: Path, table: str) -> list[str]:
    return sorted(row[0] for row in lake_query(lake, table, "SELECT event_id FROM t"))


def test_latest_skips_what_was_there_and_a_restart_before_the_first_flush_skips_nothing(
    kafka_bootstrap: str, lake: Path, suffix: str
) -> None:
    config = make_config(kafka_bootstrap, lake, suffix, max_seconds=1, starting_position="LATEST")
    ensure_topics(config, kafka_bootstrap)
    playback, playback_topic = sink_named(config, "playback")
    page, page_topic = sink_named(config, "page")
    old = [normalized(n) for n in range(300)]
    new = [normalized(n) for n in range(300, 450)]
    old_pages = [normalized(n, "page_view") for n in range(300)]
    new_pages = [normalized(n, "page_view") for n in range(300, 400)]

    async def started(sink: str, topic: str) -> None:
        async def check() -> bool:
            offsets = await committed(kafka_bootstrap, sink, topic)
            return all(offset is not None for offset in offsets.values())

        deadline = time.monotonic() + 30
        while not await check():
            assert time.monotonic() < deadline, f"sink {sink} never committed its start"
            await asyncio.sleep(0.2)

    async def scenario() -> None:
        await produce(kafka_bootstrap, playback_topic, PARTITIONS, old)
        await produce(kafka_bootstrap, page_topic, PARTITIONS, old_pages)

        async def latest() -> None:
            await started(playback, playback_topic)
            await produce(kafka_bootstrap, playback_topic, PARTITIONS, new)
            await wait_until(lambda: lake_count(lake, "playback") >= len(new), "new rows")

        await with_sink(config, playback, latest)

        # Started and stopped before any flush: the destination holds no progress.
        await with_sink(config, page, lambda: started(page, page_topic))
        assert lake_count(lake, "page") == 0
        await produce(kafka_bootstrap, page_topic, PARTITIONS, new_pages)

        async def restarted() -> None:
            await wait_until(lambda: lake_count(lake, "page") >= len(new_pages), "new pages")

        await with_sink(config, page, restarted)

    try:
        asyncio.run(scenario())
        assert ids(lake, "playback") == sorted(e["event_id"] for e in new)
        assert ids(lake, "page") == sorted(e["event_id"] for e in new_pages)
    finally:
        delete_topics(kafka_bootstrap, config.streams)


def test_at_timestamp_starts_at_the_first_record_at_or_after_the_time(
    kafka_bootstrap: str, lake: Path, suffix: str
) -> None:
    config = make_config(kafka_bootstrap, lake, suffix, max_seconds=1)
    ensure_topics(config, kafka_bootstrap)
    playback, topic = sink_named(config, "playback")
    before = [normalized(n) for n in range(200)]
    after = [normalized(n) for n in range(200, 320)]

    async def scenario() -> None:
        await produce(kafka_bootstrap, topic, PARTITIONS, before)
        await asyncio.sleep(0.5)
        moment = datetime.now(UTC)
        await asyncio.sleep(0.5)
        await produce(kafka_bootstrap, topic, PARTITIONS, after)
        stamped = make_config(
            kafka_bootstrap,
            lake,
            suffix,
            max_seconds=1,
            starting_position="AT_TIMESTAMP",
            starting_timestamp=moment.isoformat(),
        )

        async def body() -> None:
            await wait_until(lambda: lake_count(lake, "playback") >= len(after), "rows")
            await asyncio.sleep(1.5)  # a flush of anything older would land by now

        await with_sink(stamped, playback, body)

    try:
        asyncio.run(scenario())
        assert ids(lake, "playback") == sorted(e["event_id"] for e in after)
    finally:
        delete_topics(kafka_bootstrap, config.streams)

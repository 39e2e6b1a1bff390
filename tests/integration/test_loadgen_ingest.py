"""The load generator against the real ingest service and the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from api.server import IngestServer
from firelake.config import FirelakeConfig
from firelake.testing import example_config
from streams import envelope
from streams.loadgen import SendReport, send
from streams.partitioning import partition_for_key
from streams.topics import delete_topics

pytestmark = pytest.mark.kafka


@pytest.fixture
def config(kafka_bootstrap: str, lake: Path, suffix: str) -> Iterator[FirelakeConfig]:
    """The example configuration with this test's topics, deleted afterwards."""
    cfg = example_config(kafka_bootstrap, lake, suffix, ingest={"port": 0})
    yield cfg
    delete_topics(kafka_bootstrap, list(cfg.streams))


async def events_on(bootstrap: str, topic: str, partitions: int, count: int) -> list[tuple]:
    """(partition, key, event line) of the first ``count`` events on a topic, within 15 s."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        found: list[tuple] = []
        deadline = time.monotonic() + 15
        while len(found) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                for message in batch:
                    env = envelope.decode(message.value, message.headers, message.key)
                    for index, line in enumerate(env.lines):
                        found.append((message.partition, env.key_at(index), line))
        return found
    finally:
        await consumer.stop()


def test_send_lands_every_accepted_event_on_the_raw_stream(config: FirelakeConfig) -> None:
    raw = next(iter(config.routers.values())).source
    partitions = config.streams[raw].partitions

    async def main() -> tuple[SendReport, list[tuple]]:
        async with IngestServer(config, port=0) as server:
            report = await send(
                server.url, raw, rate=5_000, count=1_500, duration=20,
                batch_size=250, concurrency=4, invalid_ratio=0.1, seed=42,
            )  # fmt: skip
        found = await events_on(config.kafka.bootstrap, raw, partitions, report.accepted)
        return report, found

    report, found = asyncio.run(asyncio.wait_for(main(), 60))

    assert report.sent == 1_500
    assert report.accepted == 1_500, str(report)
    assert report.failed == report.rejected_requests == 0
    assert 0 < report.invalid < 1_500
    assert len(found) == 1_500
    users = 0
    for partition, key, line in found:
        # Partition key = user id, placed by the Kinesis MD5 hash ranges.
        assert partition == partition_for_key(key, partitions)
        event = orjson.loads(line)
        if isinstance(event, dict) and "user_id" in event:
            assert event["user_id"] == key
            users += 1
    assert users > 1_200
    ids = [e.get("event_id") for _, _, line in found if isinstance(e := orjson.loads(line), dict)]
    ids = [i for i in ids if i is not None]
    assert len(ids) > 1_200 and len(set(ids)) == len(ids)


def test_send_to_an_unknown_stream_is_refused_per_request(config: FirelakeConfig) -> None:
    async def main() -> SendReport:
        async with IngestServer(config, port=0) as server:
            return await send(server.url, "no-such-stream", rate=1_000, count=200, duration=10)

    report = asyncio.run(asyncio.wait_for(main(), 60))

    assert report.sent == report.rejected_events == 200
    assert report.accepted == 0
    assert report.rejected_requests == report.requests == 2
    assert report.samples and "no-such-stream" in report.samples[0]

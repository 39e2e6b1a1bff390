"""Integration: the raw archive (Firehose S3 backup) and `firelake replay --from-archive`.

A sink with ``archive = true`` keeps every raw event — good and bad — as gzip JSON lines
(entries: the event with its key, place and time) next to its Parquet files; ``firelake
replay --from-archive <table> --into <stream>`` sends them into another stream, where they
arrive once each, in envelopes."""

from __future__ import annotations

import asyncio
import gzip
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from firelake.cli import main as cli
from firelake.testing import sample_event
from sinks.archive import decode_entry
from sinks.testing import playback_sink, sink_until_flushed
from streams.envelope import decode, encode
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.kafka

WAIT_SECONDS = 30.0
EVENTS = 1_200
BAD = b'{"event_id":"evt-bad","event_time":"never"}'


async def _produce(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for first in range(0, EVENTS, 100):
            lines = [orjson.dumps(sample_event(n, "start")) for n in range(first, first + 100)]
            if first == 0:
                lines.append(BAD)
            value, headers = encode(lines)
            await producer.send(topic, value, partition=(first // 100) % 4, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    lines: list[bytes] = []
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while len(lines) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    lines += decode(record.value, record.headers).lines
    finally:
        await consumer.stop()
    return lines


def test_the_archive_keeps_every_raw_event_and_replays_into_a_stream(
    kafka_bootstrap: str, tmp_path: Path, suffix: str
) -> None:
    lake = tmp_path / "lake"
    path, config = playback_sink(kafka_bootstrap, tmp_path, suffix, archive=True, max_seconds=1)
    (name,) = config.sinks
    topic = config.sinks[name].stream
    target = next(s for s in config.streams if s.startswith("raw-events"))
    ensure_topics(config, kafka_bootstrap)
    try:
        asyncio.run(_produce(kafka_bootstrap, topic))
        asyncio.run(sink_until_flushed(config, name, EVENTS + 1))
        archived = [
            decode_entry(line).value
            for f in sorted((lake / "_archive" / "playback").rglob("*.jsonl.gz"))
            for line in gzip.decompress(f.read_bytes()).splitlines()
        ]
        assert len(archived) == EVENTS + 1 and BAD in archived

        assert (
            cli(["replay", "--config", str(path), "--from-archive", "playback", "--into", target])
            == 0
        )
        replayed = asyncio.run(_consume(kafka_bootstrap, target, EVENTS + 1))
    finally:
        delete_topics(kafka_bootstrap, config.streams)
    assert len(replayed) == EVENTS + 1
    assert sorted(replayed) == sorted(archived)
    assert {orjson.loads(line)["event_id"] for line in replayed} == {
        *(f"evt-{n:08d}" for n in range(EVENTS)),
        "evt-bad",
    }

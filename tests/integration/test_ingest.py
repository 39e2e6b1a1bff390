"""The HTTP ingest against the real broker: envelopes, single messages, refusals, failures."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition
from kafka.admin import KafkaAdminClient

from api.server import IngestServer, create_app, serve
from firelake.config import FirelakeConfig
from firelake.testing import example_config, sample_event
from streams import envelope
from streams.ingest import INGEST_KEY
from streams.partitioning import partition_for_key
from streams.sequence import decode_sequence
from streams.topics import delete_topics

pytestmark = pytest.mark.kafka

MiB = 1024 * 1024


@pytest.fixture
def cleanup(kafka_bootstrap: str) -> Iterator[list[FirelakeConfig]]:
    """Configs appended here get their topics deleted after the test."""
    configs: list[FirelakeConfig] = []
    yield configs
    for cfg in configs:
        delete_topics(kafka_bootstrap, list(cfg.streams))


def make_config(
    bootstrap: str, lake: Path, suffix: str, cleanup: list[FirelakeConfig], **raw: Any
) -> FirelakeConfig:
    streams = {"raw-events": {"partitions": 4, **raw}} if raw else {}
    cfg = example_config(bootstrap, lake, suffix, streams=streams)
    cleanup.append(cfg)
    return cfg


async def consume(bootstrap: str, topic: str, partitions: int, count: int) -> list[ConsumerRecord]:
    """The first ``count`` messages of a topic (all partitions), waiting at most 15 s."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        messages: list[ConsumerRecord] = []
        deadline = time.monotonic() + 15
        while len(messages) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                messages.extend(batch)
        return messages
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """The end offset of each partition of a topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return [ends[tp] for tp in tps]
    finally:
        await consumer.stop()


JSON = {"Content-Type": "application/json"}


def run_with_server(
    cfg: FirelakeConfig, test: Callable[[IngestServer, aiohttp.ClientSession], Awaitable[None]]
) -> None:
    async def main() -> None:
        async with IngestServer(cfg, port=0) as server, aiohttp.ClientSession() as session:
            await test(server, session)

    asyncio.run(asyncio.wait_for(main(), 60))


def records(n: int, key: Callable[[int], str] = lambda i: f"user-{i}") -> list[dict[str, Any]]:
    return [{"data": sample_event(i), "partition_key": key(i)} for i in range(n)]


def test_put_records_writes_one_envelope_per_partition(
    kafka_bootstrap: str, lake: Path, suffix: str, cleanup: list[FirelakeConfig]
) -> None:
    cfg = make_config(kafka_bootstrap, lake, suffix, cleanup)
    raw = f"raw-events-{suffix}"
    sent = records(10)
    expected_partitions = {partition_for_key(r["partition_key"], 4) for r in sent}
    assert len(expected_partitions) >= 2

    async def test(server: IngestServer, session: aiohttp.ClientSession) -> None:
        before = time.time_ns() // 1_000_000
        async with session.post(
            f"{server.url}/v1/streams/{raw}/records", json={"records": sent}
        ) as resp:
            assert resp.status == 200
            answer = await resp.json()
        after = time.time_ns() // 1_000_000
        assert answer["failed_record_count"] == 0
        results = answer["records"]
        assert len(results) == 10

        messages = await consume(kafka_bootstrap, raw, 4, len(expected_partitions))
        assert len(messages) == len(expected_partitions)
        by_position = {(m.partition, m.offset): m for m in messages}
        for index, (record, result) in enumerate(zip(sent, results, strict=True)):
            partition = partition_for_key(record["partition_key"], 4)
            assert result["partition"] == partition
            position = decode_sequence(result["sequence_number"])
            assert (position.partition, position.offset) == (partition, result["offset"])
            message = by_position[(partition, result["offset"])]
            env = envelope.decode(message.value, message.headers, message.key)
            assert env.batched
            assert orjson.loads(env.lines[position.index]) == record["data"]
            assert env.keys is not None
            assert env.keys[position.index] == record["partition_key"]
            assert message.key == env.keys[0].encode()
            assert before <= env.time_min == env.time_max == message.timestamp <= after
            # Request order is kept inside each envelope.
            earlier = [i for i in range(index) if results[i]["partition"] == partition]
            assert position.index == len(earlier)

    run_with_server(cfg, test)


def test_single_stream_gets_one_message_per_record(
    kafka_bootstrap: str, lake: Path, suffix: str, cleanup: list[FirelakeConfig]
) -> None:
    cfg = make_config(kafka_bootstrap, lake, suffix, cleanup, partitions=3, envelope="single")
    raw = f"raw-events-{suffix}"
    sent = records(12, key=lambda i: f"user-{i % 5}")

    async def test(server: IngestServer, session: aiohttp.ClientSession) -> None:
        async with session.post(
            f"{server.url}/v1/streams/{raw}/records", json={"records": sent}
        ) as resp:
            assert resp.status == 200
            answer = await resp.json()
        assert answer["failed_record_count"] == 0
        messages = await consume(kafka_bootstrap, raw, 3, 12)
        assert len(messages) == 12
        by_position = {(m.partition, m.offset): m for m in messages}
        for record, result in zip(sent, answer["records"], strict=True):
            partition = partition_for_key(record["partition_key"], 3)
            assert result["partition"] == partition
            assert decode_sequence(result["sequence_number"]) == (partition, result["offset"], 0)
            message = by_position[(partition, result["offset"])]
            assert message.headers == ()
            assert message.key == record["partition_key"].encode()
            assert orjson.loads(message.value) == record["data"]
        # Per key, offsets follow request order.
        for key in {r["partition_key"] for r in sent}:
            offsets = [
                res["offset"]
                for rec, res in zip(sent, answer["records"], strict=True)
                if rec["partition_key"] == key
            ]
            assert offsets == sorted(offsets)

    run_with_server(cfg, test)


def _big_record(size: int, key: str) -> dict[str, Any]:
    return {"data": "x" * (size - 2), "partition_key": key}


BAD_REQUESTS: list[tuple[str, str | None, Any, int, str, str]] = [
    # (name, stream (None = raw), body, status, code, fragment of the message)
    ("malformed", None, b'{"records": [', 400, "InvalidJSON", "not valid JSON"),
    ("not-object", None, b"[1]", 400, "InvalidRequest", "must be a JSON object"),
    ("no-records", None, b"{}", 400, "InvalidRequest", "no 'records'"),
    ("empty-records", None, {"records": []}, 400, "InvalidRequest", "'records' is empty"),
    ("unknown-stream", "nope", {"records": []}, 404, "ResourceNotFoundException", "'nope'"),
    (
        "typed-stream",
        "playback-events",
        {"records": records(1)},
        403,
        "StreamNotWritable",
        "written by routers",
    ),
    (
        "record-too-large",
        None,
        {"records": [_big_record(MiB + 1, "k")]},
        413,
        "RecordTooLarge",
        "records[0]",
    ),
    (
        "too-many",
        None,
        {"records": [{"data": i, "partition_key": "k"} for i in range(501)]},
        400,
        "TooManyRecords",
        "501 records",
    ),
    (
        "payload-too-large",
        None,
        {"records": [_big_record(MiB, f"k{i}") for i in range(6)]},
        413,
        "RequestTooLarge",
        "data and partition keys",
    ),
    (
        "missing-key",
        None,
        {"records": [{"data": 1, "partition_key": "a"}, {"data": 2}]},
        400,
        "InvalidRecord",
        "records[1]: missing field 'partition_key'",
    ),
    (
        "key-not-string",
        None,
        {"records": [{"data": 1, "partition_key": 5}]},
        400,
        "InvalidRecord",
        "partition_key must be a string, got number",
    ),
    (
        "record-not-object",
        None,
        {"records": ["x"]},
        400,
        "InvalidRecord",
        "records[0]: must be an object, got string",
    ),
    (
        "records-not-array",
        None,
        {"records": "x"},
        400,
        "InvalidRequest",
        "must be an array, got string",
    ),
    (
        "key-too-long",
        None,
        {"records": [{"data": 1, "partition_key": "k" * 257}]},
        400,
        "InvalidRecord",
        "1 to 256 characters, got 257",
    ),
]


def test_bad_requests_get_their_4xx_naming_the_problem(
    kafka_bootstrap: str, lake: Path, suffix: str, cleanup: list[FirelakeConfig]
) -> None:
    cfg = make_config(kafka_bootstrap, lake, suffix, cleanup)
    raw = f"raw-events-{suffix}"

    async def test(server: IngestServer, session: aiohttp.ClientSession) -> None:
        for name, stream, body, status, code, fragment in BAD_REQUESTS:
            target = raw if stream is None else f"{stream}-{suffix}" if stream != "nope" else stream
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            async with session.post(
                f"{server.url}/v1/streams/{target}/records", data=data, headers=JSON
            ) as r:
                answer = await r.json()
                assert (r.status, answer["error"]["code"]) == (status, code), (name, answer)
                assert fragment in answer["error"]["message"], (name, answer)

        # The native API takes JSON only: a text/plain post is refused unread.
        async with session.post(
            f"{server.url}/v1/streams/{raw}/records",
            data=orjson.dumps({"records": [{"data": 1, "partition_key": "k"}]}),
            headers={"Content-Type": "text/plain"},
        ) as r:
            assert r.status == 415
            assert "application/json" in (await r.json())["error"]["message"]

        # A 50 MiB body is refused from its Content-Length, unread.
        async with session.post(
            f"{server.url}/v1/streams/{raw}/records", data=b" " * (50 * MiB), headers=JSON
        ) as r:
            assert r.status == 413
            assert "52428800 bytes" in (await r.json())["error"]["message"]

        # A chunked body (no Content-Length) is cut off once it passes the limit.
        async def chunks() -> Any:
            for _ in range(20):
                yield b" " * MiB

        async with session.post(
            f"{server.url}/v1/streams/{raw}/records", data=chunks(), headers=JSON
        ) as r:
            assert r.status == 413
            assert (await r.json())["error"]["code"] == "RequestTooLarge"

        async with session.get(f"{server.url}/v1/nothing") as r:
            assert r.status == 404
            assert "POST /v1/streams/{stream}/records" in (await r.json())["error"]["message"]
        async with session.get(f"{server.url}/v1/streams/{raw}/records") as r:
            assert r.status == 405
            assert (await r.json())["error"]["code"] == "MethodNotAllowed"

        # Nothing reached the raw stream (every answer came after the produce would have).
        assert await end_offsets(kafka_bootstrap, raw, 4) == [0, 0, 0, 0]

    run_with_server(cfg, test)


def test_health_and_stream_listing(
    kafka_bootstrap: str, lake: Path, suffix: str, cleanup: list[FirelakeConfig]
) -> None:
    cfg = make_config(kafka_bootstrap, lake, suffix, cleanup)

    async def test(server: IngestServer, session: aiohttp.ClientSession) -> None:
        async with session.get(f"{server.url}/health") as r:
            assert (r.status, await r.json()) == (200, {"status": "ok"})
        async with session.get(f"{server.url}/v1/streams") as r:
            listing = {s["name"]: s for s in (await r.json())["streams"]}
        assert listing[f"raw-events-{suffix}"] == {
            "name": f"raw-events-{suffix}",
            "partitions": 4,
            "envelope": "batch",
            "schema": None,
            "writable": True,
        }
        assert listing[f"dlq-{suffix}"]["partitions"] == 1
        assert not listing[f"dlq-{suffix}"]["writable"]

    run_with_server(cfg, test)


def test_kafka_failure_fails_only_that_partitions_records(
    kafka_bootstrap: str, lake: Path, suffix: str, cleanup: list[FirelakeConfig]
) -> None:
    """A topic whose messages may be 2 KB: the big envelope fails, the small one lands."""
    cfg = make_config(kafka_bootstrap, lake, suffix, cleanup, partitions=2)
    raw = f"raw-events-{suffix}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="test-ingest")
    try:
        admin.create_topics(
            {
                raw: {
                    "num_partitions": 2,
                    "replication_factor": 1,
                    "configs": {"max.message.bytes": "2000"},
                }
            },
            wait_for_metadata=True,
        )
    finally:
        admin.close()
    small_key = next(k for k in (f"s{i}" for i in range(100)) if partition_for_key(k, 2) == 0)
    big_key = next(k for k in (f"b{i}" for i in range(100)) if partition_for_key(k, 2) == 1)
    sent = [
        {"data": {"n": 1}, "partition_key": small_key},
        _big_record(5000, big_key),
        {"data": {"n": 2}, "partition_key": small_key},
        _big_record(10, big_key),
    ]

    async def test(server: IngestServer, session: aiohttp.ClientSession) -> None:
        async with session.post(
            f"{server.url}/v1/streams/{raw}/records", json={"records": sent}
        ) as r:
            assert r.status == 200
            answer = await r.json()
        assert answer["failed_record_count"] == 2
        ok, failed = answer["records"][0::2], answer["records"][1::2]
        assert [res["partition"] for res in ok] == [0, 0]
        for res in failed:
            assert res["error_code"] == "InternalFailure"
            assert "MessageSizeTooLarge" in res["error_message"]
        messages = await consume(kafka_bootstrap, raw, 2, 1)
        assert [(m.partition, envelope.decode(m.value, m.headers).lines) for m in messages] == [
            (0, (b'{"n":1}', b'{"n":2}'))
        ]

    run_with_server(cfg, test)


def test_create_app_over_a_given_producer(
    kafka_bootstrap: str, lake: Path, suffix: str, cleanup: list[FirelakeConfig]
) -> None:
    """The app alone (aiohttp's test server) over a producer the caller owns."""
    cfg = make_config(kafka_bootstrap, lake, suffix, cleanup)
    raw = f"raw-events-{suffix}"

    async def main() -> None:
        from streams.topics import ensure_topics

        await asyncio.to_thread(ensure_topics, cfg, kafka_bootstrap)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            async with TestClient(TestServer(create_app(cfg, producer))) as client:
                r = await client.post(
                    f"/v1/streams/{raw}/records",
                    data=orjson.dumps({"records": [{"data": "x", "partition_key": "k"}]}),
                    headers=JSON,
                )
                assert r.status == 200
                answer = await r.json()
                assert answer["records"][0]["partition"] == partition_for_key("k", 4)
        finally:
            await producer.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_serve_runs_until_cancelled(
    kafka_bootstrap: str, lake: Path, suffix: str, cleanup: list[FirelakeConfig]
) -> None:
    cfg = make_config(kafka_bootstrap, lake, suffix, cleanup)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(serve(cfg, ready=ready, port=port))
        await asyncio.wait_for(ready.wait(), 30)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/health") as r:
                assert r.status == 200
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
            with pytest.raises(aiohttp.ClientConnectionError):
                async with session.get(f"http://127.0.0.1:{port}/health"):
                    pass

    asyncio.run(asyncio.wait_for(main(), 60))


def test_requests_beyond_the_inflight_bound_are_refused_with_503(
    kafka_bootstrap: str, lake: Path, suffix: str, cleanup: list[FirelakeConfig]
) -> None:
    cfg = make_config(kafka_bootstrap, lake, suffix, cleanup)
    url_path = f"/v1/streams/raw-events-{suffix}/records"

    async def main() -> None:
        release = asyncio.Event()

        async def slow_body() -> Any:
            # Holds the only slot while the body is still being sent.
            yield b'{"records": ['
            await release.wait()
            yield b'{"data": 1, "partition_key": "k"}]}'

        server = IngestServer(cfg, port=0, max_inflight=1, slot_wait_s=0.2)
        async with server, aiohttp.ClientSession() as session:
            first = asyncio.create_task(
                session.post(server.url + url_path, data=slow_body(), headers=JSON)
            )
            assert server.app is not None
            ingest = server.app[INGEST_KEY]
            for _ in range(100):  # until the slow request holds the slot, at most 5 s
                if ingest.in_flight:
                    break
                await asyncio.sleep(0.05)
            assert ingest.in_flight == 1
            async with session.post(
                server.url + url_path, json={"records": [{"data": 2, "partition_key": "k"}]}
            ) as r:
                answer = await r.json()
                assert r.status == 503
                assert answer["error"]["code"] == "ProvisionedThroughputExceededException"
                assert "1 requests in flight" in answer["error"]["message"]
            release.set()
            async with await first as r:
                assert r.status == 200
                assert (await r.json())["failed_record_count"] == 0
            assert ingest.in_flight == 0

    asyncio.run(asyncio.wait_for(main(), 60))

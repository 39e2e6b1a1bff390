"""The Kinesis API through the real boto3 client, against the real broker."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config

from api.backend import AwsOptions
from api.records import ShardQuota
from api.server import IngestThread
from api.shard_iterators import ShardPosition, encode_iterator
from api.sigv4 import Credentials
from firelake.config import FirelakeConfig
from firelake.testing import example_config, sample_event
from streams.partitioning import HASH_KEY_MAX, partition_for_key
from streams.registry import aload_registry
from streams.replay import run_replay
from streams.resources import registry_config
from streams.sequence import decode_sequence
from streams.topics import delete_topics

pytestmark = pytest.mark.kafka


class Env:
    """A running ingest with its AWS endpoint, and what to clean up after the test."""

    def __init__(self, server: IngestThread, config: FirelakeConfig, registry_topic: str) -> None:
        self.server = server
        self.config = config
        self.registry_topic = registry_topic
        self.topics: list[str] = [registry_topic, *config.streams]

    def client(self, service: str = "kinesis", **kwargs: Any) -> Any:
        kwargs.setdefault("aws_access_key_id", "AKIDTEST")
        kwargs.setdefault("aws_secret_access_key", "secret")
        return boto3.client(
            service,
            endpoint_url=self.server.url,
            region_name="eu-north-1",
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
            **kwargs,
        )


def start_env(
    bootstrap: str, lake: Path, suffix: str, options: AwsOptions | None = None
) -> tuple[IngestThread, FirelakeConfig, str]:
    cfg = example_config(bootstrap, lake, suffix)
    registry_topic = f"_firelake_registry-{suffix}"
    options = options or AwsOptions()
    options = AwsOptions(
        credentials=options.credentials,
        quota=options.quota,
        registry_topic=registry_topic,
    )
    server = IngestThread(cfg, port=0, aws=options)
    server.start()
    return server, cfg, registry_topic


@pytest.fixture
def env(kafka_bootstrap: str, lake: Path, suffix: str) -> Iterator[Env]:
    server, cfg, topic = start_env(kafka_bootstrap, lake, suffix)
    environment = Env(server, cfg, topic)
    try:
        yield environment
    finally:
        server.stop()
        delete_topics(kafka_bootstrap, environment.topics)


def read_shard(
    kinesis: Any, stream: str, shard: str, iterator_args: dict[str, Any], limit: int | None = None
) -> list[dict[str, Any]]:
    """Every record from an iterator position to the shard's end (bounded loop)."""
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, **iterator_args)[
        "ShardIterator"
    ]
    records: list[dict[str, Any]] = []
    for _ in range(200):
        args = {"ShardIterator": iterator}
        if limit:
            args["Limit"] = limit
        answer = kinesis.get_records(**args)
        records.extend(answer["Records"])
        iterator = answer["NextShardIterator"]
        if not answer["Records"] and answer["MillisBehindLatest"] == 0:
            return records
    raise AssertionError("shard not drained in 200 GetRecords calls")


def test_boto3_put_10000_records_and_read_them_back_per_shard(env: Env, suffix: str) -> None:
    kinesis = env.client()
    stream = f"clicks-{suffix}"
    env.topics.append(stream)
    kinesis.create_stream(StreamName=stream, ShardCount=4)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 1})

    sent: list[tuple[bytes, str]] = []
    for n in range(10_000):
        if n % 97 == 0:
            data = b"\x00binary\nwith newline " + str(n).encode()  # not an envelope line
        else:
            data = json.dumps(sample_event(n), separators=(",", ":")).encode()
        sent.append((data, f"user-{n % 1500}"))
    results: list[dict[str, Any]] = []
    for start in range(0, len(sent), 500):
        chunk = sent[start : start + 500]
        answer = kinesis.put_records(
            StreamName=stream, Records=[{"Data": d, "PartitionKey": k} for d, k in chunk]
        )
        assert answer["FailedRecordCount"] == 0
        results.extend(answer["Records"])
    assert len(results) == 10_000

    # The shard of each record follows the MD5 rule.
    expected: dict[str, list[tuple[bytes, str, str]]] = {}
    for (data, key), result in zip(sent, results, strict=True):
        partition = partition_for_key(key, 4)
        assert result["ShardId"] == f"shardId-{partition:012d}"
        assert decode_sequence(result["SequenceNumber"]).partition == partition
        expected.setdefault(result["ShardId"], []).append((data, key, result["SequenceNumber"]))

    shards = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]]
    assert shards == [f"shardId-{p:012d}" for p in range(4)]
    total = 0
    for shard in shards:
        got = read_shard(kinesis, stream, shard, {"ShardIteratorType": "TRIM_HORIZON"})
        total += len(got)
        # All of them, in put order, with exactly the bytes and keys that were put.
        assert [(r["Data"], r["PartitionKey"], r["SequenceNumber"]) for r in got] == expected[shard]
        sequences = [int(r["SequenceNumber"]) for r in got]
        assert sequences == sorted(sequences)
    assert total == 10_000

    # AT / AFTER_SEQUENCE_NUMBER resume exactly, inside an envelope and at its start.
    shard = shards[1]
    records = expected[shard]
    inside = next(i for i, r in enumerate(records) if decode_sequence(r[2]).index > 3)
    first = 0
    for position in (inside, first):
        sequence = records[position][2]
        at = read_shard(
            kinesis,
            stream,
            shard,
            {"ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": sequence},
            limit=97,  # stops inside envelopes
        )
        assert [r["SequenceNumber"] for r in at] == [r[2] for r in records[position:]]
        after = kinesis.get_records(
            ShardIterator=kinesis.get_shard_iterator(
                StreamName=stream,
                ShardId=shard,
                ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                StartingSequenceNumber=sequence,
            )["ShardIterator"],
            Limit=3,
        )
        assert [r["SequenceNumber"] for r in after["Records"]] == [
            r[2] for r in records[position + 1 : position + 4]
        ]
        assert after["MillisBehindLatest"] >= 0

    # AT_TIMESTAMP starts at the first record that arrived at or after the time.
    time.sleep(0.05)
    moment = time.time()
    time.sleep(0.05)
    later = kinesis.put_records(
        StreamName=stream,
        Records=[{"Data": f'{{"late":{i}}}'.encode(), "PartitionKey": "late"} for i in range(3)],
    )
    late_shard = later["Records"][0]["ShardId"]
    at_time = read_shard(
        kinesis, stream, late_shard, {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": moment}
    )
    assert [r["Data"] for r in at_time] == [b'{"late":0}', b'{"late":1}', b'{"late":2}']
    assert all(r["ApproximateArrivalTimestamp"].timestamp() >= moment - 0.001 for r in at_time)

    # LATEST sees only what comes after it.
    latest = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=late_shard, ShardIteratorType="LATEST"
    )["ShardIterator"]
    assert kinesis.get_records(ShardIterator=latest)["Records"] == []
    kinesis.put_record(StreamName=stream, Data=b"after-latest", PartitionKey="late")
    assert [r["Data"] for r in kinesis.get_records(ShardIterator=latest)["Records"]] == [
        b"after-latest"
    ]

    # Iterators expire after 5 minutes; garbage is refused; both name the problem.
    old = encode_iterator(ShardPosition(stream, 0, 0, 0, int(time.time() * 1000) - 301_000))
    with pytest.raises(kinesis.exceptions.ExpiredIteratorException, match="expired"):
        kinesis.get_records(ShardIterator=old)
    with pytest.raises(kinesis.exceptions.InvalidArgumentException, match="ShardIterator"):
        kinesis.get_records(ShardIterator="not-an-iterator")


def test_explicit_hash_key_limits_and_errors(env: Env, suffix: str) -> None:
    kinesis = env.client()
    stream = f"hk-{suffix}"
    env.topics.append(stream)
    kinesis.create_stream(StreamName=stream, ShardCount=3)
    answer = kinesis.put_records(
        StreamName=stream,
        Records=[
            {"Data": b"{}", "PartitionKey": "a", "ExplicitHashKey": "0"},
            {"Data": b"{}", "PartitionKey": "a", "ExplicitHashKey": str(HASH_KEY_MAX)},
        ],
    )
    assert [r["ShardId"] for r in answer["Records"]] == [
        "shardId-000000000000",
        "shardId-000000000002",
    ]

    def refused(error: str, fragment: str, **kwargs: Any) -> None:
        with pytest.raises(getattr(kinesis.exceptions, error)) as info:
            kinesis.put_records(StreamName=stream, **kwargs)
        assert fragment in str(info.value)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    mib = 1024 * 1024
    refused(
        "InvalidArgumentException",
        "outside the hash key range",
        Records=[{"Data": b"x", "PartitionKey": "a", "ExplicitHashKey": str(HASH_KEY_MAX + 1)}],
    )
    refused(
        "ClientError",
        "length less than or equal to 500",
        Records=[{"Data": b"x", "PartitionKey": "a"}] * 501,
    )
    refused(
        "ClientError",
        "records.1.member.data",
        Records=[{"Data": b"x" * (mib + 1), "PartitionKey": "a"}],
    )
    refused(
        "InvalidArgumentException",
        "5 MB",
        Records=[{"Data": b"x" * (mib * 9 // 10), "PartitionKey": f"k{i}"} for i in range(6)],
    )
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException, match="not found"):
        kinesis.put_record(StreamName=f"missing-{suffix}", Data=b"x", PartitionKey="a")
    with pytest.raises(kinesis.exceptions.ResourceInUseException, match="already exists"):
        kinesis.create_stream(StreamName=stream, ShardCount=3)
    with pytest.raises(kinesis.exceptions.AccessDeniedException, match="written by routers"):
        kinesis.put_record(StreamName=f"page-events-{suffix}", Data=b"{}", PartitionKey="a")
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException, match="Shard"):
        kinesis.get_shard_iterator(
            StreamName=stream, ShardId="shardId-000000000007", ShardIteratorType="LATEST"
        )
    with pytest.raises(kinesis.exceptions.InvalidArgumentException, match="belongs to"):
        kinesis.get_shard_iterator(
            StreamName=stream,
            ShardId="shardId-000000000001",
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=answer["Records"][0]["SequenceNumber"],
        )


def test_stream_admin_and_the_registry_other_processes_read(
    env: Env, suffix: str, kafka_bootstrap: str
) -> None:
    kinesis = env.client()
    stream = f"admin-{suffix}"
    env.topics.append(stream)
    kinesis.create_stream(StreamName=stream, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    names = kinesis.list_streams(Limit=100)["StreamNames"]
    assert stream in names and f"raw-events-{suffix}" in names  # declared streams too
    page = kinesis.list_streams(Limit=1)
    assert page["HasMoreStreams"] and len(page["StreamNames"]) == 1

    summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    assert (summary["OpenShardCount"], summary["RetentionPeriodHours"]) == (4, 24)
    assert summary["StreamARN"].endswith(f":stream/{stream}")
    shards = kinesis.list_shards(StreamName=stream, MaxResults=3)
    rest = kinesis.list_shards(NextToken=shards["NextToken"])
    assert [s["ShardId"] for s in shards["Shards"] + rest["Shards"]] == [
        f"shardId-{p:012d}" for p in range(4)
    ]
    ranges = [s["HashKeyRange"] for s in shards["Shards"] + rest["Shards"]]
    assert ranges[0]["StartingHashKey"] == "0" and ranges[-1]["EndingHashKey"] == str(HASH_KEY_MAX)

    kinesis.increase_stream_retention_period(StreamName=stream, RetentionPeriodHours=48)
    with pytest.raises(kinesis.exceptions.InvalidArgumentException, match="can not be shorter"):
        kinesis.increase_stream_retention_period(StreamName=stream, RetentionPeriodHours=30)
    kinesis.decrease_stream_retention_period(StreamName=stream, RetentionPeriodHours=36)
    assert (
        kinesis.describe_stream(StreamName=stream)["StreamDescription"]["RetentionPeriodHours"]
        == 36
    )

    # Another process sees the stream, and can run sinks/routers on it.
    registry = asyncio.run(aload_registry(kafka_bootstrap, env.registry_topic))
    assert registry.streams[stream].partitions == 4
    assert registry.streams[stream].retention_hours == 36
    merged = registry_config(env.config, registry)
    assert merged.streams[stream].partitions == 4

    # The HTTP route takes records for it too.
    async def post() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{env.server.url}/v1/streams/{stream}/records",
                json={"records": [{"data": {"n": 1}, "partition_key": "k"}]},
            ) as r:
                assert r.status == 200
                return await r.json()

    assert asyncio.run(post())["failed_record_count"] == 0

    kinesis.delete_stream(StreamName=stream)
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.describe_stream(StreamName=stream)
    with pytest.raises(kinesis.exceptions.ResourceInUseException, match="declared"):
        kinesis.delete_stream(StreamName=f"raw-events-{suffix}")
    registry = asyncio.run(aload_registry(kafka_bootstrap, env.registry_topic))
    assert stream not in registry.streams


def test_shard_quota_fails_single_records_with_http_200(
    kafka_bootstrap: str, lake: Path, suffix: str
) -> None:
    quota = AwsOptions(quota=ShardQuota(bytes_per_s=1024 * 1024, records_per_s=10))
    server, cfg, topic = start_env(kafka_bootstrap, lake, suffix, quota)
    env = Env(server, cfg, topic)
    try:
        kinesis = env.client()
        stream = f"raw-events-{suffix}"
        answer = kinesis.put_records(
            StreamName=stream,
            Records=[{"Data": f'{{"n":{i}}}'.encode(), "PartitionKey": "one"} for i in range(25)],
        )
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert 10 <= 25 - answer["FailedRecordCount"] <= 12
        failed = [r for r in answer["Records"] if "ErrorCode" in r]
        assert {r["ErrorCode"] for r in failed} == {"ProvisionedThroughputExceededException"}
        ok = [r for r in answer["Records"] if "SequenceNumber" in r]
        got = read_shard(kinesis, stream, ok[0]["ShardId"], {"ShardIteratorType": "TRIM_HORIZON"})
        assert [r["SequenceNumber"] for r in got] == [r["SequenceNumber"] for r in ok]
    finally:
        server.stop()
        delete_topics(kafka_bootstrap, env.topics)


def test_credentials_when_configured(kafka_bootstrap: str, lake: Path, suffix: str) -> None:
    creds = AwsOptions(credentials=Credentials({"AKIDGOOD": "s3cret", "AKIDANY": None}))
    server, cfg, topic = start_env(kafka_bootstrap, lake, suffix, creds)
    env = Env(server, cfg, topic)
    try:
        good = env.client(aws_access_key_id="AKIDGOOD", aws_secret_access_key="s3cret")
        assert f"raw-events-{suffix}" in good.list_streams(Limit=100)["StreamNames"]
        anyone = env.client(aws_access_key_id="AKIDANY", aws_secret_access_key="whatever")
        anyone.put_record(StreamName=f"raw-events-{suffix}", Data=b"{}", PartitionKey="k")
        bad_secret = env.client(aws_access_key_id="AKIDGOOD", aws_secret_access_key="nope")
        with pytest.raises(Exception) as info:
            bad_secret.list_streams()
        assert info.value.response["Error"]["Code"] == "InvalidSignatureException"  # type: ignore[attr-defined]
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403  # type: ignore[attr-defined]
        stranger = env.client(aws_access_key_id="AKIDOTHER", aws_secret_access_key="s3cret")
        with pytest.raises(Exception) as info:
            stranger.list_streams()
        assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"  # type: ignore[attr-defined]
    finally:
        server.stop()
        delete_topics(kafka_bootstrap, env.topics)


def test_raw_http_errors_are_aws_shaped(env: Env) -> None:
    async def main() -> None:
        url = env.server.url + "/"
        async with aiohttp.ClientSession() as session:
            cases = [
                (
                    {"Content-Type": "text/plain", "X-Amz-Target": "Kinesis_20131202.ListStreams"},
                    b"{}",
                    "SerializationException",
                    "content type",
                ),
                (
                    {"Content-Type": "application/x-amz-json-1.1"},
                    b"{}",
                    "UnknownOperationException",
                    "X-Amz-Target",
                ),
                (
                    {
                        "Content-Type": "application/x-amz-json-1.1",
                        "X-Amz-Target": "Kinesis_20131202.Nope",
                    },
                    b"{}",
                    "UnknownOperationException",
                    "'Nope'",
                ),
                (
                    {
                        "Content-Type": "application/x-amz-json-1.1",
                        "X-Amz-Target": "Kinesis_20131202.PutRecords",
                    },
                    b'{"Records": [',
                    "SerializationException",
                    "not valid JSON",
                ),
                (
                    {
                        "Content-Type": "application/x-amz-json-1.1",
                        "X-Amz-Target": "Kinesis_20131202.PutRecords",
                    },
                    b'{"StreamName": "x", "Records": [{"Data": "!!", "PartitionKey": "k"}]}',
                    "SerializationException",
                    "base64",
                ),
            ]
            for headers, body, code, fragment in cases:
                async with session.post(url, data=body, headers=headers) as r:
                    answer = json.loads(await r.read())
                    assert r.status == 400, answer
                    assert answer["__type"] == code, answer
                    assert fragment in answer["message"], answer
            # A body over any valid request's size: read, then refused with a 400.
            big = b'{"Records": ["' + base64.b64encode(b"x" * (8 * 1024 * 1024)) + b'"]}'
            async with session.post(
                url,
                data=big,
                headers={
                    "Content-Type": "application/x-amz-json-1.1",
                    "X-Amz-Target": "Kinesis_20131202.PutRecords",
                },
            ) as r:
                assert r.status == 400
                assert json.loads(await r.read())["__type"] == "InvalidArgumentException"

    asyncio.run(asyncio.wait_for(main(), 60))


def test_replay_a_time_range_into_another_stream_and_into_itself(
    env: Env, suffix: str, kafka_bootstrap: str
) -> None:
    kinesis = env.client()
    source, target = f"orig-{suffix}", f"copy-{suffix}"
    env.topics += [source, target]
    kinesis.create_stream(StreamName=source, ShardCount=4)
    kinesis.create_stream(StreamName=target, ShardCount=2)

    def put(batch: int) -> None:
        kinesis.put_records(
            StreamName=source,
            Records=[
                {"Data": f'{{"batch":{batch},"n":{n}}}'.encode(), "PartitionKey": f"u{n}"}
                for n in range(100)
            ],
        )

    put(0)
    time.sleep(0.05)
    moment = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    put(1)
    put(2)

    report = run_replay(kafka_bootstrap, source, moment, into=target, progress=False)
    assert report.events == 200
    copied: list[dict[str, Any]] = []
    for shard in ("shardId-000000000000", "shardId-000000000001"):
        records = read_shard(kinesis, target, shard, {"ShardIteratorType": "TRIM_HORIZON"})
        for record in records:
            # Re-split by key for the 2-shard target: every record sits on its key's shard.
            assert shard == f"shardId-{partition_for_key(record['PartitionKey'], 2):012d}"
        copied += [json.loads(r["Data"]) for r in records]
    assert sorted((c["batch"], c["n"]) for c in copied) == [
        (b, n) for b in (1, 2) for n in range(100)
    ]

    # Into itself: bounded by the end fixed at the start, so it terminates.
    again = run_replay(kafka_bootstrap, source, "earliest", "@9999999999999", progress=False)
    assert again.events == 300
    total = sum(
        len(read_shard(kinesis, source, f"shardId-{p:012d}", {"ShardIteratorType": "TRIM_HORIZON"}))
        for p in range(4)
    )
    assert total == 600

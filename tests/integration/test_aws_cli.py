"""The AWS CLI (pip package awscli) against the ingest: only --endpoint-url changes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from api.backend import AwsOptions
from api.server import IngestThread
from firelake.testing import example_config
from streams import envelope
from streams.topics import delete_topics

pytestmark = pytest.mark.kafka

ROLE = "arn:aws:iam::000000000000:role/firehose"


def aws_command() -> list[str]:
    """The ``aws`` script of this interpreter's environment (or on PATH)."""
    local = Path(sys.executable).with_name("aws")
    if local.exists():
        return [sys.executable, str(local)]
    found = shutil.which("aws")
    if found is None:
        pytest.fail("the AWS CLI is not installed: pip install awscli", pytrace=False)
    return [found]


def run_aws(url: str, home: Path, *args: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": "AKIDCLI",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "eu-north-1",
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
    }
    done = subprocess.run(
        [*aws_command(), "--endpoint-url", url, "--output", "json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else {}


async def topic_lines(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning()
        ends = await consumer.end_offsets(tps)
        lines: list[bytes] = []
        for _ in range(40):
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            for batch in (await consumer.getmany(timeout_ms=250)).values():
                for m in batch:
                    lines.extend(envelope.decode(m.value, m.headers, m.key).lines)
        return lines
    finally:
        await consumer.stop()


def test_aws_cli_put_record_and_put_record_batch(
    kafka_bootstrap: str, lake: Path, suffix: str, tmp_path: Path
) -> None:
    cfg = example_config(kafka_bootstrap, lake, suffix)
    registry_topic = f"_firelake_registry-{suffix}"
    topics = [registry_topic, *cfg.streams]
    delivery = f"cli-{suffix}"
    with IngestThread(cfg, port=0, aws=AwsOptions(registry_topic=registry_topic)) as server:
        try:
            stream = f"raw-events-{suffix}"
            put = run_aws(
                server.url,
                tmp_path,
                "kinesis",
                "put-record",
                "--stream-name",
                stream,
                "--partition-key",
                "user-1",
                "--data",
                '{"event_type":"click","n":1}',
            )
            assert put["ShardId"].startswith("shardId-")

            kinesis = boto3.client(
                "kinesis",
                endpoint_url=server.url,
                region_name="eu-north-1",
                aws_access_key_id="x",
                aws_secret_access_key="y",
            )
            iterator = kinesis.get_shard_iterator(
                StreamName=stream,
                ShardId=put["ShardId"],
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                StartingSequenceNumber=put["SequenceNumber"],
            )["ShardIterator"]
            record = kinesis.get_records(ShardIterator=iterator, Limit=1)["Records"][0]
            assert record["PartitionKey"] == "user-1"
            # awscli v1 sends --data text as is (base64-encoded on the wire).
            assert json.loads(record["Data"]) == {"event_type": "click", "n": 1}

            create = {
                "DeliveryStreamName": delivery,
                "DeliveryStreamType": "DirectPut",
                "ExtendedS3DestinationConfiguration": {
                    "RoleARN": ROLE,
                    "BucketARN": "arn:aws:s3:::lake",
                    "Prefix": f"cli_{suffix}/",
                    "DataFormatConversionConfiguration": {
                        "SchemaConfiguration": {"TableName": "page"},
                        "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
                        "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {}}},
                    },
                },
            }
            run_aws(
                server.url,
                tmp_path,
                "firehose",
                "create-delivery-stream",
                "--cli-input-json",
                json.dumps(create),
            )
            topics.append(f"firehose-{delivery}")
            records = [{"Data": json.dumps({"event_id": f"e{i}", "page": "/"})} for i in range(3)]
            batch = run_aws(
                server.url,
                tmp_path,
                "firehose",
                "put-record-batch",
                "--delivery-stream-name",
                delivery,
                "--records",
                json.dumps(records),
            )
            assert batch["FailedPutCount"] == 0
            assert len(batch["RequestResponses"]) == 3
            lines = asyncio.run(topic_lines(kafka_bootstrap, f"firehose-{delivery}", 4))
            assert sorted(json.loads(line)["event_id"] for line in lines) == ["e0", "e1", "e2"]
        finally:
            server.stop()
            delete_topics(kafka_bootstrap, topics)

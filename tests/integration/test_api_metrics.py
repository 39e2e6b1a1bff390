"""The AWS puts count their records in the ingest's Prometheus metrics (real broker).

Kinesis PutRecords/PutRecord and Firehose PutRecordBatch/PutRecord answers are counted in
``firelake_ingest_records_total`` by API and result (``ok`` or the error code, throttled
records as ``ProvisionedThroughputExceededException``), scraped over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.backend import AwsOptions
from api.records import ShardQuota
from api.server import IngestThread
from firelake.testing import example_config
from streams.topics import delete_topics
from tests.integration.test_firehose_api import client

pytestmark = pytest.mark.kafka

THROTTLED = "ProvisionedThroughputExceededException"


def records_counted(url: str) -> dict[tuple[str, str], float]:
    """(api, result) -> records, from the ingest's /metrics page."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    counted: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "firelake_ingest_records":
            continue
        for sample in family.samples:
            if sample.name == "firelake_ingest_records_total":
                counted[(sample.labels["api"], sample.labels["result"])] = sample.value
    return counted


def test_kinesis_and_firehose_puts_count_accepted_and_throttled_records(
    kafka_bootstrap: str, lake: Path, suffix: str
) -> None:
    cfg = example_config(kafka_bootstrap, lake, suffix)
    registry_topic = f"_firelake_registry-{suffix}"
    options = AwsOptions(
        quota=ShardQuota(bytes_per_s=1024 * 1024, records_per_s=10), registry_topic=registry_topic
    )
    server = IngestThread(cfg, port=0, aws=options)
    server.start()
    topics = [registry_topic, *cfg.streams]
    try:
        kinesis, firehose = client(server, "kinesis"), client(server, "firehose")
        stream = f"raw-events-{suffix}"
        # One shard key: its quota admits about 10 of 25 records, the rest are throttled.
        answer = kinesis.put_records(
            StreamName=stream,
            Records=[{"Data": f'{{"n":{i}}}'.encode(), "PartitionKey": "one"} for i in range(25)],
        )
        throttled = answer["FailedRecordCount"]
        assert 13 <= throttled <= 15
        kinesis.put_record(StreamName=stream, Data=b'{"n":99}', PartitionKey="other")

        name = f"metered-{suffix}"
        firehose.create_delivery_stream(
            DeliveryStreamName=name,
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::000000000000:role/firehose",
                "BucketARN": "arn:aws:s3:::lake",
                "Prefix": f"metered_{suffix}/",
            },
        )
        topics.append(f"firehose-{name}")
        batch = firehose.put_record_batch(
            DeliveryStreamName=name, Records=[{"Data": b'{"n":1}\n'} for _ in range(7)]
        )
        assert batch["FailedPutCount"] == 0
        firehose.put_record(DeliveryStreamName=name, Record={"Data": b'{"n":2}\n'})

        counted = records_counted(server.url)
        assert counted[("kinesis", "ok")] == 25 - throttled + 1
        assert counted[("kinesis", THROTTLED)] == throttled
        assert counted[("firehose", "ok")] == 8
        assert ("native", "ok") not in counted
    finally:
        server.stop()
        delete_topics(kafka_bootstrap, topics)

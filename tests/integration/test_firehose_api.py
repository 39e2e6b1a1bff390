"""The Firehose (and Glue) API through real boto3 clients, into Parquet via the real sink."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from api.backend import AwsOptions
from api.delivery import TIME_LAYOUT
from api.server import IngestThread
from firelake.cli import main as firelake_main
from firelake.config import FirelakeConfig, load_config
from firelake.testing import example_dict, sample_event, write_config
from queries.engine import QueryEngine
from sinks.fleet import run_sink_fleet
from streams.topics import delete_topics

pytestmark = pytest.mark.kafka

ROLE = "arn:aws:iam::000000000000:role/firehose"
BUCKET = "arn:aws:s3:::lake"


@pytest.fixture
def setup(
    kafka_bootstrap: str, lake: Path, suffix: str, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    raw = example_dict(kafka_bootstrap, lake, suffix)
    config_file = write_config(tmp_path / "firelake.toml", raw)
    cfg = load_config(config_file, environ={})
    registry_topic = f"_firelake_registry-{suffix}"
    topics = [registry_topic, *cfg.streams]
    server = IngestThread(cfg, port=0, aws=AwsOptions(registry_topic=registry_topic))
    server.start()
    try:
        yield {
            "server": server,
            "config": cfg,
            "config_file": config_file,
            "registry_topic": registry_topic,
            "topics": topics,
        }
    finally:
        server.stop()
        delete_topics(kafka_bootstrap, topics)


def client(server: IngestThread, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name="eu-north-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def destination(table: str, schema_table: str, **extra: Any) -> dict[str, Any]:
    dest: dict[str, Any] = {
        "RoleARN": ROLE,
        "BucketARN": BUCKET,
        "Prefix": f"{table}/",
        "ErrorOutputPrefix": f"_errors/{table}/",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
        "CompressionFormat": "UNCOMPRESSED",
        "DataFormatConversionConfiguration": {
            "Enabled": True,
            "SchemaConfiguration": {
                "RoleARN": ROLE,
                "DatabaseName": "default",
                "TableName": schema_table,
            },
            "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
            "OutputFormatConfiguration": {
                "Serializer": {"ParquetSerDe": {"Compression": "SNAPPY"}}
            },
        },
    }
    dest.update(extra)
    return dest


class FleetThread(threading.Thread):
    """``sinks.fleet.run_sink_fleet`` (what ``firelake sink --all`` runs) in a thread."""

    def __init__(self, config: FirelakeConfig, registry_topic: str) -> None:
        super().__init__(daemon=True)
        self.config, self.registry_topic = config, registry_topic
        self.loop = asyncio.new_event_loop()
        self.stop_event = asyncio.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.loop.run_until_complete(
                run_sink_fleet(self.config, self.stop_event, self.registry_topic, 0.5)
            )
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.join(60)
        assert not self.is_alive(), "the sink fleet did not stop within 60 s"
        assert self.error is None, repr(self.error)


def count_rows(lake: Path, table: str) -> int:
    with QueryEngine(lake) as engine:
        if table not in engine.tables:
            return 0
        return int(engine.query(f"SELECT count(*) FROM {table}").rows[0][0])


def test_put_record_batch_5000_records_reach_the_lake(
    setup: dict[str, Any], kafka_bootstrap: str, lake: Path, suffix: str, capsys: Any
) -> None:
    server: IngestThread = setup["server"]
    firehose, glue, kinesis = (client(server, s) for s in ("firehose", "glue", "kinesis"))
    table = f"clicks_{suffix}"

    # A Glue table holds the schema, as on AWS.
    glue.create_table(
        DatabaseName="default",
        TableInput={
            "Name": "clicks",
            "StorageDescriptor": {
                "Columns": [
                    {"Name": "event_id", "Type": "string"},
                    {"Name": "event_type", "Type": "string"},
                    {"Name": "event_time", "Type": "timestamp"},
                    {"Name": "user_id", "Type": "string"},
                    {"Name": "page", "Type": "string"},
                    {"Name": "position_seconds", "Type": "bigint"},
                ]
            },
            "Parameters": {"firelake.time_field": "event_time"},
        },
    )
    assert [
        c["Type"]
        for c in glue.get_table(DatabaseName="default", Name="clicks")["Table"][
            "StorageDescriptor"
        ]["Columns"]
    ][:3] == ["string", "string", "timestamp"]

    # The sinks process `firelake up` runs, started before any delivery stream exists: it
    # must pick the delivery streams up from the registry as they are created.
    fleet = FleetThread(setup["config"], setup["registry_topic"])
    fleet.start()

    name = f"clicks-{suffix}"
    arn = firehose.create_delivery_stream(
        DeliveryStreamName=name,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration=destination(table, "clicks"),
    )["DeliveryStreamARN"]
    assert arn.endswith(f":deliverystream/{name}")
    setup["topics"].append(f"firehose-{name}")
    described = firehose.describe_delivery_stream(DeliveryStreamName=name)[
        "DeliveryStreamDescription"
    ]
    assert described["DeliveryStreamStatus"] == "ACTIVE"
    s3 = described["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert (s3["Prefix"], s3["BufferingHints"]["SizeInMBs"]) == (f"{table}/", 1)
    assert name in firehose.list_delivery_streams()["DeliveryStreamNames"]

    # A second delivery stream reads a Kinesis stream, converting to a firelake.toml schema.
    source = f"pages-{suffix}"
    setup["topics"].append(source)
    kinesis.create_stream(StreamName=source, ShardCount=2)
    from_stream = f"pages-{suffix}"
    page_table = f"pages_{suffix}"
    firehose.create_delivery_stream(
        DeliveryStreamName=from_stream,
        DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={
            "KinesisStreamARN": f"arn:aws:kinesis:eu-north-1:000000000000:stream/{source}",
            "RoleARN": ROLE,
        },
        ExtendedS3DestinationConfiguration=destination(page_table, "page"),
    )

    # 5 000 records, newline-terminated as producers write them for S3.
    events = [sample_event(n, "page_view") for n in range(5000)]
    for start in range(0, 5000, 500):
        answer = firehose.put_record_batch(
            DeliveryStreamName=name,
            Records=[
                {"Data": (json.dumps(e) + "\n").encode()} for e in events[start : start + 500]
            ],
        )
        assert answer["FailedPutCount"] == 0
        assert len(answer["RequestResponses"]) == 500
        assert all("RecordId" in r for r in answer["RequestResponses"])
    firehose.put_record(DeliveryStreamName=name, Record={"Data": b"not json at all\n"})
    kinesis.put_records(
        StreamName=source,
        Records=[
            {"Data": json.dumps(e).encode(), "PartitionKey": e["user_id"]} for e in events[:300]
        ],
    )
    with pytest.raises(firehose.exceptions.InvalidArgumentException, match="KinesisStreamAsSource"):
        firehose.put_record(DeliveryStreamName=from_stream, Record={"Data": b"{}"})

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and fleet.is_alive():
        if count_rows(lake, table) >= 5000 and count_rows(lake, page_table) >= 300:
            break
        time.sleep(0.5)
    fleet.stop()
    assert count_rows(lake, table) == 5000
    assert count_rows(lake, page_table) == 300
    errors = list((lake / "_errors" / table).rglob("*.jsonl"))
    assert errors
    # Firehose's error envelope: the record's bytes, base64, with the reason.
    (failed,) = [json.loads(line) for line in errors[0].read_text().splitlines()]
    # The sink reads newline-delimited records, so the producer's line ending is the
    # delimiter, not part of the record.
    assert base64.b64decode(failed["rawData"]) == b"not json at all"
    assert failed["errorCode"] and failed["errorMessage"]

    # `firelake query` over the lake sees them.
    assert (
        firelake_main(
            [
                "query",
                f"SELECT count(DISTINCT event_id) AS n FROM {table}",
                "--config",
                str(setup["config_file"]),
                "--format",
                "csv",
            ]
        )
        == 0
    )
    assert "5000" in capsys.readouterr().out

    firehose.delete_delivery_stream(DeliveryStreamName=from_stream)
    firehose.delete_delivery_stream(DeliveryStreamName=name)
    assert name not in firehose.list_delivery_streams()["DeliveryStreamNames"]


def test_what_cannot_be_mapped_is_refused_naming_the_field(
    setup: dict[str, Any], suffix: str
) -> None:
    firehose = client(setup["server"], "firehose")
    table = f"t_{suffix}"

    def refused(fragment: str, error: str = "InvalidArgumentException", **kwargs: Any) -> None:
        with pytest.raises(getattr(firehose.exceptions, error)) as info:
            firehose.create_delivery_stream(DeliveryStreamName=f"bad-{suffix}", **kwargs)
        assert fragment in str(info.value), str(info.value)

    # Without format conversion the records are written as JSON lines: gzip or plain only.
    refused(
        "CompressionFormat: 'Snappy' is not supported without format conversion",
        ExtendedS3DestinationConfiguration={
            "RoleARN": ROLE,
            "BucketARN": BUCKET,
            "CompressionFormat": "Snappy",
        },
    )
    refused(
        "Prefix: !{partitionKeyFromQuery:a} needs DynamicPartitioningConfiguration",
        ExtendedS3DestinationConfiguration=destination(
            table, "page", Prefix="x/!{partitionKeyFromQuery:a}/"
        ),
    )
    refused(
        "CompressionFormat: 'GZIP'",
        ExtendedS3DestinationConfiguration=destination(table, "page", CompressionFormat="GZIP"),
    )
    refused(
        "no Glue table default.nope", ExtendedS3DestinationConfiguration=destination(table, "nope")
    )
    refused(
        "ErrorOutputPrefix",
        ExtendedS3DestinationConfiguration=destination(
            table, "page", ErrorOutputPrefix=f"{table}/err/"
        ),
    )
    refused(
        "S3DestinationConfiguration: is not supported",
        S3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": BUCKET},
    )
    orc = destination(table, "page")
    orc["DataFormatConversionConfiguration"]["OutputFormatConfiguration"] = {
        "Serializer": {"OrcSerDe": {}}
    }
    refused("ORC is not supported", ExtendedS3DestinationConfiguration=orc)
    refused(
        "is written by",
        error="ResourceInUseException",
        ExtendedS3DestinationConfiguration=destination("page", "page"),
    )

    with pytest.raises(firehose.exceptions.ResourceNotFoundException):
        firehose.put_record_batch(DeliveryStreamName=f"none-{suffix}", Records=[{"Data": b"{}"}])
    name = f"ok-{suffix}"
    firehose.create_delivery_stream(
        DeliveryStreamName=name, ExtendedS3DestinationConfiguration=destination(table, "page")
    )
    setup["topics"].append(f"firehose-{name}")
    with pytest.raises(firehose.exceptions.ResourceInUseException):
        firehose.create_delivery_stream(
            DeliveryStreamName=name, ExtendedS3DestinationConfiguration=destination(table, "page")
        )
    with pytest.raises(Exception, match="less than or equal to 500"):
        firehose.put_record_batch(DeliveryStreamName=name, Records=[{"Data": b"{}"}] * 501)
    with pytest.raises(firehose.exceptions.InvalidArgumentException, match="4 MiB"):
        firehose.put_record_batch(DeliveryStreamName=name, Records=[{"Data": b"x" * 1_000_000}] * 5)
    with pytest.raises(Exception, match="1024000"):
        firehose.put_record(DeliveryStreamName=name, Record={"Data": b"x" * 1_024_001})


def test_decimal_date_array_and_a_dynamic_prefix_reach_the_lake_exactly(
    setup: dict[str, Any], lake: Path, suffix: str
) -> None:
    server: IngestThread = setup["server"]
    firehose, glue = client(server, "firehose"), client(server, "glue")
    table = f"orders_{suffix}"
    glue.create_table(
        DatabaseName="default",
        TableInput={
            "Name": f"orders_{suffix}",
            "StorageDescriptor": {
                "Columns": [
                    {"Name": "order_id", "Type": "bigint"},
                    {"Name": "region", "Type": "string"},
                    {"Name": "amount", "Type": "decimal(12,2)"},
                    {"Name": "day", "Type": "date"},
                    {"Name": "tags", "Type": "array<string>"},
                ]
            },
        },
    )
    fleet = FleetThread(setup["config"], setup["registry_topic"])
    fleet.start()
    name = f"orders-{suffix}"
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=destination(
            table,
            f"orders_{suffix}",
            Prefix=f"{table}/{TIME_LAYOUT}region=!{{partitionKeyFromQuery:region}}/",
            DynamicPartitioningConfiguration={"Enabled": True},
        ),
    )
    setup["topics"].append(f"firehose-{name}")
    # Amounts as text beyond float precision, and as JSON numbers; Region in any case
    # (OpenX folds keys to lower case by default).
    records = [
        {
            "order_id": n,
            "Region": ["north", "south", "east"][n % 3],
            "amount": f"9999999999.{n % 100:02d}" if n % 2 else n / 4,
            "day": f"2026-11-{1 + n % 28:02d}",
            "tags": [f"t{n % 5}"] * (n % 3),
        }
        for n in range(300)
    ]
    for start in range(0, 300, 100):
        answer = firehose.put_record_batch(
            DeliveryStreamName=name,
            Records=[
                {"Data": json.dumps(r).encode() + b"\n"} for r in records[start : start + 100]
            ],
        )
        assert answer["FailedPutCount"] == 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and fleet.is_alive() and count_rows(lake, table) < 300:
        time.sleep(0.5)
    fleet.stop()
    folders = {p.name for p in (lake / table).glob("dt=*/hour=*/*") if p.is_dir()}
    assert folders == {"region=north", "region=south", "region=east"}
    with QueryEngine(lake) as engine:
        rows = engine.query(
            f"SELECT order_id, region, CAST(amount AS VARCHAR), CAST(day AS VARCHAR), "
            f"len(tags) FROM {table} ORDER BY order_id"
        ).rows
    assert len(rows) == 300
    for row, sent in zip(rows, records, strict=True):
        amount = sent["amount"]
        expected = amount if isinstance(amount, str) else f"{amount:.2f}"
        assert row == (sent["order_id"], sent["Region"], expected, sent["day"], len(sent["tags"]))
    firehose.delete_delivery_stream(DeliveryStreamName=name)


@pytest.mark.parametrize("glue", ["before", "after", ""], ids=["glue", "glue-later", "inferred"])
def test_without_format_conversion_gzip_json_lines_reach_the_lake(
    setup: dict[str, Any], lake: Path, suffix: str, glue: str, capsys: Any
) -> None:
    """The most common Firehose setup: no DataFormatConversionConfiguration. 5 000 records
    land byte for byte as gzip JSON lines under the Prefix, and SQL reads them with the
    columns of a Glue table of the same name — created before the delivery stream, or
    after it while records flow, as Athena's SerDe reads the table — or inferred."""
    server: IngestThread = setup["server"]
    firehose = client(server, "firehose")
    table = f"rawclicks_{suffix}"

    def create_table() -> None:
        columns = [("event_id", "string"), ("user_id", "string"), ("position_seconds", "bigint")]
        client(server, "glue").create_table(
            DatabaseName="default",
            TableInput={
                "Name": table,
                "StorageDescriptor": {"Columns": [{"Name": n, "Type": t} for n, t in columns]},
            },
        )

    if glue == "before":
        create_table()
    name = f"raw-{suffix}"
    plain = {"RoleARN": ROLE, "BucketARN": BUCKET, "Prefix": f"{table}/"}
    hints = {"BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1}}
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=plain | hints | {"CompressionFormat": "GZIP"},
    )
    setup["topics"].append(f"firehose-{name}")
    fleet = FleetThread(setup["config"], setup["registry_topic"])
    fleet.start()
    events = [sample_event(n, "start") for n in range(5000)]
    # Records as producers send them, key order and spacing their own.
    sent = [json.dumps(e, separators=(", ", ": ")).encode() for e in events]
    for start in range(0, 5000, 500):
        answer = firehose.put_record_batch(
            DeliveryStreamName=name,
            Records=[{"Data": d + b"\n"} for d in sent[start : start + 500]],
        )
        assert answer["FailedPutCount"] == 0
        if glue == "after" and start == 2500:
            create_table()

    def lines() -> list[bytes]:
        files = sorted((lake / table).rglob("*.jsonl.gz"))
        return [line for f in files for line in gzip.decompress(f.read_bytes()).splitlines()]

    columns_file = lake / "_firelake" / "tables" / table / "columns.json"
    deadline = time.monotonic() + 60
    while (
        (len(lines()) < 5000 or (glue and not columns_file.exists()))
        and time.monotonic() < deadline
        and fleet.is_alive()
    ):
        time.sleep(0.5)
    fleet.stop()
    assert sorted(lines()) == sorted(sent)  # byte for byte, one a line
    for path in (lake / table).rglob("*.jsonl.gz"):
        assert (path.parent.parent.name[:3], path.parent.name[:5]) == ("dt=", "hour=")

    def query(sql: str) -> list[str]:
        capsys.readouterr()
        argv = ["query", sql, "--config", str(setup["config_file"]), "--format", "csv"]
        assert firelake_main(argv) == 0
        return [line for line in capsys.readouterr().out.splitlines()[1:] if "," in line]

    total = sum(e["position_seconds"] for e in events)
    counts = f"SELECT count(*), count(DISTINCT event_id), sum(position_seconds) FROM {table}"
    assert query(counts) == [f"5000,5000,{total}"]
    types = dict(row.split(",")[:2] for row in query(f"DESCRIBE {table}"))
    assert types["position_seconds"] == "BIGINT"
    # A Glue table decides the columns (Athena's JSON SerDe); otherwise they are inferred.
    assert ("content_id" in types) is not bool(glue)
    firehose.delete_delivery_stream(DeliveryStreamName=name)

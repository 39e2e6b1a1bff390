"""Firehose and Glue requests mapped onto registry entries and the config."""

from __future__ import annotations

import pytest

from firelake.testing import example_config
from streams.aws_protocol import AwsError
from streams.delivery import delivery_from_request, table_from_request
from streams.resources import DeliveryEntry, Registry, StreamEntry, registry_config

ROLE = "arn:aws:iam::000000000000:role/r"


def request(**dest: object) -> dict[str, object]:
    base: dict[str, object] = {
        "RoleARN": ROLE,
        "BucketARN": "arn:aws:s3:::b",
        "Prefix": "clicks/",
        "BufferingHints": {"SizeInMBs": 2, "IntervalInSeconds": 60},
        "DataFormatConversionConfiguration": {
            "SchemaConfiguration": {"TableName": "page"},
            "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {"Compression": "GZIP"}}},
        },
    }
    base.update(dest)
    return {"DeliveryStreamName": "d", "ExtendedS3DestinationConfiguration": base}


def test_direct_put_maps_onto_a_sink_and_joins_the_config(tmp_path) -> None:
    cfg = example_config("127.0.0.1:1", tmp_path, "t")
    entry = delivery_from_request(request(), cfg, Registry(), dict(cfg.streams), 5)
    assert (entry.topic, entry.table, entry.compression) == ("firehose-d", "clicks", "gzip")
    assert (entry.max_bytes, entry.max_seconds) == (2 * 1024 * 1024, 60.0)
    assert entry.schema == cfg.schemas["page"]
    again = DeliveryEntry.from_json(entry.to_json())
    assert again == entry
    registry = Registry()
    registry.apply("delivery/d", __import__("orjson").dumps(entry.to_json()))
    registry.apply("stream/s", __import__("orjson").dumps(StreamEntry("s", 2).to_json()))
    merged = registry_config(cfg, registry)
    assert merged.sinks["firehose-d"].stream == "firehose-d"
    assert merged.schema_of("firehose-d").fields == cfg.schemas["page"].fields  # type: ignore[union-attr]
    assert merged.streams["s"].partitions == 2
    registry.apply("delivery/d", None)
    assert "d" not in registry.deliveries


@pytest.mark.parametrize(
    ("dest", "fragment"),
    [
        ({"Prefix": "a/b/"}, "Prefix"),
        ({"CompressionFormat": "GZIP"}, "CompressionFormat"),
        ({"DataFormatConversionConfiguration": None}, "is required"),
        ({"ErrorOutputPrefix": "errors/"}, "ErrorOutputPrefix"),
        ({"DynamicPartitioningConfiguration": {"Enabled": True}}, "DynamicPartitioning"),
        ({"BufferingHints": {"SizeInMBs": 129}}, "sizeInMBs"),
        ({"Prefix": "page/"}, "is written by"),
    ],
)
def test_unmappable_fields_are_refused(tmp_path, dest: dict, fragment: str) -> None:
    cfg = example_config("127.0.0.1:1", tmp_path, "t")
    with pytest.raises(AwsError) as info:
        delivery_from_request(request(**dest), cfg, Registry(), dict(cfg.streams), 0)
    assert fragment in info.value.message


def test_glue_table_schema() -> None:
    entry = table_from_request(
        {
            "DatabaseName": "db",
            "TableInput": {
                "Name": "t",
                "StorageDescriptor": {
                    "Columns": [
                        {"Name": "id", "Type": "bigint"},
                        {"Name": "at", "Type": "timestamp"},
                        {"Name": "v", "Type": "decimal(10,2)"},
                    ]
                },
                "Parameters": {"firelake.time_field": "at"},
            },
        },
        1,
    )
    assert [(f.name, f.type) for f in entry.schema.fields] == [
        ("id", "int"),
        ("at", "timestamp"),
        ("v", "float"),
    ]
    assert entry.schema.time_field == "at"
    with pytest.raises(AwsError, match="map<"):
        table_from_request(
            {
                "DatabaseName": "db",
                "TableInput": {
                    "Name": "t",
                    "StorageDescriptor": {"Columns": [{"Name": "m", "Type": "map<string,int>"}]},
                },
            },
            1,
        )

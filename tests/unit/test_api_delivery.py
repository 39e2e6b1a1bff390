"""Firehose and Glue requests mapped onto registry entries and the config."""

from __future__ import annotations

import pytest

from api.delivery import (
    TIME_LAYOUT,
    delivery_from_request,
    firelake_type,
    table_from_request,
)
from api.protocol import AwsError
from firelake.config import SinkConfig
from firelake.testing import example_config
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


DYNAMIC = {"DynamicPartitioningConfiguration": {"Enabled": True}}


def extraction(query: str) -> dict[str, object]:
    return {
        "Enabled": True,
        "Processors": [
            {
                "Type": "MetadataExtraction",
                "Parameters": [
                    {"ParameterName": "MetadataExtractionQuery", "ParameterValue": query},
                    {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"},
                ],
            }
        ],
    }


def serde(openx: dict[str, object]) -> dict[str, object]:
    return {
        "DataFormatConversionConfiguration": {
            "SchemaConfiguration": {"TableName": "page"},
            "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": openx}},
        }
    }


@pytest.mark.parametrize(
    ("dest", "fragment"),
    [
        ({"Prefix": "a/!{firehose:random-string}/"}, "Prefix: "),
        ({"Prefix": "a/b"}, "Prefix: "),
        ({"Prefix": f"a/{TIME_LAYOUT}!{{partitionKeyFromQuery:page}}/"}, "DynamicPartitioning"),
        (
            DYNAMIC | {"Prefix": f"a/{TIME_LAYOUT}k=!{{partitionKeyFromQuery:nope}}/"},
            "'nope' is not",
        ),
        ({"Prefix": "a/!{firehose:error-output-type}/"}, "not allowed here"),
        (DYNAMIC | {"Prefix": "a/k=!{partitionKeyFromQuery:page}/"}, "cannot be queried"),
        ({"CompressionFormat": "GZIP"}, "CompressionFormat"),
        (
            {"DataFormatConversionConfiguration": None, "CompressionFormat": "ZIP"},
            "without format conversion: GZIP or UNCOMPRESSED",
        ),
        ({"ErrorOutputPrefix": "clicks/errors/"}, "ErrorOutputPrefix: 'clicks/errors/' leads"),
        ({"ErrorOutputPrefix": "e/!{partitionKeyFromQuery:page}/"}, "ErrorOutputPrefix"),
        ({"BufferingHints": {"SizeInMBs": 129}}, "sizeInMBs"),
        ({"Prefix": "page/"}, "is written by"),
        ({"S3BackupMode": "Sometimes"}, "S3BackupMode"),
        (
            {"S3BackupMode": "Enabled", "S3BackupConfiguration": {"CompressionFormat": "ZIP"}},
            "S3BackupConfiguration.CompressionFormat",
        ),
        (
            {
                "S3BackupMode": "Enabled",
                "S3BackupConfiguration": {"Prefix": "raw/!{partitionKeyFromQuery:page}/"},
            },
            "S3BackupConfiguration.Prefix",
        ),
        (
            {"S3BackupMode": "Enabled", "S3BackupConfiguration": {"Prefix": "page/raw/"}},
            "S3BackupConfiguration.Prefix: 'page/raw/' leads into table 'page'",
        ),
        (
            {"ProcessingConfiguration": {"Enabled": True, "Processors": [{"Type": "Lambda"}]}},
            "Processors[0].Type",
        ),
        (
            {"ProcessingConfiguration": extraction("{p: .page}")},
            "Processors[0].Parameters[0].ParameterValue",
        ),
        (serde({"CaseInsensitive": "yes"}), "OpenXJsonSerDe.CaseInsensitive"),
        (
            serde({"ColumnToJsonKeyMappings": {"nope": "x"}}),
            "ColumnToJsonKeyMappings.nope: 'nope' is not a column",
        ),
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
                        {"Name": "d", "Type": "date"},
                        {"Name": "tags", "Type": "array<varchar(20)>"},
                        {"Name": "dev", "Type": "struct<os:string,ver:smallint>"},
                        {"Name": "m", "Type": "map<string,array<double>>"},
                        {"Name": "ok", "Type": "boolean"},
                        {"Name": "dec", "Type": "decimal"},
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
        ("v", "decimal(10,2)"),
        ("d", "date"),
        ("tags", "list<string>"),
        ("dev", "struct<os:string,ver:int>"),
        ("m", "map<string,list<float>>"),
        ("ok", "bool"),
        ("dec", "decimal(10,0)"),  # Hive's default
    ]
    assert entry.schema.time_field == "at"


@pytest.mark.parametrize(
    ("glue", "fragment"),
    [
        ("binary", "'binary' has no Firelake column type"),
        ("array<interval>", "'interval' has no Firelake column type"),
        ("map<array<int>,int>", "map keys must be scalar"),
        ("decimal(40,2)", "precision 1-38"),
        ("array<int", "expected '>'"),
        ("uniontype<int,string>", "'uniontype'"),
    ],
)
def test_glue_types_without_a_firelake_type_are_refused_naming_the_column(
    glue: str, fragment: str
) -> None:
    with pytest.raises(AwsError) as info:
        table_from_request(
            {
                "DatabaseName": "db",
                "TableInput": {
                    "Name": "t",
                    "StorageDescriptor": {
                        "Columns": [{"Name": "a", "Type": "int"}, {"Name": "x", "Type": glue}]
                    },
                },
            },
            1,
        )
    assert info.value.message.startswith("TableInput.StorageDescriptor.Columns[1].Type: ")
    assert fragment in info.value.message


def test_glue_types_map_onto_firelake_types() -> None:
    assert str(firelake_type("ARRAY<STRUCT<a:DECIMAL(5,2), b:CHAR(3)>>")) == (
        "list<struct<a:decimal(5,2),b:string>>"
    )
    assert str(firelake_type("map<bigint,tinyint>")) == "map<int,int>"
    assert str(firelake_type("decimal(7)")) == "decimal(7,0)"


def test_dynamic_prefix_serde_and_backup_go_onto_the_sink(tmp_path) -> None:
    cfg = example_config("127.0.0.1:1", tmp_path, "t")
    dest = {
        **DYNAMIC,
        "Prefix": f"clicks/{TIME_LAYOUT}product=!{{partitionKeyFromQuery:product}}/",
        "ErrorOutputPrefix": "errors/!{firehose:error-output-type}/!{timestamp:yyyy}/",
        "ProcessingConfiguration": extraction("{product: .product, page:.page}"),
        "S3BackupMode": "Enabled",
        "S3BackupConfiguration": {"Prefix": "raw/!{timestamp:yyyy-MM-dd}/"},
    }
    dest.update(serde({"ConvertDotsInJsonKeysToUnderscores": True}))
    conversion = dest["DataFormatConversionConfiguration"]
    conversion["InputFormatConfiguration"]["Deserializer"]["OpenXJsonSerDe"][  # type: ignore[index]
        "ColumnToJsonKeyMappings"
    ] = {"user_id": "UserId"}
    entry = delivery_from_request(request(**dest), cfg, Registry(), dict(cfg.streams), 0)
    assert DeliveryEntry.from_json(entry.to_json()) == entry
    sink = entry.sink_config()
    assert (sink.table, sink.prefix) == (
        "clicks",
        f"{TIME_LAYOUT}product=!{{partitionKeyFromQuery:product}}/",
    )
    assert sink.error_prefix == "errors/!{firehose:error-output-type}/!{timestamp:yyyy}/"
    # OpenX defaults to case-insensitive keys, as on AWS.
    assert (sink.case_insensitive, sink.dots_to_underscores) == (True, True)
    assert dict(sink.column_to_json_key) == {"user_id": "UserId"}
    assert (sink.archive, sink.archive_prefix) == (True, "raw/!{timestamp:yyyy-MM-dd}/")
    # The merged configuration is a valid one: the sink's templates parse.
    registry = Registry()
    registry.apply("delivery/d", __import__("orjson").dumps(entry.to_json()))
    merged = registry_config(cfg, registry).sinks["firehose-d"]
    assert merged.prefix == sink.prefix and merged.archive


def test_a_plain_prefix_keeps_firelake_defaults(tmp_path) -> None:
    cfg = example_config("127.0.0.1:1", tmp_path, "t")
    sink = delivery_from_request(request(), cfg, Registry(), dict(cfg.streams), 0).sink_config()
    defaults = SinkConfig()
    assert (sink.prefix, sink.error_prefix, sink.archive_prefix) == (
        defaults.prefix,
        defaults.error_prefix,
        defaults.archive_prefix,
    )
    assert not (sink.archive or sink.case_insensitive or sink.column_to_json_key)
    # An entry stored before the new settings existed reads as the defaults.
    old = delivery_from_request(request(), cfg, Registry(), dict(cfg.streams), 0).to_json()
    for key in ("sink_prefix", "case_insensitive", "archive", "column_to_json_key"):
        old.pop(key)
    assert DeliveryEntry.from_json(old).sink_config() == sink

"""Firehose delivery streams without format conversion map onto JSON-lines sinks."""

from __future__ import annotations

import orjson
import pytest

from api.delivery import delivery_from_request, table_from_request
from api.protocol import AwsError
from firelake.testing import example_config
from streams.resources import DeliveryEntry, Registry, registry_config


def request(**dest: object) -> dict[str, object]:
    base: dict[str, object] = {
        "RoleARN": "arn:aws:iam::000000000000:role/r",
        "BucketARN": "arn:aws:s3:::b",
        "Prefix": "rawclicks/",
    }
    base.update(dest)
    return {"DeliveryStreamName": "raw-d", "ExtendedS3DestinationConfiguration": base}


def map_request(tmp_path, registry: Registry | None = None, **dest: object) -> DeliveryEntry:
    cfg = example_config("127.0.0.1:1", tmp_path, "t")
    return delivery_from_request(request(**dest), cfg, registry or Registry(), {}, 5)


@pytest.mark.parametrize(
    ("dest", "codec"),
    [
        ({"CompressionFormat": "GZIP"}, "gzip"),
        ({}, "none"),  # Firehose's default: UNCOMPRESSED
        (
            {"CompressionFormat": "GZIP", "DataFormatConversionConfiguration": {"Enabled": False}},
            "gzip",
        ),
    ],
)
def test_no_conversion_is_a_json_lines_sink(tmp_path, dest, codec) -> None:
    entry = map_request(tmp_path, **dest)
    assert (entry.format, entry.compression, entry.table) == ("json", codec, "rawclicks")
    assert entry.schema.fields == ()
    assert DeliveryEntry.from_json(orjson.loads(orjson.dumps(entry.to_json()))) == entry
    registry = Registry(deliveries={entry.name: entry})
    merged = registry_config(example_config("127.0.0.1:1", tmp_path, "t"), registry)
    sink = merged.sinks[entry.sink_name]
    assert (sink.format, sink.compression, sink.table) == ("json", codec, "rawclicks")
    assert merged.schema_of(sink.stream) is None  # columns inferred when read


def test_other_codecs_are_refused_naming_the_field(tmp_path) -> None:
    with pytest.raises(AwsError) as caught:
        map_request(tmp_path, CompressionFormat="Snappy")
    assert "ExtendedS3DestinationConfiguration.CompressionFormat" in caught.value.message
    assert "GZIP or UNCOMPRESSED" in caught.value.message
    with pytest.raises(AwsError) as caught:
        map_request(tmp_path, S3BackupMode="Enabled")
    assert "S3BackupMode" in caught.value.message


def test_a_glue_table_of_the_same_name_gives_the_columns(tmp_path) -> None:
    glue = table_from_request(
        {
            "DatabaseName": "default",
            "TableInput": {
                "Name": "rawclicks",
                "StorageDescriptor": {
                    "Columns": [{"Name": "user_id", "Type": "string"}, {"Name": "n", "Type": "int"}]
                },
            },
        },
        1,
    )
    registry = Registry(tables={("default", "rawclicks"): glue})
    entry = map_request(tmp_path, registry, CompressionFormat="GZIP")
    assert [(f.name, str(f.type)) for f in entry.schema.fields] == [
        ("user_id", "string"),
        ("n", "int"),
    ]
    registry.deliveries[entry.name] = entry
    merged = registry_config(example_config("127.0.0.1:1", tmp_path, "t"), registry)
    sink = merged.sinks[entry.sink_name]
    assert merged.schema_of(sink.stream).fields == entry.schema.fields  # type: ignore[union-attr]

"""Firehose CreateDeliveryStream and Glue CreateTable requests mapped onto Firelake.

A delivery stream becomes a :class:`streams.resources.DeliveryEntry`: a Kafka topic
(``DirectPut``) or a Firelake stream (``KinesisStreamAsSource``) read by a Parquet sink.
The ``ExtendedS3DestinationConfiguration`` maps like this:

=================================  ==========================================================
Firehose                           Firelake
=================================  ==========================================================
BucketARN                          the lake root (any bucket name is accepted and echoed)
Prefix                             ``<table>/`` — optionally followed by Firelake's own
                                   layout ``dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/``
ErrorOutputPrefix                  ``_errors/<table>/`` (optionally
                                   ``!{firehose:error-output-type}/`` after it): the sink's
                                   ``_errors/<table>/format-conversion-failed/`` folder
BufferingHints SizeInMBs           sink ``max_bytes`` (1-128 MiB, default 5)
BufferingHints IntervalInSeconds   sink ``max_seconds`` (0-900, default 300)
CompressionFormat                  must be UNCOMPRESSED (as on AWS with format conversion);
                                   the Parquet codec is ParquetSerDe.Compression
DataFormatConversionConfiguration  required and enabled: JSON in (OpenX or Hive SerDe),
                                   Parquet out (ParquetSerDe; SNAPPY default, GZIP,
                                   UNCOMPRESSED)
SchemaConfiguration                DatabaseName/TableName of a Glue table created at this
                                   endpoint (``glue.create_table``), else TableName of a
                                   ``[schemas.<name>]`` in firelake.toml; raw JSON clients
                                   may also give ``Columns: [{"Name", "Type"}]`` inline
=================================  ==========================================================

The table is the first segment of Prefix, else the schema's table name. Anything that
cannot be mapped — other destinations, dynamic partitioning, processors, ORC, a prefix
with other expressions — is refused with ``InvalidArgumentException`` naming the field
and why. Time partitions follow Firehose: by arrival time, unless the schema names a
time field (config schemas' ``time_field``; a Glue table's ``firelake.time_field``
parameter).

Pure logic: no Kafka.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from firelake.config import FIELD_TYPES, FieldSpec, FirelakeConfig, Schema, StreamConfig
from streams.aws_protocol import AwsError, opt_int, opt_object, opt_string, req_string
from streams.resources import (
    DELIVERY_PARTITIONS,
    DELIVERY_TOPIC_PREFIX,
    DeliveryEntry,
    Registry,
    TableEntry,
)

__all__ = [
    "DEFAULT_DATABASE",
    "GLUE_TYPES",
    "TIME_FIELD_PARAMETER",
    "delivery_from_request",
    "glue_columns",
    "table_from_request",
]

MiB = 1024 * 1024

#: Database of a schema lookup that names none.
DEFAULT_DATABASE = "default"
#: Glue table parameter naming the timestamp column that places rows in dt=/hour=.
TIME_FIELD_PARAMETER = "firelake.time_field"

#: Glue / Hive column types and the Firelake type each maps to.
GLUE_TYPES: dict[str, str] = {
    "string": "string",
    "varchar": "string",
    "char": "string",
    "tinyint": "int",
    "smallint": "int",
    "int": "int",
    "integer": "int",
    "bigint": "int",
    "float": "float",
    "double": "float",
    "decimal": "float",
    "boolean": "bool",
    "timestamp": "timestamp",
}

_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,100}$")
_TIME_LAYOUT = "dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/"
_ERROR_TYPE = "!{firehose:error-output-type}/"
_ARN_STREAM_RE = re.compile(r"^arn:[^:]+:kinesis:[^:]*:\d{12}:stream/([A-Za-z0-9_.-]{1,128})$")
_PARQUET_CODECS = {"SNAPPY": "snappy", "GZIP": "gzip", "UNCOMPRESSED": "none"}


def _refuse(field: str, reason: str) -> AwsError:
    return AwsError(400, "InvalidArgumentException", f"{field}: {reason}")


def glue_columns(columns: Any, where: str) -> tuple[FieldSpec, ...]:
    """Glue-style ``[{"Name": ..., "Type": ...}]`` columns as Firelake fields."""
    if not isinstance(columns, list) or not columns:
        raise _refuse(where, "must be a non-empty list of {Name, Type} columns")
    fields: list[FieldSpec] = []
    seen: set[str] = set()
    for i, column in enumerate(columns):
        at = f"{where}[{i}]"
        if not isinstance(column, dict):
            raise _refuse(at, "must be an object with Name and Type")
        name, kind = column.get("Name"), column.get("Type")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,100}", name):
            raise _refuse(f"{at}.Name", f"{name!r} is not a column name (letters, digits, _)")
        if name in seen:
            raise _refuse(f"{at}.Name", f"column {name!r} appears twice")
        seen.add(name)
        if not isinstance(kind, str):
            raise _refuse(f"{at}.Type", "must be a string")
        base = kind.strip().lower().split("(", 1)[0]
        if base not in GLUE_TYPES:
            raise _refuse(
                f"{at}.Type",
                f"type {kind!r} has no Firelake column type (supported: "
                f"{', '.join(sorted(GLUE_TYPES))})",
            )
        fields.append(FieldSpec(name, GLUE_TYPES[base]))
    return tuple(fields)


def _time_field(fields: tuple[FieldSpec, ...], value: Any, where: str) -> str:
    if value in (None, ""):
        return ""
    spec = next((f for f in fields if f.name == value), None)
    if spec is None or spec.type != "timestamp":
        raise _refuse(where, f"{value!r} must name a timestamp column")
    return str(value)


def table_from_request(payload: Mapping[str, Any], now_ms: int) -> TableEntry:
    """A Glue CreateTable request as a registry table entry."""
    database = req_string(payload, "DatabaseName", min_len=1, max_len=255)
    table_input = opt_object(payload, "TableInput")
    name = req_string(table_input, "Name", path="tableInput.name", min_len=1, max_len=255)
    storage = opt_object(table_input, "StorageDescriptor", "tableInput.storageDescriptor")
    fields = glue_columns(storage.get("Columns"), "TableInput.StorageDescriptor.Columns")
    parameters = opt_object(table_input, "Parameters", "tableInput.parameters")
    time_field = _time_field(
        fields,
        parameters.get(TIME_FIELD_PARAMETER),
        f"TableInput.Parameters.{TIME_FIELD_PARAMETER}",
    )
    schema = Schema(name=name, fields=fields, time_field=time_field)
    return TableEntry(database=database, name=name, schema=schema, created_ms=now_ms)


def _schema(
    conversion: Mapping[str, Any], config: FirelakeConfig, registry: Registry
) -> tuple[Schema, str]:
    """The schema a delivery stream converts to, and its table name."""
    where = "ExtendedS3DestinationConfiguration.DataFormatConversionConfiguration"
    schema_cfg = opt_object(conversion, "SchemaConfiguration")
    table = schema_cfg.get("TableName")
    database = schema_cfg.get("DatabaseName") or DEFAULT_DATABASE
    if "Columns" in schema_cfg:
        fields = glue_columns(schema_cfg["Columns"], f"{where}.SchemaConfiguration.Columns")
        name = table if isinstance(table, str) and table else "inline"
        time_field = _time_field(
            fields, schema_cfg.get("TimeField"), f"{where}.SchemaConfiguration.TimeField"
        )
        return Schema(name=name, fields=fields, time_field=time_field), name
    if not isinstance(table, str) or not table:
        raise _refuse(
            f"{where}.SchemaConfiguration.TableName",
            "is required: name a Glue table created at this endpoint or a [schemas] entry "
            "of firelake.toml",
        )
    entry = registry.tables.get((database, table))
    if entry is not None:
        return entry.schema, table
    if table in config.schemas:
        return config.schemas[table], table
    known = sorted(f"{d}.{t}" for d, t in registry.tables) + sorted(config.schemas)
    raise _refuse(
        f"{where}.SchemaConfiguration.TableName",
        f"no Glue table {database}.{table} and no [schemas.{table}] in {config.source} "
        f"(known: {', '.join(known) or 'none'}; create one with glue.create_table)",
    )


def _formats(conversion: Mapping[str, Any]) -> str:
    """Check the JSON-in, Parquet-out formats; returns the Parquet codec."""
    where = "ExtendedS3DestinationConfiguration.DataFormatConversionConfiguration"
    if conversion.get("Enabled") is False:
        raise _refuse(f"{where}.Enabled", "must be true: Firelake sinks write Parquet only")
    deserializer = opt_object(opt_object(conversion, "InputFormatConfiguration"), "Deserializer")
    unknown = set(deserializer) - {"OpenXJsonSerDe", "HiveJsonSerDe"}
    if unknown:
        raise _refuse(
            f"{where}.InputFormatConfiguration.Deserializer",
            f"{sorted(unknown)[0]} is not supported (records are JSON: OpenXJsonSerDe or "
            "HiveJsonSerDe)",
        )
    serializer = opt_object(opt_object(conversion, "OutputFormatConfiguration"), "Serializer")
    if "OrcSerDe" in serializer:
        raise _refuse(
            f"{where}.OutputFormatConfiguration.Serializer.OrcSerDe",
            "ORC is not supported; Firelake writes Parquet (use ParquetSerDe)",
        )
    parquet = opt_object(serializer, "ParquetSerDe")
    codec = parquet.get("Compression", "SNAPPY")
    if codec not in _PARQUET_CODECS:
        raise _refuse(
            f"{where}.OutputFormatConfiguration.Serializer.ParquetSerDe.Compression",
            f"{codec!r} is not one of {', '.join(_PARQUET_CODECS)}",
        )
    return _PARQUET_CODECS[codec]


def _table_of_prefix(prefix: str, default: str) -> str:
    where = "ExtendedS3DestinationConfiguration.Prefix"
    if not prefix:
        table = default
    else:
        table, sep, rest = prefix.partition("/")
        if not sep or rest not in ("", _TIME_LAYOUT):
            raise _refuse(
                where,
                f"{prefix!r} cannot be mapped: Firelake writes <table>/dt=YYYY-MM-DD/hour=HH/; "
                f"use '<table>/' or '<table>/{_TIME_LAYOUT}'",
            )
    if not _TABLE_RE.match(table):
        raise _refuse(
            where,
            f"table {table!r} (first segment of Prefix, else the schema's table name) must be "
            "a letter followed by letters, digits and _",
        )
    return table


def _check_error_prefix(prefix: str, table: str) -> None:
    if not prefix:
        return
    base = f"_errors/{table}/"
    if prefix not in (base, base + _ERROR_TYPE):
        raise _refuse(
            "ExtendedS3DestinationConfiguration.ErrorOutputPrefix",
            f"{prefix!r} cannot be mapped: records that fail conversion go to "
            f"{base}format-conversion-failed/dt=YYYY-MM-DD/; use '{base}' or "
            f"'{base}{_ERROR_TYPE}'",
        )


_UNMAPPED_DESTINATIONS = (
    "S3DestinationConfiguration",
    "RedshiftDestinationConfiguration",
    "ElasticsearchDestinationConfiguration",
    "AmazonopensearchserviceDestinationConfiguration",
    "SplunkDestinationConfiguration",
    "HttpEndpointDestinationConfiguration",
    "AmazonOpenSearchServerlessDestinationConfiguration",
    "SnowflakeDestinationConfiguration",
    "IcebergDestinationConfiguration",
)


def _source_stream(payload: Mapping[str, Any], streams: Mapping[str, StreamConfig]) -> StreamConfig:
    source = opt_object(payload, "KinesisStreamSourceConfiguration")
    arn = source.get("KinesisStreamARN")
    where = "KinesisStreamSourceConfiguration.KinesisStreamARN"
    if not isinstance(arn, str):
        raise _refuse(where, "is required for DeliveryStreamType KinesisStreamAsSource")
    match = _ARN_STREAM_RE.match(arn)
    if match is None:
        raise _refuse(where, f"{arn!r} is not a Kinesis stream ARN")
    stream = streams.get(match[1])
    if stream is None:
        raise AwsError(
            400,
            "InvalidArgumentException",
            f"{where}: stream {match[1]!r} does not exist (streams: "
            f"{', '.join(sorted(streams)) or 'none'})",
        )
    return stream


def delivery_from_request(
    payload: Mapping[str, Any],
    config: FirelakeConfig,
    registry: Registry,
    streams: Mapping[str, StreamConfig],
    now_ms: int,
) -> DeliveryEntry:
    """Map a CreateDeliveryStream request onto a delivery entry, or refuse it.

    ``streams`` are the Firelake streams a KinesisStreamAsSource may name (declared and
    API-created).
    """
    name = req_string(
        payload,
        "DeliveryStreamName",
        min_len=1,
        max_len=64,
        pattern=re.compile(r"[a-zA-Z0-9_.-]+"),
    )
    kind = payload.get("DeliveryStreamType") or "DirectPut"
    if kind not in ("DirectPut", "KinesisStreamAsSource"):
        raise _refuse(
            "DeliveryStreamType",
            f"{kind!r} is not supported (DirectPut or KinesisStreamAsSource)",
        )
    for other in _UNMAPPED_DESTINATIONS:
        if payload.get(other) is not None:
            raise _refuse(
                other,
                "is not supported; Firelake delivers to its lake through "
                "ExtendedS3DestinationConfiguration with DataFormatConversionConfiguration",
            )
    dest = payload.get("ExtendedS3DestinationConfiguration")
    if not isinstance(dest, dict):
        raise _refuse(
            "ExtendedS3DestinationConfiguration",
            "is required: Firelake delivers to Parquet tables in its lake",
        )
    for unsupported, why in (
        ("DynamicPartitioningConfiguration", "partitioning is by dt=/hour= only"),
        ("ProcessingConfiguration", "Lambda processors are not run; use a Firelake router"),
        ("S3BackupConfiguration", "source record backup is not supported"),
    ):
        value = dest.get(unsupported)
        if value and (not isinstance(value, dict) or value.get("Enabled", True)):
            raise _refuse(f"ExtendedS3DestinationConfiguration.{unsupported}", why)
    if dest.get("S3BackupMode") not in (None, "Disabled"):
        raise _refuse(
            "ExtendedS3DestinationConfiguration.S3BackupMode",
            "must be Disabled: source record backup is not supported",
        )
    compression = dest.get("CompressionFormat", "UNCOMPRESSED")
    if compression != "UNCOMPRESSED":
        raise _refuse(
            "ExtendedS3DestinationConfiguration.CompressionFormat",
            f"{compression!r}: with format conversion it must be UNCOMPRESSED; set the Parquet "
            "codec in ParquetSerDe.Compression",
        )
    conversion = dest.get("DataFormatConversionConfiguration")
    if not isinstance(conversion, dict):
        raise _refuse(
            "ExtendedS3DestinationConfiguration.DataFormatConversionConfiguration",
            "is required: Firelake sinks convert JSON records to Parquet tables",
        )
    codec = _formats(conversion)
    schema, table_name = _schema(conversion, config, registry)
    prefix = opt_string(dest, "Prefix", max_len=1024) or ""
    table = _table_of_prefix(prefix, table_name)
    error_prefix = opt_string(dest, "ErrorOutputPrefix", max_len=1024) or ""
    _check_error_prefix(error_prefix, table)
    hints = opt_object(dest, "BufferingHints")
    size_mb = opt_int(hints, "SizeInMBs", low=1, high=128, path="bufferingHints.sizeInMBs") or 5
    interval = opt_int(
        hints, "IntervalInSeconds", low=0, high=900, path="bufferingHints.intervalInSeconds"
    )
    interval = 300 if interval is None else interval

    taken = {s.table: s.name for s in config.sinks.values()}
    taken.update({d.table: d.name for d in registry.deliveries.values() if d.name != name})
    if table in taken:
        raise AwsError(
            400,
            "ResourceInUseException",
            f"table {table!r} is written by {taken[table]!r} already; choose another Prefix",
        )
    if kind == "KinesisStreamAsSource":
        stream = _source_stream(payload, streams)
        if stream.schema:
            declared = config.schema_of(stream.name)
            if declared is not None and declared.name != schema.name:
                raise _refuse(
                    "DataFormatConversionConfiguration.SchemaConfiguration.TableName",
                    f"stream {stream.name!r} carries {declared.name!r} events; name that schema",
                )
        topic, partitions = stream.name, stream.partitions
    else:
        topic, partitions = f"{DELIVERY_TOPIC_PREFIX}{name}", DELIVERY_PARTITIONS
    if schema.time_field and schema.time_field not in {f.name for f in schema.fields}:
        raise _refuse("SchemaConfiguration", f"time field {schema.time_field!r} is not a column")
    if not all(f.type in FIELD_TYPES for f in schema.fields):  # pragma: no cover - by mapping
        raise _refuse("SchemaConfiguration", "unknown column type")
    echoed = {key: value for key, value in dest.items() if key not in ("CloudWatchLoggingOptions",)}
    echoed.setdefault("BufferingHints", {"SizeInMBs": size_mb, "IntervalInSeconds": interval})
    echoed.setdefault("CompressionFormat", "UNCOMPRESSED")
    echoed.setdefault("EncryptionConfiguration", {"NoEncryptionConfig": "NoEncryption"})
    if kind == "KinesisStreamAsSource":
        echoed["_KinesisStreamSourceConfiguration"] = payload.get(
            "KinesisStreamSourceConfiguration"
        )
    return DeliveryEntry(
        name=name,
        source=kind,
        topic=topic,
        partitions=partitions,
        table=table,
        schema=schema,
        max_bytes=size_mb * MiB,
        max_seconds=float(interval),
        compression=codec,
        prefix=prefix,
        error_prefix=error_prefix,
        destination=echoed,
        created_ms=now_ms,
    )

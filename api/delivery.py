"""Firehose CreateDeliveryStream and Glue CreateTable requests mapped onto Firelake.

A delivery stream becomes a :class:`streams.resources.DeliveryEntry`: a Kafka topic
(``DirectPut``) or a Firelake stream (``KinesisStreamAsSource``) read by a Parquet sink,
or — without DataFormatConversionConfiguration, or with it disabled, the most common
Firehose setup — by a JSON-lines sink (``format = "json"``) that writes the records as
they arrived, one a line, gzip or plain, under the Prefix.
The ``ExtendedS3DestinationConfiguration`` maps like this:

=================================  ==========================================================
Firehose                           Firelake
=================================  ==========================================================
BucketARN                          the lake root (any bucket name is accepted and echoed)
Prefix                             ``<table>/`` then the sink's ``prefix``: nothing (Firelake's
                                   ``dt=…/hour=…/`` layout) or that layout followed by more
                                   folders with Firehose expressions ``!{timestamp:…}`` and
                                   ``!{partitionKeyFromQuery:col}`` (the latter needs
                                   DynamicPartitioningConfiguration Enabled and names a
                                   scalar column of the schema); the dt=/hour= start is what
                                   the lake's catalog reads as a table
ErrorOutputPrefix                  sink ``error_prefix`` (``!{timestamp:…}``,
                                   ``!{firehose:error-output-type}``); it may not lead into a
                                   table's folder
BufferingHints SizeInMBs           sink ``max_bytes`` (1-128 MiB, default 5)
BufferingHints IntervalInSeconds   sink ``max_seconds`` (0-900, default 300)
CompressionFormat                  with format conversion UNCOMPRESSED (as on AWS; the
                                   Parquet codec is ParquetSerDe.Compression); without it
                                   GZIP (``.jsonl.gz``) or UNCOMPRESSED (``.jsonl``)
S3BackupMode Enabled               sink ``archive``: raw events as gzip JSON lines, under
                                   S3BackupConfiguration.Prefix if given (``archive_prefix``)
ProcessingConfiguration            only MetadataExtraction whose query reads top-level
                                   columns under their own names (``{col: .col}``): the sink
                                   reads partition keys from the columns itself
DataFormatConversionConfiguration  absent or Enabled false: a raw JSON-lines table, placed
                                   by arrival time; its columns are the Glue table of
                                   the same name (database ``default``) created at this
                                   endpoint before it, or a disabled conversion's
                                   SchemaConfiguration, else inferred when read.
                                   Enabled: JSON in (OpenX or Hive SerDe),
                                   Parquet out (ParquetSerDe; SNAPPY default, GZIP,
                                   UNCOMPRESSED). OpenXJsonSerDe CaseInsensitive (default
                                   true, as on AWS), ConvertDotsInJsonKeysToUnderscores and
                                   ColumnToJsonKeyMappings become the sink's key mapping
SchemaConfiguration                DatabaseName/TableName of a Glue table created at this
                                   endpoint (``glue.create_table``), else TableName of a
                                   ``[schemas.<name>]`` in firelake.toml; raw JSON clients
                                   may also give ``Columns: [{"Name", "Type"}]`` inline
=================================  ==========================================================

Glue column types map onto Firelake's (:func:`firelake_type`): tinyint/smallint/int/bigint
→ int, float/double → float, boolean → bool, string/varchar(n)/char(n) → string,
timestamp, date, decimal(p,s) (Hive's bare ``decimal`` is decimal(10,0)), array<T> →
list<T>, struct<a:T,…> and map<K,V>, nested freely.

The table is the first segment of Prefix, else the schema's table name. Anything that
cannot be mapped — other destinations, Lambda processors, ORC, Hive SerDe timestamp
formats, binary or interval columns, a prefix with other expressions — is refused with
``InvalidArgumentException`` naming the field and why. Time partitions follow Firehose:
by arrival time, unless the schema names a time field (config schemas' ``time_field``; a
Glue table's ``firelake.time_field`` parameter).

Pure logic: no Kafka.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from api.protocol import AwsError, opt_int, opt_object, opt_string, req_string
from firelake.config import FieldSpec, FirelakeConfig, Schema, StreamConfig
from firelake.grammars.field_types import FieldType, parse_field_type
from firelake.grammars.prefix import PrefixError, parse_prefix
from streams.resources import (
    DEFAULT_DATABASE,
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
    "TIME_LAYOUT",
    "delivery_from_request",
    "firelake_type",
    "glue_columns",
    "table_from_request",
]

MiB = 1024 * 1024

#: Glue table parameter naming the timestamp column that places rows in dt=/hour=.
TIME_FIELD_PARAMETER = "firelake.time_field"

#: Glue / Hive scalar column types and the Firelake type each maps to; ``decimal``,
#: ``array``, ``struct`` and ``map`` take parameters (see :func:`firelake_type`).
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
    "boolean": "bool",
    "timestamp": "timestamp",
    "date": "date",
    "decimal": "decimal",
    "array": "list",
    "struct": "struct",
    "map": "map",
}

_GLUE_TOKEN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*|\d+|[<>(),:])")


def firelake_type(glue: str) -> FieldType:
    """A Glue / Hive column type such as ``array<struct<a:decimal(5,2)>>`` as Firelake's.

    Hive's grammar is Firelake's with other type names, so the type's words are renamed
    and the result is parsed by :func:`firelake.grammars.field_types.parse_field_type`, which also
    refuses what Hive allows and Firelake does not (decimal(40,2), non-scalar map keys…).
    ValueError names the part that has no Firelake type.
    """
    tokens = [m.group(1) for m in _GLUE_TOKEN.finditer(glue)]
    if "".join(tokens) != re.sub(r"\s+", "", glue):
        raise ValueError(f"cannot read type {glue!r}")
    out: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1 : index + 4]
        index += 1
        if not (token[0].isalpha() or token[0] == "_") or following[:1] == [":"]:
            out.append(token)  # punctuation, a number, or a struct field's name
            continue
        kind = GLUE_TYPES.get(token.lower())
        if kind is None:
            raise ValueError(
                f"{token!r} has no Firelake column type (supported: {', '.join(GLUE_TYPES)})"
            )
        out.append(kind)
        has_length = following[:1] == ["("] and following[1:2] != [] and following[1].isdigit()
        if token.lower() in ("varchar", "char") and has_length and following[2:] == [")"]:
            index += 3  # varchar(n) / char(n): Firelake strings have no length limit
        elif kind == "decimal" and not following[:1] == ["("]:
            out.extend(["(", "10", ",", "0", ")"])  # Hive's bare decimal is decimal(10,0)
        elif kind == "decimal" and has_length and following[2:] == [")"]:
            out.extend(["(", following[1], ",", "0", ")"])  # decimal(p) has scale 0
            index += 3
    return parse_field_type(" ".join(out))


_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,100}$")
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
        try:
            mapped = firelake_type(kind)
        except ValueError as exc:
            raise _refuse(f"{at}.Type", f"type {kind!r}: {exc}") from None
        fields.append(FieldSpec(name, str(mapped)))
    return tuple(fields)


def _time_field(fields: tuple[FieldSpec, ...], value: Any, where: str) -> str:
    if value in (None, ""):
        return ""
    spec = next((f for f in fields if f.name == value), None)
    if spec is None or spec.type.kind != "timestamp":
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


def _formats(conversion: Mapping[str, Any], schema: Schema) -> tuple[str, dict[str, Any]]:
    """Check the JSON-in, Parquet-out formats; the Parquet codec and the sink's key mapping."""
    where = "ExtendedS3DestinationConfiguration.DataFormatConversionConfiguration"
    deserializer = opt_object(opt_object(conversion, "InputFormatConfiguration"), "Deserializer")
    unknown = set(deserializer) - {"OpenXJsonSerDe", "HiveJsonSerDe"}
    if unknown:
        raise _refuse(
            f"{where}.InputFormatConfiguration.Deserializer",
            f"{sorted(unknown)[0]} is not supported (records are JSON: OpenXJsonSerDe or "
            "HiveJsonSerDe)",
        )
    hive = opt_object(deserializer, "HiveJsonSerDe")
    if hive.get("TimestampFormats"):
        raise _refuse(
            f"{where}.InputFormatConfiguration.Deserializer.HiveJsonSerDe.TimestampFormats",
            "custom formats are not supported: timestamps are ISO-8601 text",
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
    mapping: dict[str, Any] = {}
    if "OpenXJsonSerDe" in deserializer:
        mapping = _openx(
            opt_object(deserializer, "OpenXJsonSerDe"),
            schema,
            f"{where}.InputFormatConfiguration.Deserializer.OpenXJsonSerDe",
        )
    return _PARQUET_CODECS[codec], mapping


def _openx(openx: Mapping[str, Any], schema: Schema, where: str) -> dict[str, Any]:
    """OpenX JSON SerDe settings as the sink's key mapping settings."""
    flags: dict[str, Any] = {}
    # AWS's defaults: CaseInsensitive true, ConvertDotsInJsonKeysToUnderscores false.
    for key, setting, default in (
        ("CaseInsensitive", "case_insensitive", True),
        ("ConvertDotsInJsonKeysToUnderscores", "dots_to_underscores", False),
    ):
        value = openx.get(key, default)
        if not isinstance(value, bool):
            raise _refuse(f"{where}.{key}", f"must be true or false, got {value!r}")
        flags[setting] = value
    mappings = openx.get("ColumnToJsonKeyMappings") or {}
    if not isinstance(mappings, dict):
        raise _refuse(f"{where}.ColumnToJsonKeyMappings", "must be an object of column: key")
    columns = {f.name for f in schema.fields}
    for column, key in mappings.items():
        if column not in columns:
            raise _refuse(
                f"{where}.ColumnToJsonKeyMappings.{column}",
                f"{column!r} is not a column of {schema.name!r}",
            )
        if not isinstance(key, str) or not key:
            raise _refuse(f"{where}.ColumnToJsonKeyMappings.{column}", "must be a JSON key")
    flags["column_to_json_key"] = dict(mappings)
    return flags


def _table_of_prefix(prefix: str, default: str) -> tuple[str, str]:
    """The table a Prefix names and what follows it ("" = Firelake's dt=/hour= layout)."""
    where = "ExtendedS3DestinationConfiguration.Prefix"
    rest = ""
    if not prefix:
        table = default
    else:
        table, sep, rest = prefix.partition("/")
        if not sep:
            raise _refuse(where, f"{prefix!r} must be '<table>/' and optional folders after it")
    if not _TABLE_RE.match(table):
        raise _refuse(
            where,
            f"table {table!r} (first segment of Prefix, else the schema's table name) must be "
            "a letter followed by letters, digits and _",
        )
    return table, rest


_EXPRESSIONS = {
    "timestamp": "!{timestamp:...}",
    "field": "!{partitionKeyFromQuery:...}",
    "error_type": "!{firehose:error-output-type}",
    "table": "!{table}",
}


def _template(text: str, where: str, allowed: tuple[str, ...]) -> str:
    """A prefix template the sink can render with only the ``allowed`` expressions."""
    try:
        parsed = parse_prefix(text)
    except PrefixError as exc:
        raise _refuse(where, str(exc)) from None
    for part in parsed.parts:
        if part.kind not in ("literal", *allowed):
            raise _refuse(where, f"{text!r}: {_EXPRESSIONS[part.kind]} is not allowed here")
    return text


#: What a data prefix starts with: the lake's catalog (``queries.catalog``) reads a table as
#: ``dt=…/hour=…/`` folders, with any further Hive folders (field partitions) below them.
TIME_LAYOUT = "dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/"


def _data_prefix(rest: str, schema: Schema, dynamic: bool) -> str:
    """The sink's prefix from what follows ``<table>/`` in Prefix."""
    where = "ExtendedS3DestinationConfiguration.Prefix"
    if not rest:
        return ""
    text = _template(rest, where, ("timestamp", "field"))
    for column in parse_prefix(text).fields:
        if not dynamic:
            raise _refuse(
                where,
                f"!{{partitionKeyFromQuery:{column}}} needs "
                "DynamicPartitioningConfiguration.Enabled = true",
            )
        declared = schema.field_named(column)
        if declared is None:
            raise _refuse(where, f"partition key {column!r} is not a column of {schema.name!r}")
        if declared.type.items:
            raise _refuse(where, f"partition key {column!r} is {declared.type}, not a scalar")
    folders = [part.split("=", 1)[0] for part in text.strip("/").split("/")]
    if (
        "dt" not in folders
        or "hour" not in folders
        or any("=" not in part for part in text.strip("/").split("/"))
    ):
        raise _refuse(
            where,
            f"'<table>/{text}' cannot be queried: the lake's tables are Hive folders "
            f"(key=value) including {TIME_LAYOUT}, e.g. "
            f"<table>/region=!{{partitionKeyFromQuery:region}}/{TIME_LAYOUT}",
        )
    return text


def _outside_tables(text: str, where: str, tables: set[str]) -> None:
    # Error and archive files are JSON lines: inside a table's folder they would be mixed
    # with its Parquet files (and removed with the table).
    first = text.split("/", 1)[0]
    if first in tables:
        raise _refuse(where, f"{text!r} leads into table {first!r}'s folder; use e.g. '_errors/'")


_EXTRACTION = re.compile(r"\s*\{\s*(.*?)\s*\}\s*", re.S)
_EXTRACTED_KEY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*")


def _check_processing(dest: Mapping[str, Any]) -> None:
    """Processors: only a MetadataExtraction that reads top-level columns by their names."""
    where = "ExtendedS3DestinationConfiguration.ProcessingConfiguration"
    processing = dest.get("ProcessingConfiguration")
    if not processing:
        return
    if not isinstance(processing, dict):
        raise _refuse(where, "must be an object")
    if not processing.get("Enabled", True):
        return
    for i, processor in enumerate(processing.get("Processors") or []):
        at = f"{where}.Processors[{i}]"
        kind = processor.get("Type") if isinstance(processor, dict) else None
        if kind == "AppendDelimiterToRecord":
            continue  # records are lines already
        if kind != "MetadataExtraction":
            raise _refuse(f"{at}.Type", f"{kind!r} processors are not run; use a Firelake router")
        for j, parameter in enumerate(processor.get("Parameters") or []):
            if not isinstance(parameter, dict):
                raise _refuse(f"{at}.Parameters[{j}]", "must be an object")
            if parameter.get("ParameterName") != "MetadataExtractionQuery":
                continue
            query = str(parameter.get("ParameterValue", ""))
            body = _EXTRACTION.fullmatch(query)
            pairs = [_EXTRACTED_KEY.fullmatch(p) for p in body[1].split(",")] if body else [None]
            # The sink reads !{partitionKeyFromQuery:k} from column k, so the query may only
            # name each column under its own name; anything else would be silently ignored.
            if not all(m is not None and m[1] == m[2] for m in pairs):
                raise _refuse(
                    f"{at}.Parameters[{j}].ParameterValue",
                    f"{query!r}: partition keys are read from top-level columns of the same "
                    "name; write the query as {col: .col, ...}",
                )


def _backup(dest: Mapping[str, Any]) -> tuple[bool, str]:
    """S3BackupMode / S3BackupConfiguration as the sink's (archive, archive_prefix)."""
    mode = dest.get("S3BackupMode") or "Disabled"
    if mode not in ("Disabled", "Enabled"):
        raise _refuse(
            "ExtendedS3DestinationConfiguration.S3BackupMode", f"{mode!r}: Enabled or Disabled"
        )
    if mode == "Disabled":
        return False, ""
    where = "ExtendedS3DestinationConfiguration.S3BackupConfiguration"
    backup = opt_object(dest, "S3BackupConfiguration")
    compression = backup.get("CompressionFormat", "GZIP")
    if compression not in ("GZIP", "UNCOMPRESSED"):
        raise _refuse(
            f"{where}.CompressionFormat", f"{compression!r}: the archive is gzip JSON lines"
        )
    prefix = backup.get("Prefix") or ""
    if not isinstance(prefix, str):
        raise _refuse(f"{where}.Prefix", "must be a string")
    if not prefix:
        return True, ""
    # The archive is placed by arrival time only: a partition key has no value there.
    return True, _template(prefix, f"{where}.Prefix", ("timestamp", "table"))


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


#: Firehose CompressionFormat of a delivery stream without format conversion -> sink codec.
_RAW_CODECS = {"GZIP": "gzip", "UNCOMPRESSED": "none"}


def _raw_json(
    compression: Any,
    conversion: Any,
    name: str,
    prefix: str,
    archive: bool,
    config: FirelakeConfig,
    registry: Registry,
) -> tuple[Schema, str, str, str]:
    """A delivery without format conversion: (schema, codec, table, rest of Prefix).

    The schema has no fields when no Glue table is known: the columns are inferred.
    """
    where = "ExtendedS3DestinationConfiguration"
    if compression not in _RAW_CODECS:
        raise _refuse(
            f"{where}.CompressionFormat",
            f"{compression!r} is not supported without format conversion: "
            f"{' or '.join(_RAW_CODECS)} (records are written as JSON lines)",
        )
    if archive:
        raise _refuse(
            f"{where}.S3BackupMode",
            "Enabled needs format conversion: without it the table is the raw records",
        )
    table, rest = _table_of_prefix(prefix, re.sub(r"[^A-Za-z0-9_]", "_", name))
    if isinstance(conversion, dict) and opt_object(conversion, "SchemaConfiguration"):
        schema, _ = _schema(conversion, config, registry)
    else:
        glue = registry.tables.get((DEFAULT_DATABASE, table))
        schema = glue.schema if glue is not None else Schema(name=table, fields=())
    # Firehose places unconverted records by arrival time, whatever the schema says.
    schema = Schema(name=schema.name, fields=schema.fields, time_field="")
    return schema, _RAW_CODECS[compression], table, rest


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
    dynamic_cfg = opt_object(dest, "DynamicPartitioningConfiguration")
    dynamic = dynamic_cfg.get("Enabled", False)
    if not isinstance(dynamic, bool):
        raise _refuse(
            "ExtendedS3DestinationConfiguration.DynamicPartitioningConfiguration.Enabled",
            f"must be true or false, got {dynamic!r}",
        )
    _check_processing(dest)
    archive, archive_prefix = _backup(dest)
    compression = dest.get("CompressionFormat", "UNCOMPRESSED")
    conversion = dest.get("DataFormatConversionConfiguration")
    prefix = opt_string(dest, "Prefix", max_len=1024) or ""
    if not isinstance(conversion, dict) or conversion.get("Enabled") is False:
        raw = _raw_json(compression, conversion, name, prefix, archive, config, registry)
        schema, codec, table, rest = raw
        key_mapping: dict[str, Any] = {}
        sink_format = "json"
    else:
        sink_format = "parquet"
        if compression != "UNCOMPRESSED":
            raise _refuse(
                "ExtendedS3DestinationConfiguration.CompressionFormat",
                f"{compression!r}: with format conversion it must be UNCOMPRESSED; set the "
                "Parquet codec in ParquetSerDe.Compression",
            )
        schema, table_name = _schema(conversion, config, registry)
        codec, key_mapping = _formats(conversion, schema)
        table, rest = _table_of_prefix(prefix, table_name)
    sink_prefix = _data_prefix(rest, schema, dynamic)
    error_prefix = opt_string(dest, "ErrorOutputPrefix", max_len=1024) or ""
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
    tables = {table, *taken}
    if error_prefix:
        where = "ExtendedS3DestinationConfiguration.ErrorOutputPrefix"
        _template(error_prefix, where, ("timestamp", "error_type"))
        _outside_tables(error_prefix, where, tables)
    if archive_prefix:
        _outside_tables(
            archive_prefix,
            "ExtendedS3DestinationConfiguration.S3BackupConfiguration.Prefix",
            tables,
        )
    if kind == "KinesisStreamAsSource":
        stream = _source_stream(payload, streams)
        if stream.schema and sink_format == "parquet":
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
        sink_prefix=sink_prefix,
        sink_error_prefix=error_prefix,
        case_insensitive=key_mapping.get("case_insensitive", False),
        dots_to_underscores=key_mapping.get("dots_to_underscores", False),
        column_to_json_key=key_mapping.get("column_to_json_key", {}),
        archive=archive,
        archive_prefix=archive_prefix,
        format=sink_format,
    )

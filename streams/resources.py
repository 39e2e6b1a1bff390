"""What the AWS APIs create at runtime, as registry entries, and how they join the config.

Streams (Kinesis CreateStream), delivery streams (Firehose CreateDeliveryStream) and Glue
tables (the schemas delivery streams convert to) are entries of the registry
(:mod:`streams.registry`): a compacted Kafka topic whose key is ``stream/<name>``,
``delivery/<name>`` or ``table/<database>/<name>`` and whose value is the entry as JSON
(a tombstone deletes it). :class:`Registry` is the in-memory state a reader folds those
messages into; :func:`registry_config` merges it into a :class:`FirelakeConfig` so that
routers and sinks run on API-created streams exactly as on declared ones.

Pure logic: no Kafka.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from firelake.config import FieldSpec, FirelakeConfig, Schema, SinkConfig, StreamConfig

__all__ = [
    "DEFAULT_DATABASE",
    "DELIVERY_PARTITIONS",
    "DELIVERY_TOPIC_PREFIX",
    "DeliveryEntry",
    "Registry",
    "StreamEntry",
    "TableEntry",
    "delivery_key",
    "registry_config",
    "schema_from_json",
    "schema_to_json",
    "stream_key",
    "table_key",
]

#: Topic of a DirectPut delivery stream: ``firehose-<name>`` (Kinesis stream names may not
#: start with it, so the two namespaces never meet).
DELIVERY_TOPIC_PREFIX = "firehose-"
#: Partitions of a DirectPut delivery stream's topic (its sink's parallelism).
DELIVERY_PARTITIONS = 4
#: Glue database of a table lookup that names none.
DEFAULT_DATABASE = "default"


def stream_key(name: str) -> str:
    return f"stream/{name}"


def delivery_key(name: str) -> str:
    return f"delivery/{name}"


def table_key(database: str, name: str) -> str:
    return f"table/{database}/{name}"


def schema_to_json(schema: Schema) -> dict[str, Any]:
    """A schema as plain JSON data."""
    return {
        "name": schema.name,
        "fields": [[f.name, str(f.type), f.required] for f in schema.fields],
        "time_field": schema.time_field,
    }


def schema_from_json(data: Mapping[str, Any]) -> Schema:
    """The inverse of :func:`schema_to_json`."""
    return Schema(
        name=str(data["name"]),
        fields=tuple(FieldSpec(str(n), str(t), bool(r)) for n, t, r in data["fields"]),
        time_field=str(data.get("time_field", "")),
    )


@dataclass(frozen=True)
class StreamEntry:
    """A stream created through the Kinesis API."""

    name: str
    partitions: int
    retention_hours: int = 24
    envelope: str = "batch"
    created_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StreamEntry:
        return cls(
            name=str(data["name"]),
            partitions=int(data["partitions"]),
            retention_hours=int(data.get("retention_hours", 24)),
            envelope=str(data.get("envelope", "batch")),
            created_ms=int(data.get("created_ms", 0)),
        )

    def stream_config(self) -> StreamConfig:
        """The stream as a config section."""
        return StreamConfig(
            name=self.name,
            partitions=self.partitions,
            retention_hours=self.retention_hours,
            envelope=self.envelope,
        )


@dataclass(frozen=True)
class TableEntry:
    """A Glue table (CreateTable): the schema delivery streams convert records to."""

    database: str
    name: str
    schema: Schema
    created_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "name": self.name,
            "schema": schema_to_json(self.schema),
            "created_ms": self.created_ms,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TableEntry:
        return cls(
            database=str(data["database"]),
            name=str(data["name"]),
            schema=schema_from_json(data["schema"]),
            created_ms=int(data.get("created_ms", 0)),
        )


@dataclass(frozen=True)
class DeliveryEntry:
    """A Firehose delivery stream: a topic (or a Firelake stream) into a Parquet table."""

    name: str
    source: str  # "DirectPut" or "KinesisStreamAsSource"
    topic: str  # the Kafka topic its sink reads
    partitions: int
    table: str
    schema: Schema
    max_bytes: int
    max_seconds: float
    compression: str
    prefix: str = ""
    error_prefix: str = ""
    destination: Mapping[str, Any] = field(default_factory=dict)
    created_ms: int = 0
    # What the request sets on the sink (api.delivery maps them; "" keeps the default).
    sink_prefix: str = ""
    sink_error_prefix: str = ""
    case_insensitive: bool = False
    dots_to_underscores: bool = False
    column_to_json_key: Mapping[str, str] = field(default_factory=dict)
    archive: bool = False
    archive_prefix: str = ""
    #: "parquet", or "json": no format conversion, records written as they arrived (a
    #: schema without fields then means the columns are inferred when read).
    format: str = "parquet"

    @property
    def sink_name(self) -> str:
        """Name of the sink that writes this delivery stream (``firehose-<name>``)."""
        return f"{DELIVERY_TOPIC_PREFIX}{self.name}"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["schema"] = schema_to_json(self.schema)
        data["destination"] = dict(self.destination)
        data["column_to_json_key"] = dict(self.column_to_json_key)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeliveryEntry:
        return cls(
            name=str(data["name"]),
            source=str(data["source"]),
            topic=str(data["topic"]),
            partitions=int(data["partitions"]),
            table=str(data["table"]),
            schema=schema_from_json(data["schema"]),
            max_bytes=int(data["max_bytes"]),
            max_seconds=float(data["max_seconds"]),
            compression=str(data["compression"]),
            prefix=str(data.get("prefix", "")),
            error_prefix=str(data.get("error_prefix", "")),
            destination=dict(data.get("destination") or {}),
            created_ms=int(data.get("created_ms", 0)),
            # Entries written before these settings existed read as the defaults.
            sink_prefix=str(data.get("sink_prefix", "")),
            sink_error_prefix=str(data.get("sink_error_prefix", "")),
            case_insensitive=bool(data.get("case_insensitive", False)),
            dots_to_underscores=bool(data.get("dots_to_underscores", False)),
            column_to_json_key={
                str(k): str(v) for k, v in (data.get("column_to_json_key") or {}).items()
            },
            archive=bool(data.get("archive", False)),
            archive_prefix=str(data.get("archive_prefix", "")),
            format=str(data.get("format", "parquet")),
        )

    def sink_config(self) -> SinkConfig:
        """The sink of this delivery stream as a config section."""
        templates = {
            "prefix": self.sink_prefix,
            "error_prefix": self.sink_error_prefix,
            "archive_prefix": self.archive_prefix,
        }
        return SinkConfig(
            name=self.sink_name,
            stream=self.topic,
            table=self.table,
            max_bytes=self.max_bytes,
            max_seconds=self.max_seconds,
            compression=self.compression,
            case_insensitive=self.case_insensitive,
            dots_to_underscores=self.dots_to_underscores,
            column_to_json_key=types.MappingProxyType(dict(self.column_to_json_key)),
            archive=self.archive,
            format="json" if self.format == "json" else "parquet",
            **{key: value for key, value in templates.items() if value},
        )


@dataclass
class Registry:
    """The registry's current entries, folded from its messages in offset order."""

    streams: dict[str, StreamEntry] = field(default_factory=dict)
    deliveries: dict[str, DeliveryEntry] = field(default_factory=dict)
    tables: dict[tuple[str, str], TableEntry] = field(default_factory=dict)
    #: Messages that could not be read (a newer writer's format): key -> reason.
    skipped: dict[str, str] = field(default_factory=dict)

    def apply(self, key: str, value: bytes | None) -> None:
        """Fold one registry message in; a malformed one is recorded in ``skipped``."""
        kind, _, name = key.partition("/")
        self.skipped.pop(key, None)
        try:
            data = orjson.loads(value) if value else None
            if kind == "stream":
                if data is None:
                    self.streams.pop(name, None)
                else:
                    self.streams[name] = StreamEntry.from_json(data)
            elif kind == "delivery":
                if data is None:
                    self.deliveries.pop(name, None)
                else:
                    self.deliveries[name] = DeliveryEntry.from_json(data)
            elif kind == "table":
                database, _, table = name.partition("/")
                if data is None:
                    self.tables.pop((database, table), None)
                else:
                    self.tables[(database, table)] = TableEntry.from_json(data)
            else:
                self.skipped[key] = f"unknown entry kind {kind!r}"
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self.skipped[key] = f"{type(exc).__name__}: {exc}"


def registry_config(config: FirelakeConfig, registry: Registry) -> FirelakeConfig:
    """The configuration with the registry's streams, delivery topics and sinks added.

    Declared streams win over registry entries of the same name. A delivery stream adds
    its schema (named after its sink), its DirectPut topic as a stream declaring that
    schema, and its sink. A KinesisStreamAsSource delivery stream reads a Firelake stream
    that may declare no schema; that stream is given the delivery's schema *in the
    returned config only* (the sink needs it) — run the ingest and routers on the original
    configuration.
    """
    schemas = dict(config.schemas)
    streams = dict(config.streams)
    sinks = dict(config.sinks)
    for name, entry in registry.streams.items():
        streams.setdefault(name, entry.stream_config())
    for entry in registry.deliveries.values():
        schema = dataclasses.replace(entry.schema, name=entry.sink_name)
        glue = registry.tables.get((DEFAULT_DATABASE, entry.table))
        if entry.format == "json" and not schema.fields and glue is not None:
            # A raw JSON delivery reads its columns from the Glue table of its name, as
            # Athena's JSON SerDe does at query time: one created after the delivery
            # stream applies too. Unconverted records are placed by arrival time.
            schema = Schema(name=entry.sink_name, fields=glue.schema.fields, time_field="")
        if schema.fields:  # a raw JSON delivery without a Glue table declares none
            schemas[schema.name] = schema
        source = streams.get(entry.topic)
        if source is None:
            streams[entry.topic] = StreamConfig(
                name=entry.topic,
                partitions=entry.partitions,
                retention_hours=24,
                envelope="batch",
                schema=schema.name if schema.fields else "",
            )
        elif not source.schema and schema.fields:
            streams[entry.topic] = dataclasses.replace(source, schema=schema.name)
        sinks.setdefault(entry.sink_name, entry.sink_config())
    return dataclasses.replace(
        config,
        schemas=types.MappingProxyType(schemas),
        streams=types.MappingProxyType(streams),
        sinks=types.MappingProxyType(sinks),
    )

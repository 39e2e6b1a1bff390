"""Firelake configuration: one TOML file, typed, every field with a default and a description.

The file is parsed with the standard ``tomllib``. Every section maps onto a frozen dataclass
below; each field carries its one-line description in ``metadata["doc"]`` so that
``firelake config`` can print them and errors can name the key. A bad file is refused at
start with :class:`ConfigError`, which names the file, the key and the reason.

Environment variables override the file: ``FIRELAKE_KAFKA_BOOTSTRAP`` (the Kafka
bootstrap address), ``FIRELAKE_LAKE`` (the lake root) and ``FIRELAKE_QUERY_HOST`` (the
address the query service binds: ``0.0.0.0`` in a container).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from firelake.errors import TerminalError
from firelake.grammars.aggregates import AggregateError, parse_aggregate
from firelake.grammars.field_types import FieldType, parse_field_type
from firelake.grammars.patterns import PatternError, compile_pattern
from firelake.grammars.prefix import PrefixError, parse_prefix

__all__ = [
    "DLQ_SCHEMA",
    "EXAMPLES_DIR",
    "EXAMPLE_CONFIG",
    "JSON_COMPRESSIONS",
    "WINDOW_RESULT_COLUMNS",
    "AgentEngine",
    "AppConfig",
    "ConfigError",
    "EnvelopeMode",
    "FieldSpec",
    "FirelakeConfig",
    "IngestConfig",
    "KafkaConfig",
    "LakeConfig",
    "MetricsConfig",
    "QueryConfig",
    "RouterConfig",
    "Schema",
    "SinkConfig",
    "SinkFormat",
    "StartingPosition",
    "StreamConfig",
    "TransformMode",
    "UnknownFields",
    "UnknownStreamError",
    "WindowConfig",
    "describe",
    "example_config_path",
    "load_config",
    "parse_config",
    "read_config_data",
    "starting_timestamp_ms",
    "worker_ports",
]

MiB = 1024 * 1024

#: The seed systems' example folders (``firelake up --example NAME``).
EXAMPLES_DIR = Path(__file__).parent / "examples"
#: The Yle clickstream configuration that ships with Firelake and runs when no file is given.
EXAMPLE_CONFIG = EXAMPLES_DIR / "yle" / "firelake.toml"

#: Router runtimes (``routers.N.engine``): the transactional aiokafka worker (the default,
#: exactly-once output) and a Faust agent (at-least-once output).
AgentEngine = Literal["transactional", "faust"]
#: How a stream's messages are framed: envelopes of many events, or one event a message.
EnvelopeMode = Literal["batch", "single"]
#: Where a router starts reading (Lambda event source mapping's StartingPosition).
StartingPosition = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]
#: How a user transform is called: with a list of events, or with one event.
TransformMode = Literal["batch", "event"]
#: What a sink does with event fields its schema does not declare.
UnknownFields = Literal["drop", "keep"]
#: What a sink writes: Parquet (Firehose with format conversion) or the records as they
#: arrived, as JSON lines (Firehose without it).
SinkFormat = Literal["parquet", "json"]
#: Codecs of a JSON-lines sink (Firehose CompressionFormat GZIP / UNCOMPRESSED).
JSON_COMPRESSIONS = ("gzip", "none")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,100}$")


class ConfigError(TerminalError, ValueError):
    """A configuration file that cannot be used: names the file, the key and the reason."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        super().__init__(f"{source}: {key}: {reason}")


class UnknownStreamError(ConfigError, LookupError):
    """A router, sink or window names a stream the file does not declare.

    Commands that can see the registry of API-created streams catch it and look there.
    """

    def __init__(self, source: str, key: str, stream: str, known: typing.Iterable[str]) -> None:
        super().__init__(
            source, key, f"unknown stream {stream!r} (declared: {', '.join(sorted(known))})"
        )
        self.stream = stream


def setting(default: Any, doc: str) -> Any:
    """A dataclass field with a default and its one-line description."""
    if isinstance(default, (dict, list, tuple)) and not isinstance(default, tuple):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class KafkaConfig:
    """Where the Kafka broker is, or how to start the embedded one."""

    bootstrap: str = setting(
        "", "Bootstrap address of an existing broker; empty starts a local one."
    )
    port: int = setting(9092, "Port of the local broker started by Firelake (127.0.0.1).")
    data_dir: str = setting(".firelake/kafka", "Data and log folder of the local broker.")
    client_id: str = setting("firelake", "Client id prefix used by every Firelake Kafka client.")
    replication_factor: int = setting(
        0, "Replicas of every topic Firelake creates; 0: 1 below 3 brokers, else 3."
    )


@dataclass(frozen=True)
class IngestConfig:
    """The HTTP ingest service (Kinesis PutRecords semantics)."""

    host: str = setting("127.0.0.1", "Address the ingest service binds.")
    port: int = setting(4566, "Port of the ingest service (LocalStack's, which AWS users expect).")
    max_records: int = setting(500, "Most records in one request (Kinesis PutRecords: 500).")
    max_record_bytes: int = setting(MiB, "Largest record's data in bytes (Kinesis: 1 MiB).")
    max_request_bytes: int = setting(5 * MiB, "Largest request body in bytes (Kinesis: 5 MiB).")
    linger_ms: int = setting(5, "How long the Kafka producer waits to fill a batch, in ms.")
    max_inflight_requests: int = setting(
        16, "Requests parsed and produced at once; more wait slot_wait_seconds, then get 503."
    )
    slot_wait_seconds: float = setting(5.0, "How long a request waits for an in-flight slot.")
    answer_deadline_seconds: float = setting(
        10.0,
        "Every request is answered within this many seconds of its headers: records Kafka "
        "has not confirmed by then are reported failed (InternalFailure), retry them.",
    )
    header_timeout_seconds: float = setting(
        10.0, "A connection that sends no complete request headers for this long is closed."
    )
    aws_access_keys: str = setting(
        "", "Access keys the AWS endpoint accepts, 'AKID[:SECRET],...'; empty accepts any."
    )
    shard_write_quota: bool = setting(
        False, "Enforce Kinesis' per-shard write quota (1 MiB/s, 1 000 records/s)."
    )
    workers: int = setting(
        1,
        "Ingest processes `firelake up` runs on the one port (SO_REUSEPORT; Linux). Each "
        "holds 1/workers of the shard write quota; the in-flight bound is per process.",
    )


@dataclass(frozen=True)
class LakeConfig:
    """Where the lake lives."""

    root: str = setting(
        "lake", "Lake root: a local folder (relative to the config file) or s3://bucket/prefix."
    )
    s3_endpoint_url: str = setting("", "S3 endpoint of an s3:// root ('' = AWS; MinIO, moto).")
    s3_region: str = setting("us-east-1", "S3 region of an s3:// root.")
    s3_access_key_id: str = setting("", "S3 access key ('' = boto3's default credential chain).")
    s3_secret_access_key: str = setting("", "S3 secret key ('' = boto3's default chain).")


@dataclass(frozen=True)
class MetricsConfig:
    """Where the services' Prometheus ``/metrics`` endpoints are, on 127.0.0.1.

    The ingest serves its own on the ingest port. The sinks process (``firelake sink
    --all``, which ``firelake up`` runs) takes ``base_port``; each router without a
    ``metrics_port`` of its own takes the next ``max(workers, 2)`` free ports after it, in
    file order, skipping ports other services and routers use. Being derived from the
    configuration, ``firelake status`` and the dashboard find them without being told.
    """

    base_port: int = setting(
        9560,
        "/metrics of the sinks process; routers without metrics_port take the next free "
        "ports, in file order (0: none assigned, routers without metrics_port serve none).",
    )


@dataclass(frozen=True)
class QueryConfig:
    """The SQL layer over the lake."""

    threads: int = setting(2, "DuckDB worker threads.")
    max_rows: int = setting(10_000, "Most rows a query returns (results are held in memory).")
    timeout_seconds: float = setting(30.0, "A query running longer is stopped (sandbox).")
    memory_limit_mb: int = setting(1024, "Memory a query may use, in MiB (DuckDB memory_limit).")
    max_bytes_scanned: int = setting(
        0, "Per-query bytes-scanned cutoff, like an Athena workgroup's (0: none)."
    )
    host: str = setting("127.0.0.1", "Address the HTTP query service binds.")
    port: int = setting(8080, "Port of the HTTP query service (0: any free port).")
    api_keys: str = setting(
        "", "Keys the query service requires, 'KEY:read,KEY2:admin'; empty: no key needed."
    )
    saved_dir: str = setting(
        "saved_queries", "Folder of saved queries (*.sql), relative to the config file."
    )


@dataclass(frozen=True)
class FieldSpec:
    """One column of a schema."""

    name: str
    type: FieldType
    required: bool = False

    def __post_init__(self) -> None:
        # Written by hand (tests, built-in schemas) as text: parsed once, here.
        if isinstance(self.type, str):
            object.__setattr__(self, "type", parse_field_type(self.type))


@dataclass(frozen=True)
class Schema:
    """The columns of a typed stream and of the table its sink writes."""

    name: str = setting("", "Schema name (the key under [schemas]).")
    fields: tuple[FieldSpec, ...] = setting((), "Columns in order.")
    time_field: str = setting("", "Timestamp column that places an event in dt=/hour= partitions.")

    def field_named(self, name: str) -> FieldSpec | None:
        for spec in self.fields:
            if spec.name == name:
                return spec
        return None

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.fields if spec.required)


@dataclass(frozen=True)
class StreamConfig:
    """A Kafka topic Firelake owns (a Kinesis stream: partitions are shards)."""

    name: str = setting("", "Stream (topic) name: the key under [streams].")
    partitions: int = setting(4, "Number of partitions (Kinesis shards).")
    retention_hours: int = setting(
        168, "How long Kafka keeps records, in hours (Kinesis: 24-8760)."
    )
    envelope: EnvelopeMode = setting(
        "batch", "'batch': one message holds many NDJSON events; 'single': one."
    )
    schema: str = setting("", "Schema of the events on this stream (key under [schemas]), if any.")
    replication_factor: int = setting(
        0,
        "Replicas of this stream's topic; 0: kafka.replication_factor (automatic: 1 below "
        "3 brokers, else 3). Read when the topic is created; an existing topic keeps its own.",
    )
    min_insync_replicas: int = setting(
        0,
        "Replicas that must have a write before it is acknowledged (every producer writes "
        "with acks=all); 0: 2 from 3 replicas on, else 1, so one broker may fail unseen.",
    )


def worker_ports(port: int, workers: int) -> range:
    """The ``/metrics`` ports of a service's workers from ``port`` on: ``max(workers, 2)``
    wide, so a worker whose port is busy (a restart before the old one let go) has another."""
    return range(port, port + max(workers, 2))


@dataclass(frozen=True)
class RouterConfig:
    """A router agent: validates, enriches and routes events of its source stream.

    ``engine`` picks the runtime around the same pure router core (``agents.routing``):

    - ``"transactional"`` (default): an aiokafka consumer-group worker that commits each
      batch's output and its source offsets in one Kafka transaction: exactly-once into the
      destination streams for ``read_committed`` readers, even after a crash. Honours
      ``batch_size``, ``batch_window_seconds`` and every ``starting_position``.
    - ``"faust"``: a Faust agent (faust-streaming) that acks a raw message only after Kafka
      confirmed its deliveries: at-least-once — nothing is lost, but after a crash the
      messages routed since the last offset commit are routed again, so the destination
      streams (and the lake) may hold duplicates. It routes one raw message at a time
      (``batch_size`` and ``batch_window_seconds`` do not apply) and does not support
      ``starting_position = "AT_TIMESTAMP"``.

    Both share retries, the DLQ fallback, dedup, filters, transforms and metrics.
    """

    name: str = setting("", "Router name: the key under [routers]; also its consumer group.")
    source: str = setting("", "Stream the router reads.")
    route_field: str = setting("event_type", "Event field whose value picks the route.")
    routes: Mapping[str, tuple[str, ...]] = setting({}, "Field value -> destination stream(s).")
    dlq: str = setting("dlq", "Stream that receives events that fail validation or have no route.")
    receive_time_field: str = setting("receive_time", "Field the router sets to the receive time.")
    sources: tuple[str, ...] = setting(
        (), "Every stream the router reads: 'source' may be a list (the first is 'source')."
    )
    rules: tuple[tuple[Mapping[str, Any], tuple[str, ...]], ...] = setting(
        (), "Pattern routes: [[routers.N.rules]] pattern = {EventBridge}, streams = [...]."
    )
    filters: tuple[Mapping[str, Any], ...] = setting(
        (), "EventBridge patterns; an event matching none is skipped and counted (empty: all)."
    )
    batch_size: int = setting(5000, "Most events per batch (one Kafka transaction), 1-100000.")
    batch_window_seconds: float = setting(
        0.2, "Longest a batch waits to fill before it is routed (Lambda batching window, 0-300)."
    )
    starting_position: StartingPosition = setting(
        "TRIM_HORIZON", "Where a new consumer group starts: TRIM_HORIZON, LATEST or AT_TIMESTAMP."
    )
    starting_timestamp: str = setting(
        "", "ISO-8601 time for starting_position = AT_TIMESTAMP (without a zone: UTC)."
    )
    event_id_field: str = setting(
        "event_id", "Field holding the event id; set to a stable hash when missing ('' = off)."
    )
    date_field: str = setting("event_date", "Field set to the event's date (if a schema has it).")
    hour_field: str = setting("event_hour", "Field set to the event's hour (if a schema has it).")
    max_retry_attempts: int = setting(
        3, "Retries of a failed batch before its events go to the DLQ (-1: unlimited)."
    )
    max_record_age_seconds: float = setting(
        -1.0, "Records older than this (since they reached Kafka) go to the DLQ (-1: no limit)."
    )
    retry_base_seconds: float = setting(0.1, "First retry waits up to this (full jitter).")
    retry_max_seconds: float = setting(5.0, "Longest wait between retries.")
    bisect_on_error: bool = setting(True, "Split a failing transform batch to find the bad event.")
    dedup_window_seconds: float = setting(
        300.0, "A repeated event id within this many seconds is routed once (0: off)."
    )
    dedup_max_ids: int = setting(1_000_000, "Most event ids remembered per source partition.")
    transform: str = setting("", "User transform 'module:function' (Firehose semantics), or ''.")
    transform_mode: TransformMode = setting(
        "batch", "'batch': f(list of events); 'event': f(event)."
    )
    transform_timeout_seconds: float = setting(5.0, "A transform call slower than this fails.")
    workers: int = setting(1, "Worker processes `firelake up` runs for this router (one group).")
    metrics_port: int = setting(
        0,
        "Prometheus /metrics port on 127.0.0.1 (0: the next free after [metrics] base_port; "
        "busy: the next free of port+workers).",
    )
    engine: AgentEngine = setting(
        "transactional",
        "Router runtime: 'transactional' (aiokafka worker, exactly-once output) or 'faust' "
        "(a Faust agent, at-least-once output).",
    )

    @property
    def metrics_ports(self) -> range:
        """The ports the workers serve ``/metrics`` on (each takes the first free one), so
        the workers, ``firelake status`` and the dashboard look in the same place."""
        return worker_ports(self.metrics_port, self.workers)


@dataclass(frozen=True)
class SinkConfig:
    """A Parquet sink (Firehose): one stream into one lake table."""

    name: str = setting("", "Sink name: the key under [sinks]; also its consumer group.")
    stream: str = setting("", "Stream the sink reads.")
    table: str = setting("", "Lake table it writes (folder under the lake root).")
    max_events: int = setting(100_000, "Flush a partition's buffer at this many events.")
    max_bytes: int = setting(64 * MiB, "Flush a partition's buffer at this many bytes (1-128 MiB).")
    max_seconds: float = setting(10.0, "Flush a buffer this many seconds after its first event.")
    flush_when_caught_up: bool = setting(
        False,
        "Also flush a partition's buffer as soon as the sink has read all its stream holds "
        "(replay tests: the lake is complete when the pipeline is quiescent).",
    )
    format: SinkFormat = setting(
        "parquet",
        "'parquet' (converted to the schema) or 'json' (the records byte for byte, one a "
        "line: Firehose without format conversion).",
    )
    compression: str = setting(
        "zstd", "Parquet codec; for format = 'json' gzip (the default there) or none."
    )
    destination: str = setting(
        "", "Where the table goes: '' = the lake root, a local folder or s3://bucket/prefix."
    )
    prefix: str = setting(
        "dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/",
        "Partition folders under <table>/: Firehose Prefix expressions "
        "!{timestamp:<pattern>} and !{partitionKeyFromQuery:<column>}.",
    )
    error_prefix: str = setting(
        "_errors/!{table}/!{firehose:error-output-type}/dt=!{timestamp:yyyy-MM-dd}/",
        "Where records that fail conversion go (Firehose ErrorOutputPrefix; !{table} too).",
    )
    unknown_fields: UnknownFields = setting(
        "drop", "Event fields outside the schema: 'drop', or 'keep' in one JSON column."
    )
    unknown_column: str = setting("_unknown", "The JSON column unknown_fields = 'keep' fills.")
    case_insensitive: bool = setting(
        False, "Match JSON keys to columns ignoring case (OpenX SerDe CaseInsensitive)."
    )
    dots_to_underscores: bool = setting(
        False, "Read JSON key 'a.b' as column a_b (OpenX ConvertDotsInJsonKeysToUnderscores)."
    )
    column_to_json_key: Mapping[str, str] = setting(
        {}, "Column -> JSON key it is read from (OpenX ColumnToJsonKeyMappings)."
    )
    archive: bool = setting(
        False, "Also keep the raw events as gzip JSON lines (Firehose S3 backup)."
    )
    archive_prefix: str = setting(
        "_archive/!{table}/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/",
        "Where the raw archive goes (arrival time).",
    )
    memory_limit_bytes: int = setting(
        256 * MiB, "Most bytes all this sink's buffers hold; at the limit the largest flush."
    )
    max_open_partitions: int = setting(
        500, "Most output partitions buffered at once; beyond it the oldest buffer flushes."
    )
    s3_endpoint_url: str = setting("", "S3 endpoint URL ('' = AWS; MinIO, moto for tests).")
    s3_region: str = setting("us-east-1", "S3 region.")
    s3_access_key_id: str = setting("", "S3 access key ('' = boto3's default credential chain).")
    s3_secret_access_key: str = setting("", "S3 secret key ('' = boto3's default chain).")
    compact_target_bytes: int = setting(
        128 * MiB, "`firelake compact` merges small files into files near this size."
    )
    compact_grace_seconds: float = setting(
        300.0, "Files a compaction replaced are deleted this long after (running queries)."
    )
    starting_position: StartingPosition = setting(
        "TRIM_HORIZON",
        "Where the sink starts a partition its destination holds no progress for: "
        "TRIM_HORIZON (the earliest retained record), LATEST (what arrives after it first "
        "starts) or AT_TIMESTAMP (the first record at or after starting_timestamp).",
    )
    starting_timestamp: str = setting(
        "", "ISO-8601 time for starting_position = AT_TIMESTAMP (without a zone: UTC)."
    )


# --------------------------------------------------------------------------- windows

WindowType = typing.Literal["tumbling", "hopping", "sliding", "session"]
WindowEmit = typing.Literal["final", "update"]
#: A window runs on the same two engines as a router.
WindowEngine = AgentEngine
WindowTime = typing.Literal["event", "ingest"]

#: Columns every window result has besides its key columns and aggregates.
WINDOW_RESULT_COLUMNS = ("window_start", "window_end", "event_count", "emit_time", "is_final")


@dataclass(frozen=True)
class WindowConfig:
    """A window agent (Kinesis Data Analytics): aggregates of a stream per key and window.

    Results go to ``output`` (one row per window and key: ``window_start``, ``window_end``,
    the key columns, the aggregates, ``event_count``, ``emit_time``, ``is_final``); events
    that arrive after their window closed go to ``late`` with the window they missed.
    """

    name: str = setting("", "Window name: the key under [windows]; also its consumer group.")
    source: str = setting("", "Stream the window reads.")
    key: tuple[str, ...] = setting((), "Fields the results are grouped by (empty: one global).")
    type: WindowType = setting(
        "tumbling", "'tumbling' (size), 'hopping' (size, step), 'sliding' (size), 'session' (gap)."
    )
    size_seconds: float = setting(60.0, "Window length (tumbling, hopping, sliding).")
    step_seconds: float = setting(0.0, "Hopping windows start every step; size is a multiple.")
    gap_seconds: float = setting(0.0, "A session ends after this long without an event.")
    aggregates: Mapping[str, str] = setting(
        {},
        "Output column -> aggregate in DuckDB syntax: count(*), count(x), sum(x), min(x), "
        "max(x), avg(x), count(DISTINCT x), each with an optional FILTER (WHERE ...).",
    )
    filter: str = setting("", "SQL condition an event must meet to count ('' = every event).")
    time: WindowTime = setting(
        "event", "'event': the event's time_field; 'ingest': the time Kafka received it."
    )
    time_field: str = setting("", "Event-time field ('' = the source schema's time_field).")
    grace_seconds: float = setting(
        10.0, "Allowed lateness: the watermark is the largest event time seen minus this."
    )
    idle_timeout_seconds: float = setting(
        60.0, "A partition silent this long stops holding the watermark back (0: never)."
    )
    emit: WindowEmit = setting(
        "final", "'final': one result per window when it closes; 'update': also on every change."
    )
    output: str = setting("", "Stream the results go to.")
    late: str = setting("", "Stream late events go to, with the window they missed.")
    engine: WindowEngine = setting(
        "transactional",
        "'transactional' (exactly-once output and state) or 'faust' (a Faust agent, "
        "at-least-once).",
    )
    workers: int = setting(
        1, "Worker processes: one is active, the others stand by and take over on a crash."
    )
    metrics_port: int = setting(
        0,
        "Prometheus /metrics port on 127.0.0.1 (0: the next free after [metrics] base_port "
        "and the routers'; busy: the next free of port+workers). Transactional engine.",
    )
    batch_size: int = setting(50_000, "Most events per batch (one Kafka transaction).")
    batch_window_seconds: float = setting(0.5, "Longest a batch waits to fill.")
    max_open_windows: int = setting(
        1_000_000, "Most open (window, key) entries; beyond it the oldest close early."
    )
    id_field: str = setting(
        "event_id", "Field identifying an event: `windows verify` matches late events by it."
    )

    @property
    def metrics_ports(self) -> range:
        """The ports the workers serve ``/metrics`` on (each takes the first free one)."""
        return worker_ports(self.metrics_port, self.workers)

    @property
    def end_lag_seconds(self) -> float:
        """How far a window's end lies past its last possible event time."""
        return self.gap_seconds if self.type == "session" else 0.0


def _parse_window(
    source: str, name: str, raw: Any, streams: Mapping[str, StreamConfig]
) -> WindowConfig:
    """A ``[windows.<name>]`` table: typed, its streams resolved, its bounds checked."""
    key = f"windows.{name}"
    if not isinstance(raw, dict):
        _fail(source, key, "must be a table")
    raw = dict(raw)  # type, emit, engine and time: Literal settings, checked by _section
    stream = raw.pop("source", "")
    keys = raw.pop("key", [])
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        _fail(source, f"{key}.key", "must be a field name or a list of them")
    aggregates = raw.pop("aggregates", {})
    if not isinstance(aggregates, dict) or not aggregates:
        _fail(source, f"{key}.aggregates", "must be a non-empty table of column = aggregate")
    spec = _section(
        source,
        key,
        WindowConfig,
        raw,
        name=name,
        key=tuple(dict.fromkeys(keys)),
        aggregates=types.MappingProxyType(dict(aggregates)),
    )
    spec = dataclasses.replace(spec, source=stream)
    _check_window(source, key, spec, streams)
    return spec


def _check_window(
    source: str, key: str, spec: WindowConfig, streams: Mapping[str, StreamConfig]
) -> None:
    """Bounds and references of a window's settings."""

    for field_name in ("source", "output", "late"):
        stream = getattr(spec, field_name)
        if not isinstance(stream, str) or stream not in streams:
            raise UnknownStreamError(source, f"{key}.{field_name}", str(stream), streams)
    if len({spec.source, spec.output, spec.late}) != 3:
        _fail(source, f"{key}.output", "source, output and late must be three different streams")
    if spec.type in ("tumbling", "hopping", "sliding"):
        _check_positive(source, f"{key}.size_seconds", spec.size_seconds, 0.001, 366 * 86_400)
    if spec.type == "hopping":
        _check_positive(source, f"{key}.step_seconds", spec.step_seconds, 0.001, spec.size_seconds)
        steps = spec.size_seconds / spec.step_seconds
        if abs(steps - round(steps)) > 1e-9 or round(steps) > 1000:
            _fail(source, f"{key}.size_seconds", "must be 1-1000 times step_seconds")
    elif spec.step_seconds:
        _fail(source, f"{key}.step_seconds", "only hopping windows have a step")
    if spec.type == "session":
        _check_positive(source, f"{key}.gap_seconds", spec.gap_seconds, 0.001, 366 * 86_400)
    elif spec.gap_seconds:
        _fail(source, f"{key}.gap_seconds", "only session windows have a gap")
    _check_positive(source, f"{key}.grace_seconds", spec.grace_seconds, 0, 7 * 86_400)
    _check_positive(source, f"{key}.idle_timeout_seconds", spec.idle_timeout_seconds, 0, 86_400)
    _check_positive(source, f"{key}.workers", spec.workers, 1, 64)
    if spec.engine == "faust" and spec.workers != 1:
        # Faust spreads partitions over its workers; a window's state lives in one process.
        _fail(source, f"{key}.workers", "engine = 'faust' runs one worker per window")
    _check_positive(source, f"{key}.batch_size", spec.batch_size, 1, 1_000_000)
    _check_positive(source, f"{key}.batch_window_seconds", spec.batch_window_seconds, 0, 300)
    _check_positive(source, f"{key}.max_open_windows", spec.max_open_windows, 1, 100_000_000)
    reserved = set(WINDOW_RESULT_COLUMNS)
    for field_name in spec.key:
        if not _TABLE_RE.match(field_name) or field_name in reserved:
            _fail(source, f"{key}.key", f"{field_name!r} cannot be a result column")
    for column, expression in spec.aggregates.items():
        where = f"{key}.aggregates.{column}"
        if not _TABLE_RE.match(column) or column in reserved or column in spec.key:
            _fail(source, where, "a column name of letters, digits and _, not a key or reserved")
        if not isinstance(expression, str):
            _fail(source, where, f"must be an aggregate expression string, got {expression!r}")
        try:
            parse_aggregate(expression)
        except AggregateError as exc:
            _fail(source, where, str(exc))
    if spec.time == "event" and not spec.time_field:
        schema_name = streams[spec.source].schema
        if not schema_name:
            _fail(source, f"{key}.time_field", "the source has no schema: name the field")


@dataclass(frozen=True)
class AppConfig:
    """An application service `firelake up` runs beside the pipeline: a seed system's own
    API (``module`` has ``run_app(config, app)``), e.g. Code Developer University's."""

    name: str = setting("", "App name: the key under [apps].")
    module: str = setting("", "Python module with run_app(config, app), e.g. agents.cdu.service.")
    host: str = setting("127.0.0.1", "Address the app's HTTP service binds.")
    port: int = setting(0, "Port of the app's HTTP service (0: any free port).")
    settings: Mapping[str, Any] = setting({}, "The app's own settings ([apps.N.settings]).")


@dataclass(frozen=True)
class FirelakeConfig:
    """The whole configuration."""

    source: str = setting("<defaults>", "File the configuration was read from.")
    base_dir: str = setting(".", "Folder relative paths are resolved against.")
    kafka: KafkaConfig = setting(KafkaConfig(), "Kafka broker.")
    ingest: IngestConfig = setting(IngestConfig(), "HTTP ingest service.")
    lake: LakeConfig = setting(LakeConfig(), "Lake location.")
    query: QueryConfig = setting(QueryConfig(), "SQL layer.")
    schemas: Mapping[str, Schema] = setting({}, "Event schemas by name.")
    streams: Mapping[str, StreamConfig] = setting({}, "Streams by name.")
    routers: Mapping[str, RouterConfig] = setting({}, "Router agents by name.")
    sinks: Mapping[str, SinkConfig] = setting({}, "Parquet sinks by name.")
    windows: Mapping[str, WindowConfig] = setting({}, "Window agents by name.")
    apps: Mapping[str, AppConfig] = setting({}, "Application services by name.")
    metrics: MetricsConfig = setting(MetricsConfig(), "Prometheus /metrics ports.")

    @property
    def bootstrap(self) -> str:
        """The broker address: ``kafka.bootstrap``, else the local broker on ``kafka.port``."""
        return self.kafka.bootstrap or f"127.0.0.1:{self.kafka.port}"

    @property
    def lake_root(self) -> Path:
        """The local lake folder (for an ``s3://`` root, see ``lake_url``)."""
        root = Path(self.lake.root).expanduser()
        return root if root.is_absolute() else Path(self.base_dir) / root

    @property
    def lake_url(self) -> str:
        """The lake root as given to other processes: ``s3://…`` as is, a folder absolute."""
        if self.lake.root.startswith("s3://"):
            return self.lake.root
        return str(self.lake_root.resolve())

    @property
    def kafka_data_dir(self) -> Path:
        data = Path(self.kafka.data_dir).expanduser()
        return data if data.is_absolute() else Path(self.base_dir) / data

    def require_bootstrap(self, bootstrap: str | None = None) -> str:
        """The broker an agent connects to: ``bootstrap`` if given, else
        ``kafka.bootstrap``; unlike :attr:`bootstrap` never a guess at the local broker."""
        found = bootstrap or self.kafka.bootstrap
        if not found:
            raise ValueError(
                f"{self.source}: kafka.bootstrap is empty; start the broker first or set "
                "FIRELAKE_KAFKA_BOOTSTRAP"
            )
        return found

    def dlq_tables(self) -> list[str]:
        """The lake tables the routers' DLQ streams are written to, sorted."""
        streams = {router.dlq for router in self.routers.values() if router.dlq}
        return sorted({sink.table for sink in self.sinks.values() if sink.stream in streams})

    def schema_of(self, stream: str) -> Schema | None:
        """The schema declared on a stream, with the built-in DLQ schema for DLQ streams."""
        spec = self.streams.get(stream)
        if spec is None or not spec.schema:
            return None
        if spec.schema == DLQ_SCHEMA.name and spec.schema not in self.schemas:
            return DLQ_SCHEMA
        return self.schemas[spec.schema]


#: Every DLQ stream carries events of this shape (see agents/dlq.py).
DLQ_SCHEMA = Schema(
    name="dlq",
    fields=(
        FieldSpec("failed_at", "timestamp", True),
        FieldSpec("router", "string", True),
        FieldSpec("error_type", "string", True),
        FieldSpec("reason", "string", True),
        FieldSpec("source_topic", "string", True),
        FieldSpec("source_partition", "int", True),
        FieldSpec("source_offset", "int", True),
        FieldSpec("source_index", "int", True),
        FieldSpec("attempts", "int", True),
        FieldSpec("payload", "string"),
        FieldSpec("payload_base64", "string"),
        FieldSpec("first_attempt_at", "timestamp"),
        FieldSpec("last_attempt_at", "timestamp"),
        FieldSpec("source_key", "string"),
    ),
    time_field="failed_at",
)


def describe(cls: type) -> list[tuple[str, str, Any]]:
    """(name, description, default) of every field of a config section, for docs and the CLI."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f.name, f.metadata.get("doc", ""), default))
    return rows


# --------------------------------------------------------------------------- parsing


def _fail(source: str, key: str, reason: str) -> typing.NoReturn:
    raise ConfigError(source, key, reason)


def _coerce(source: str, key: str, value: Any, annotation: Any) -> Any:
    """Check one scalar against its annotated type (bools are not ints; ints are floats)."""
    if get_origin(annotation) is Literal:
        choices = [repr(choice) for choice in get_args(annotation)]
        if value not in get_args(annotation):
            shown = " or ".join(choices) if len(choices) == 2 else "one of " + ", ".join(choices)
            _fail(source, key, f"must be {shown}, got {value!r}")
        return value
    if annotation in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(source, key, f"must be an integer, got {value!r}")
        return value
    if annotation in (float, "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(source, key, f"must be a number, got {value!r}")
        return float(value)
    if annotation in (str, "str"):
        if not isinstance(value, str):
            _fail(source, key, f"must be a string, got {value!r}")
        return value
    if annotation in (bool, "bool"):
        if not isinstance(value, bool):
            _fail(source, key, f"must be true or false, got {value!r}")
        return value
    raise AssertionError(f"unsupported annotation {annotation!r}")  # pragma: no cover


def _section(source: str, prefix: str, cls: type, raw: Any, **fixed: Any) -> Any:
    """Build a flat dataclass section from a TOML table, refusing unknown keys."""
    if not isinstance(raw, dict):
        _fail(source, prefix, f"must be a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)} - set(fixed)
    values: dict[str, Any] = dict(fixed)
    for key, value in raw.items():
        if key not in known:
            _fail(source, f"{prefix}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
        values[key] = _coerce(source, f"{prefix}.{key}", value, hints[key])
    return cls(**values)


def _check_replicas(source: str, key: str, stream: StreamConfig) -> None:
    """A stream's replication settings: 0 (automatic) or more, min.insync.replicas <= RF."""
    _check_positive(source, f"{key}.replication_factor", stream.replication_factor, 0)
    _check_positive(source, f"{key}.min_insync_replicas", stream.min_insync_replicas, 0)
    if stream.replication_factor and stream.min_insync_replicas > stream.replication_factor:
        _fail(
            source,
            f"{key}.min_insync_replicas",
            f"{stream.min_insync_replicas} exceeds replication_factor "
            f"{stream.replication_factor}: no write could ever be acknowledged",
        )


def _check_positive(source: str, key: str, value: float, low: float = 1, high: float | None = None):
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        _fail(source, key, f"must be {bound}, got {value!r}")


def _parse_schema(source: str, name: str, raw: Any) -> Schema:
    key = f"schemas.{name}"
    if not isinstance(raw, dict):
        _fail(source, key, "must be a table with 'fields'")
    unknown = set(raw) - {"fields", "required", "time_field"}
    if unknown:
        _fail(
            source,
            f"{key}.{sorted(unknown)[0]}",
            "unknown key (known: fields, required, time_field)",
        )
    fields_raw = raw.get("fields")
    if not isinstance(fields_raw, dict) or not fields_raw:
        _fail(source, f"{key}.fields", "must be a non-empty table of column = type")
    required = raw.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        _fail(source, f"{key}.required", "must be a list of column names")
    for column in required:
        if column not in fields_raw:
            _fail(source, f"{key}.required", f"names {column!r}, which is not in fields")
    specs = []
    for column, type_name in fields_raw.items():
        if not _TABLE_RE.match(column):
            _fail(source, f"{key}.fields.{column}", "column names are letters, digits and _")
        if not isinstance(type_name, str):
            _fail(source, f"{key}.fields.{column}", f"a type is a string, got {type_name!r}")
        try:
            parsed = parse_field_type(type_name)
        except ValueError as exc:
            _fail(source, f"{key}.fields.{column}", f"type {type_name!r}: {exc}")
        specs.append(FieldSpec(column, parsed, column in required))
    time_field = raw.get("time_field", "")
    if not isinstance(time_field, str):
        _fail(source, f"{key}.time_field", "must be a column name")
    if time_field:
        spec = next((s for s in specs if s.name == time_field), None)
        if spec is None or spec.type.kind != "timestamp":
            _fail(source, f"{key}.time_field", f"{time_field!r} must be a timestamp column")
    return Schema(name=name, fields=tuple(specs), time_field=time_field)


def _parse_routes(source: str, key: str, raw: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        _fail(source, key, "must be a table of value = stream or [streams]")
    routes: dict[str, tuple[str, ...]] = {}
    for value, target in raw.items():
        if isinstance(target, str):
            routes[value] = (target,)
        elif isinstance(target, list) and target and all(isinstance(t, str) for t in target):
            routes[value] = tuple(target)
        else:
            _fail(source, f"{key}.{value}", "must be a stream name or a non-empty list of them")
    return routes


def _parse_sources(source: str, key: str, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str) and raw:
        return (raw,)
    if isinstance(raw, list) and raw and all(isinstance(s, str) and s for s in raw):
        return tuple(dict.fromkeys(raw))
    _fail(source, key, "must be a stream name or a non-empty list of them")


def _parse_patterns(source: str, key: str, raw: Any) -> tuple[Mapping[str, Any], ...]:
    """EventBridge patterns, compiled once here so a bad one is refused at start."""

    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        _fail(source, key, "must be a pattern table or a list of them")
    for index, pattern in enumerate(raw):
        try:
            compile_pattern(pattern, f"{key}[{index}]")
        except PatternError as exc:
            _fail(source, exc.path, exc.reason)
    return tuple(types.MappingProxyType(dict(p)) for p in raw)


def _parse_rules(
    source: str, key: str, raw: Any
) -> tuple[tuple[Mapping[str, Any], tuple[str, ...]], ...]:
    if not isinstance(raw, list):
        _fail(source, key, "must be an array of tables: [[routers.NAME.rules]]")
    rules = []
    for index, rule in enumerate(raw):
        where = f"{key}[{index}]"
        if not isinstance(rule, dict) or set(rule) != {"pattern", "streams"}:
            _fail(source, where, "a rule has exactly 'pattern' and 'streams'")
        (pattern,) = _parse_patterns(source, f"{where}.pattern", [rule["pattern"]])
        targets = _parse_routes(source, where, {"streams": rule["streams"]})["streams"]
        rules.append((pattern, targets))
    return tuple(rules)


def _check_router(source: str, key: str, spec: RouterConfig) -> None:
    """Bounds of a router's settings (Lambda event source mapping limits where they exist)."""
    _check_positive(source, f"{key}.batch_size", spec.batch_size, 1, 100_000)
    _check_positive(source, f"{key}.batch_window_seconds", spec.batch_window_seconds, 0, 300)
    _check_positive(source, f"{key}.max_retry_attempts", spec.max_retry_attempts, -1, 10_000)
    if spec.max_record_age_seconds != -1:
        _check_positive(
            source, f"{key}.max_record_age_seconds", spec.max_record_age_seconds, 1, 604_800
        )
    _check_positive(source, f"{key}.retry_base_seconds", spec.retry_base_seconds, 0, 60)
    _check_positive(
        source, f"{key}.retry_max_seconds", spec.retry_max_seconds, spec.retry_base_seconds, 300
    )
    _check_positive(source, f"{key}.dedup_window_seconds", spec.dedup_window_seconds, 0, 86_400)
    _check_positive(source, f"{key}.dedup_max_ids", spec.dedup_max_ids, 1, 100_000_000)
    _check_positive(
        source, f"{key}.transform_timeout_seconds", spec.transform_timeout_seconds, 0, 900
    )
    _check_positive(source, f"{key}.workers", spec.workers, 1, 64)
    _check_positive(source, f"{key}.metrics_port", spec.metrics_port, 0, 65535)
    _check_starting_position(source, key, spec.starting_position, spec.starting_timestamp)
    if spec.engine == "faust" and spec.starting_position == "AT_TIMESTAMP":
        # Faust only knows earliest/latest for a new group; seeking by time is the worker's.
        _fail(source, f"{key}.starting_position", "AT_TIMESTAMP needs engine = 'transactional'")
    if spec.transform and (":" not in spec.transform or spec.transform.startswith(":")):
        _fail(source, f"{key}.transform", "must be 'module:function'")


def starting_timestamp_ms(text: str) -> int:
    """Epoch milliseconds of a ``starting_timestamp`` (ISO-8601; without a zone: UTC)."""
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _check_starting_position(source: str, key: str, position: str, timestamp: str) -> None:
    """A router's or a sink's ``starting_position``: AT_TIMESTAMP needs its time."""
    if position == "AT_TIMESTAMP":
        try:
            starting_timestamp_ms(timestamp)
        except ValueError:
            _fail(source, f"{key}.starting_timestamp", "AT_TIMESTAMP needs an ISO-8601 time")


def _check_sink(source: str, key: str, spec: SinkConfig) -> None:
    """A sink's settings that the type check alone does not cover."""
    _check_starting_position(source, key, spec.starting_position, spec.starting_timestamp)
    if not _TABLE_RE.match(spec.unknown_column):
        _fail(source, f"{key}.unknown_column", "column names are letters, digits and _")
    if spec.destination and not (
        spec.destination.startswith("s3://") or "://" not in spec.destination
    ):
        _fail(source, f"{key}.destination", "must be a local folder or s3://bucket/prefix")
    if spec.destination.startswith("s3://") and not spec.destination[5:].split("/")[0]:
        _fail(source, f"{key}.destination", "s3:// needs a bucket name")
    _check_positive(source, f"{key}.memory_limit_bytes", spec.memory_limit_bytes, MiB)
    _check_positive(source, f"{key}.max_open_partitions", spec.max_open_partitions, 1, 100_000)
    _check_positive(source, f"{key}.compact_target_bytes", spec.compact_target_bytes, MiB)
    _check_positive(source, f"{key}.compact_grace_seconds", spec.compact_grace_seconds, 0)
    # The templates are checked by the module that renders them (no sinks import at parse
    # time for the rest of the config, as with router patterns).

    for field_name in ("prefix", "error_prefix", "archive_prefix"):
        try:
            parse_prefix(getattr(spec, field_name))
        except PrefixError as exc:
            _fail(source, f"{key}.{field_name}", str(exc))
    if spec.format == "json":
        # Records are not parsed: no column to partition by, and the table is the raw copy.
        if parse_prefix(spec.prefix).fields:
            _fail(source, f"{key}.prefix", "format = 'json' places files by arrival time only")
        if spec.archive:
            _fail(source, f"{key}.archive", "format = 'json' writes the raw records already")


def _assign_metrics_ports(
    groups: list[dict[str, Any]], base_port: int, reserved: set[int]
) -> list[dict[str, Any]]:
    """Routers and windows without a ``metrics_port`` get the first free ports after
    ``base_port`` (the sinks'), in file order, routers first, clear of ``reserved`` and of
    the ports every router and window chose or was given."""
    if not base_port:
        return groups
    taken = {*reserved, base_port}
    for specs in groups:
        for spec in specs.values():
            if spec.metrics_port:
                taken.update(spec.metrics_ports)
    assigned_groups = []
    for specs in groups:
        assigned: dict[str, Any] = {}
        port = base_port + 1
        for name, spec in specs.items():
            if not spec.metrics_port:
                while taken.intersection(worker_ports(port, spec.workers)):
                    port += 1
                spec = dataclasses.replace(spec, metrics_port=port)
                taken.update(spec.metrics_ports)
            assigned[name] = spec
        assigned_groups.append(assigned)
    return assigned_groups


def parse_config(
    data: Mapping[str, Any],
    source: str = "<dict>",
    base_dir: str = ".",
    environ: Mapping[str, str] | None = None,
    extra_streams: Mapping[str, StreamConfig] | None = None,
) -> FirelakeConfig:
    """Build and cross-check a configuration from parsed TOML.

    ``extra_streams`` are streams that exist outside the file (created through the Kinesis
    API, kept in the registry): routers and sinks may name them; declared ones win.
    """
    environ = os.environ if environ is None else environ
    known = {"kafka", "ingest", "lake", "query", "schemas", "streams", "routers", "sinks"}
    known.add("windows")
    known.add("apps")
    known.add("metrics")
    for key in data:
        if key not in known:
            _fail(source, key, f"unknown section (known: {', '.join(sorted(known))})")

    kafka = _section(source, "kafka", KafkaConfig, data.get("kafka", {}))
    if environ.get("FIRELAKE_KAFKA_BOOTSTRAP"):
        kafka = dataclasses.replace(kafka, bootstrap=environ["FIRELAKE_KAFKA_BOOTSTRAP"])
    ingest = _section(source, "ingest", IngestConfig, data.get("ingest", {}))
    lake = _section(source, "lake", LakeConfig, data.get("lake", {}))
    if environ.get("FIRELAKE_LAKE"):
        lake = dataclasses.replace(lake, root=environ["FIRELAKE_LAKE"])
    query = _section(source, "query", QueryConfig, data.get("query", {}))
    if environ.get("FIRELAKE_QUERY_HOST"):
        query = dataclasses.replace(query, host=environ["FIRELAKE_QUERY_HOST"])
    _check_positive(source, "query.timeout_seconds", query.timeout_seconds, 0.01, 86_400)
    _check_positive(source, "query.memory_limit_mb", query.memory_limit_mb, 16)
    _check_positive(source, "query.max_bytes_scanned", query.max_bytes_scanned, 0)
    _check_positive(source, "query.port", query.port, 0, 65_535)
    for key, port in (("kafka.port", kafka.port), ("ingest.port", ingest.port)):
        _check_positive(source, key, port, 0, 65535)
    _check_positive(source, "kafka.replication_factor", kafka.replication_factor, 0)
    _check_positive(source, "ingest.max_records", ingest.max_records, 1, 500)
    _check_positive(source, "ingest.max_inflight_requests", ingest.max_inflight_requests, 1, 1024)
    _check_positive(source, "ingest.slot_wait_seconds", ingest.slot_wait_seconds, 0, 60)
    _check_positive(
        source, "ingest.answer_deadline_seconds", ingest.answer_deadline_seconds, 0.5, 300
    )
    _check_positive(source, "ingest.header_timeout_seconds", ingest.header_timeout_seconds, 1, 3600)
    _check_positive(source, "ingest.workers", ingest.workers, 1, 64)
    _check_positive(source, "ingest.max_record_bytes", ingest.max_record_bytes, 1, MiB)
    _check_positive(source, "ingest.max_request_bytes", ingest.max_request_bytes, 1, 5 * MiB)

    def table(name: str) -> dict[str, Any]:
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            _fail(source, name, "must be a table of named entries")
        for entry in raw:
            if not _NAME_RE.match(entry):
                _fail(source, f"{name}.{entry}", "names are letters, digits, '.', '_' and '-'")
        return raw

    schemas = {n: _parse_schema(source, n, raw) for n, raw in table("schemas").items()}

    streams: dict[str, StreamConfig] = dict(extra_streams or {})
    for name, raw in table("streams").items():
        spec = _section(source, f"streams.{name}", StreamConfig, raw, name=name)
        _check_positive(source, f"streams.{name}.partitions", spec.partitions, 1, 10_000)
        _check_positive(source, f"streams.{name}.retention_hours", spec.retention_hours, 1, 87_600)
        _check_replicas(source, f"streams.{name}", spec)
        if spec.schema and spec.schema not in schemas and spec.schema != DLQ_SCHEMA.name:
            _fail(source, f"streams.{name}.schema", f"unknown schema {spec.schema!r}")
        streams[name] = spec

    def stream_ref(key: str, name: str) -> None:
        if name not in streams:
            raise UnknownStreamError(source, key, name, streams)

    routers: dict[str, RouterConfig] = {}
    for name, raw in table("routers").items():
        if not isinstance(raw, dict):
            _fail(source, f"routers.{name}", "must be a table")
        raw = dict(raw)
        routes = _parse_routes(source, f"routers.{name}.routes", raw.pop("routes", {}))
        sources = _parse_sources(source, f"routers.{name}.source", raw.pop("source", ""))
        rules = _parse_rules(source, f"routers.{name}.rules", raw.pop("rules", []))
        filters = _parse_patterns(source, f"routers.{name}.filters", raw.pop("filters", []))
        spec = _section(
            source, f"routers.{name}", RouterConfig, raw, name=name, routes=routes, sources=()
        )
        # 'source' is also _section's own parameter name: set it (and the lists) after.
        spec = dataclasses.replace(
            spec, source=sources[0], sources=sources, rules=rules, filters=filters
        )
        for stream in sources:
            stream_ref(f"routers.{name}.source", stream)
        stream_ref(f"routers.{name}.dlq", spec.dlq)
        if streams[spec.dlq].schema != DLQ_SCHEMA.name:
            _fail(source, f"routers.{name}.dlq", f"stream {spec.dlq!r} must declare schema = 'dlq'")
        if not routes and not rules:
            _fail(source, f"routers.{name}.routes", "a router needs at least one route or rule")
        for value, targets in routes.items():
            for target in targets:
                stream_ref(f"routers.{name}.routes.{value}", target)
        for index, (_pattern, targets) in enumerate(rules):
            for target in targets:
                stream_ref(f"routers.{name}.rules[{index}].streams", target)
        _check_router(source, f"routers.{name}", spec)
        routers[name] = spec
    metrics = _section(source, "metrics", MetricsConfig, data.get("metrics", {}))
    _check_positive(source, "metrics.base_port", metrics.base_port, 0, 65_000)

    sinks: dict[str, SinkConfig] = {}
    tables_seen: dict[str, str] = {}
    for name, raw in table("sinks").items():
        if not isinstance(raw, dict):
            _fail(source, f"sinks.{name}", "must be a table")
        raw = dict(raw)
        mapping = raw.pop("column_to_json_key", {})
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in mapping.items()
        ):
            _fail(source, f"sinks.{name}.column_to_json_key", "must be a table of column = key")
        spec = _section(
            source,
            f"sinks.{name}",
            SinkConfig,
            raw,
            name=name,
            column_to_json_key=types.MappingProxyType(dict(mapping)),
        )
        stream_ref(f"sinks.{name}.stream", spec.stream)
        if spec.format == "json" and "compression" not in raw:
            spec = dataclasses.replace(spec, compression="gzip")
        _check_sink(source, f"sinks.{name}", spec)
        if not _TABLE_RE.match(spec.table):
            _fail(source, f"sinks.{name}.table", "table names are letters, digits and _")
        if spec.table in tables_seen:
            _fail(
                source,
                f"sinks.{name}.table",
                f"table {spec.table!r} is written by sink {tables_seen[spec.table]!r} already",
            )
        tables_seen[spec.table] = name
        _check_positive(source, f"sinks.{name}.max_events", spec.max_events, 1)
        _check_positive(source, f"sinks.{name}.max_bytes", spec.max_bytes, MiB, 128 * MiB)
        _check_positive(source, f"sinks.{name}.max_seconds", spec.max_seconds, 0, 900)
        if spec.format == "json" and spec.compression not in JSON_COMPRESSIONS:
            _fail(source, f"sinks.{name}.compression", "format = 'json' takes gzip or none")
        if spec.compression not in ("zstd", "snappy", "gzip", "none"):
            _fail(source, f"sinks.{name}.compression", "must be zstd, snappy, gzip or none")
        sinks[name] = spec

    windows = {n: _parse_window(source, n, raw, streams) for n, raw in table("windows").items()}
    routers, windows = _assign_metrics_ports(
        [routers, windows], metrics.base_port, {kafka.port, ingest.port, query.port}
    )
    return FirelakeConfig(
        source=source,
        base_dir=base_dir,
        kafka=kafka,
        ingest=ingest,
        lake=lake,
        query=query,
        schemas=types.MappingProxyType(schemas),
        streams=types.MappingProxyType(streams),
        routers=types.MappingProxyType(routers),
        sinks=types.MappingProxyType(sinks),
        metrics=metrics,
        windows=types.MappingProxyType(windows),
        apps=types.MappingProxyType(
            {n: _parse_app(source, n, raw) for n, raw in table("apps").items()}
        ),
    )


def _parse_app(source: str, name: str, raw: Any) -> AppConfig:
    """An ``[apps.<name>]`` table; ``settings`` is the app's own, passed through."""
    key = f"apps.{name}"
    if not isinstance(raw, dict):
        _fail(source, key, "must be a table")
    raw = dict(raw)
    settings = raw.pop("settings", {})
    if not isinstance(settings, dict):
        _fail(source, f"{key}.settings", "must be a table")
    spec = _section(
        source, key, AppConfig, raw, name=name, settings=types.MappingProxyType(settings)
    )
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", spec.module):
        _fail(source, f"{key}.module", f"must be a Python module name, got {spec.module!r}")
    _check_positive(source, f"{key}.port", spec.port, 0, 65535)
    return spec


def example_config_path(name: str) -> Path:
    """The configuration of a shipped example: ``examples/NAME/firelake.toml``, or the
    single-file ``examples/NAME.toml``; a ConfigError lists the examples there are."""
    for path in (EXAMPLES_DIR / name / "firelake.toml", EXAMPLES_DIR / f"{name}.toml"):
        if path.is_file() and "/" not in name and name not in ("", ".", ".."):
            return path
    found = sorted(
        {p.parent.name for p in EXAMPLES_DIR.glob("*/firelake.toml")}
        | {p.stem for p in EXAMPLES_DIR.glob("*.toml")}
    )
    raise ConfigError("--example", name, f"no such example (shipped: {', '.join(found)})")


def read_config_data(
    path: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], str, str]:
    """(parsed TOML, source name, base folder) of a configuration file; without one,
    ``firelake.toml`` here or the shipped example (whose data lives under the working folder).
    """
    base_dir: Path | None = None
    if path is None:
        local = Path("firelake.toml")
        if local.exists():
            path = local
        else:
            path, base_dir = EXAMPLE_CONFIG, Path.cwd()
    path = Path(path)
    if base_dir is None and path.resolve().is_relative_to(EXAMPLES_DIR.resolve()):
        base_dir = Path.cwd()  # a shipped example keeps its data under the working folder
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, "(file)", f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(syntax)", str(exc)) from exc
    return data, source, str(base_dir or path.resolve().parent)


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    extra_streams: Mapping[str, StreamConfig] | None = None,
) -> FirelakeConfig:
    """Read a configuration file (see :func:`read_config_data`) and check it.

    ``extra_streams``: see :func:`parse_config`.
    """
    data, source, base_dir = read_config_data(path)
    return parse_config(
        data, source=source, base_dir=base_dir, environ=environ, extra_streams=extra_streams
    )

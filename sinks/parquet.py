"""NDJSON envelopes to Parquet files: Firehose's record format conversion.

A sink converts the messages of each poll as they arrive (``convert``): their values are
joined with ``\\n`` and parsed in one ``pyarrow.json.read_json`` call against the Arrow
schema of the table (``sinks.conversion``) — no event is parsed on its own in Python unless
key mapping, an unknown-field column or a map column asks for the Python pass. The rows are
then cut by output folder (``sinks.prefix``) and buffered; a flush (``plan_flush``) turns
each folder's rows into one Parquet file named by the batch's offset range.

When a batch does not convert the batch is bisected — first by message, then by line
inside a failing message — until the bad lines are isolated; they go to the error prefix
in Firehose's error envelope with their source partition, offset and index, and
everything else is still written.

pyarrow 26 crashes the process (a segfault, not an exception) when a JSON block starts
with a top-level ``null`` (apache/arrow#47409). So :func:`to_table` cuts the data into
chunks at line ends itself and hands each chunk to ``read_json`` as exactly one block,
after checking — one byte per chunk, not a scan of the data — that the chunk starts with
``{``; chunks are parsed in parallel on a small thread pool, as pyarrow would parse its own
blocks. A ``null`` line anywhere else is harmless to pyarrow; it yields an all-null row,
which :func:`to_table` refuses so that the bisection reports the line. Inferred schemas
(``read_json`` without an explicit schema) go through the same guard.
"""

from __future__ import annotations

import base64
import functools
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from firelake.config import Schema
from sinks.buffer import Batch
from sinks.paths import (
    FORMAT_CONVERSION_FAILED,
    data_file_name,
    error_dir,
    error_file_name,
    partition_dir,
)
from sinks.progress import PlannedFile

__all__ = [
    "ARROW_TYPES",
    "CHUNK_SIZE",
    "BadLine",
    "Conversion",
    "FlushPlan",
    "HourGroup",
    "NotAnEventError",
    "arrow_schema",
    "convert",
    "error_records",
    "plan_flush",
    "split_by_hour",
    "to_table",
    "write_parquet",
]

#: Arrow type of each Firelake column type.
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}

#: Bytes of NDJSON per read_json call (one block each). A chunk always ends at a line end,
#: so a longer line just makes a longer chunk; 2 MiB parsed fastest on the 2-core machines.
CHUNK_SIZE = 2 * 1024 * 1024

_LEADING_SPACE = re.compile(rb"[ \t\r\n]*")
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _parse_pool() -> ThreadPoolExecutor:
    # One small pool per process, shared by every sink: pyarrow releases the GIL while it
    # parses, so chunks of one batch parse on all cores like pyarrow's own blocks would.
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=max(1, min(4, pa.cpu_count())), thread_name_prefix="firelake-json"
            )
        return _pool


class NotAnEventError(ValueError):
    """A line that is no event: not a JSON object, or one with none of the table's columns.

    Raised for a chunk starting with a non-object (pyarrow may crash on it) and for a batch
    holding an all-null row (a ``null`` line or ``{}``), so the bisection isolates the line.
    """


@functools.lru_cache(maxsize=64)
def arrow_schema(schema: Schema) -> pa.Schema:
    """The Arrow schema of a Firelake schema: its fields in order, all nullable."""
    return pa.schema([pa.field(f.name, ARROW_TYPES[f.type]) for f in schema.fields])


@functools.lru_cache(maxsize=64)
def _parse_options(schema: Schema) -> pj.ParseOptions:
    # Fields outside the schema (e.g. enrichment a table does not keep) are dropped.
    return pj.ParseOptions(explicit_schema=arrow_schema(schema), unexpected_field_behavior="ignore")


def _chunks(ndjson: bytes) -> list[tuple[int, int]]:
    """(start, end) byte spans of about CHUNK_SIZE that end at line ends."""
    spans = []
    start, size = 0, len(ndjson)
    while start < size:
        end = start + CHUNK_SIZE
        if end >= size:
            end = size
        else:
            newline = ndjson.rfind(b"\n", start, end)
            if newline <= start:  # one line longer than a chunk: take it whole
                newline = ndjson.find(b"\n", end)
                newline = size if newline < 0 else newline
            end = newline
        spans.append((start, end))
        start = end + 1
    return spans


def _read_chunk(buffer: pa.Buffer, start: int, end: int, schema: Schema) -> pa.Table:
    return pj.read_json(
        pa.BufferReader(buffer.slice(start, end - start)),
        # One block per call: the block starts where we checked it does.
        read_options=pj.ReadOptions(block_size=end - start + 1, use_threads=False),
        parse_options=_parse_options(schema),
    )


def to_table(ndjson: bytes, schema: Schema) -> pa.Table:
    """Parse newline-delimited JSON objects into a table with exactly the schema's columns.

    Columns absent from every event are all-null; fields not in the schema are ignored;
    blank lines are skipped. Raises :class:`NotAnEventError` when a chunk starts with a
    line that is not an object or a line yields an all-null row, and
    ``pyarrow.ArrowInvalid`` for a line that is not JSON or a value that does not convert
    to its column's type.
    """
    target = arrow_schema(schema)
    spans = []
    for start, end in _chunks(ndjson):
        first = _LEADING_SPACE.match(ndjson, start, end).end()  # type: ignore[union-attr]
        if first == end:
            continue  # only blank lines
        if ndjson[first : first + 1] != b"{":
            raise NotAnEventError("event is not a JSON object")
        spans.append((first, end))
    if not spans:
        return target.empty_table()
    buffer = pa.py_buffer(ndjson)
    if len(spans) == 1:
        tables = [_read_chunk(buffer, *spans[0], schema)]
    else:
        tables = list(_parse_pool().map(lambda span: _read_chunk(buffer, *span, schema), spans))
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    if table.schema.names != target.names:
        table = table.select(target.names)
    # An all-null row needs a null in every column; one column without nulls (any required
    # column, normally) rules it out without looking at a single row.
    if all(column.null_count for column in table.columns):
        empty = functools.reduce(pc.and_, (pc.is_null(c) for c in table.columns))
        if pc.any(empty).as_py():
            raise NotAnEventError("event has none of the table's columns (null or {})")
    return table


@dataclass(frozen=True, slots=True)
class BadLine:
    """An event that could not be converted, where it came from and why."""

    offset: int
    index: int
    line: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Conversion:
    """The converted rows of a batch and the lines that failed."""

    table: pa.Table
    bad: tuple[BadLine, ...]


_FAILURES = (pa.ArrowInvalid, NotAnEventError)


def _lines_of(
    value: bytes, offset: int, schema: Schema, tables: list[pa.Table], bad: list[BadLine]
) -> None:
    items: list[tuple[int, bytes, bytes]] = []  # (index, line as sent, line stripped)
    for index, line in enumerate(value.split(b"\n")):
        stripped = line.strip()
        if not stripped:
            continue  # read_json skips blank lines too: not an event, not an error
        if stripped[:1] != b"{":
            bad.append(BadLine(offset, index, line, "event is not a JSON object"))
        else:
            items.append((index, line, stripped))
    _bisect_lines(items, offset, schema, tables, bad)


def _bisect_lines(
    items: Sequence[tuple[int, bytes, bytes]],
    offset: int,
    schema: Schema,
    tables: list[pa.Table],
    bad: list[BadLine],
) -> None:
    if not items:
        return
    try:
        tables.append(to_table(b"\n".join(item[2] for item in items), schema))
        return
    except _FAILURES as exc:
        if len(items) == 1:
            bad.append(BadLine(offset, items[0][0], items[0][1], str(exc)))
            return
    middle = len(items) // 2
    _bisect_lines(items[:middle], offset, schema, tables, bad)
    _bisect_lines(items[middle:], offset, schema, tables, bad)


def _bisect_messages(
    values: Sequence[bytes],
    offsets: Sequence[int],
    schema: Schema,
    tables: list[pa.Table],
    bad: list[BadLine],
) -> None:
    try:
        tables.append(to_table(b"\n".join(values), schema))
        return
    except _FAILURES:
        if len(values) == 1:
            _lines_of(values[0], offsets[0], schema, tables, bad)
            return
    middle = len(values) // 2
    _bisect_messages(values[:middle], offsets[:middle], schema, tables, bad)
    _bisect_messages(values[middle:], offsets[middle:], schema, tables, bad)


def convert(values: Sequence[bytes], offsets: Sequence[int], schema: Schema) -> Conversion:
    """Convert a batch of envelope values (``offsets`` parallel to them) to one table.

    The whole batch is parsed at once; only if that fails is it bisected to isolate the
    lines that do not convert. Row order follows the input.
    """
    if len(values) != len(offsets):
        raise ValueError(f"{len(values)} values but {len(offsets)} offsets")
    if not values:
        return Conversion(arrow_schema(schema).empty_table(), ())
    tables: list[pa.Table] = []
    bad: list[BadLine] = []
    _bisect_messages(values, offsets, schema, tables, bad)
    bad.sort(key=lambda item: (item.offset, item.index))
    if len(tables) == 1:
        table = tables[0]
    elif tables:
        table = pa.concat_tables(tables)
    else:
        table = arrow_schema(schema).empty_table()
    return Conversion(table, tuple(bad))


@dataclass(frozen=True, slots=True)
class HourGroup:
    """The rows of a table that fall in one UTC hour."""

    dt: str
    hour: int
    table: pa.Table


def split_by_hour(table: pa.Table, time_field: str, fallback_ms: int) -> list[HourGroup]:
    """Split rows by the UTC hour of ``time_field``, in hour order, with compute kernels.

    Rows with a null time — or every row when the schema has no time field — go to the
    hour of ``fallback_ms`` (epoch ms; the sink passes the Kafka timestamp, i.e. arrival
    time, as Firehose does); their time column stays null.
    """
    fallback = datetime.fromtimestamp(fallback_ms / 1000, UTC).replace(
        minute=0, second=0, microsecond=0
    )
    if table.num_rows == 0:
        return []
    if not time_field:
        return [HourGroup(fallback.strftime("%Y-%m-%d"), fallback.hour, table)]
    hours = pc.floor_temporal(table.column(time_field), unit="hour")
    if hours.null_count:
        hours = pc.fill_null(hours, pa.scalar(fallback, type=hours.type))
    bounds = pc.min_max(hours)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low == high:
        # The common case: one batch, one hour; no filtering at all.
        return [HourGroup(low.strftime("%Y-%m-%d"), low.hour, table)]
    groups = []
    for hour in sorted(pc.unique(hours).to_pylist()):
        mask = pc.equal(hours, pa.scalar(hour, type=hours.type))
        groups.append(HourGroup(hour.strftime("%Y-%m-%d"), hour.hour, table.filter(mask)))
    return groups


def write_parquet(table: pa.Table, path: Path, compression: str = "zstd") -> None:
    """Write a table as one Parquet file (``compression`` 'none' writes it uncompressed)."""
    pq.write_table(table, path, compression=None if compression == "none" else compression)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def error_records(
    bad: Sequence[BadLine],
    *,
    sink: str,
    table: str,
    topic: str,
    partition: int,
    failed_at: datetime,
) -> bytes:
    """The JSON lines describing failed events (DLQ-shaped, plus sink and table)."""
    lines = []
    for item in bad:
        try:
            payload: str | None = item.line.decode("utf-8")
            payload_b64 = None
        except UnicodeDecodeError:
            payload, payload_b64 = None, base64.b64encode(item.line).decode("ascii")
        lines.append(
            orjson.dumps(
                {
                    "failed_at": _iso(failed_at),
                    "sink": sink,
                    "table": table,
                    "error_type": FORMAT_CONVERSION_FAILED,
                    "reason": item.reason,
                    "source_topic": topic,
                    "source_partition": partition,
                    "source_offset": item.offset,
                    "source_index": item.index,
                    "payload": payload,
                    "payload_base64": payload_b64,
                }
            )
        )
    return b"\n".join(lines) + b"\n"


@dataclass(frozen=True, slots=True)
class FlushPlan:
    """The files one flush writes, with what they hold."""

    files: tuple[PlannedFile, ...]
    rows: int
    bad: tuple[BadLine, ...]


def plan_flush(
    batch: Batch,
    *,
    lake: Path,
    sink: str,
    table: str,
    schema: Schema,
    compression: str = "zstd",
    now: datetime | None = None,
) -> FlushPlan:
    """Convert a batch and plan its files (one per hour, plus one of errors if any).

    Nothing is written yet: the plan goes to ``ProgressStore.commit_flush``, which records
    the file names in its intent before writing them.
    """
    now = now or datetime.now(UTC)
    conversion = convert(batch.values, batch.offsets, schema)
    fallback_ms = batch.max_timestamp_ms or int(now.timestamp() * 1000)
    name = data_file_name(batch.topic, batch.partition, batch.first_offset, batch.last_offset)
    files: list[PlannedFile] = []
    for group in split_by_hour(conversion.table, schema.time_field, fallback_ms):
        path = partition_dir(lake, table, group.dt, group.hour) / name
        files.append(
            PlannedFile(path, functools.partial(_write_group, group.table, compression=compression))
        )
    if conversion.bad:
        errors = error_records(
            conversion.bad,
            sink=sink,
            table=table,
            topic=batch.topic,
            partition=batch.partition,
            failed_at=now,
        )
        path = error_dir(lake, table, now.strftime("%Y-%m-%d")) / error_file_name(
            batch.topic, batch.partition, batch.first_offset, batch.last_offset
        )
        files.append(PlannedFile(path, functools.partial(_write_bytes, errors)))
    return FlushPlan(tuple(files), conversion.table.num_rows, conversion.bad)


def _write_group(table: pa.Table, target: Path, *, compression: str) -> None:
    write_parquet(table, target, compression)


def _write_bytes(data: bytes, target: Path) -> None:
    target.write_bytes(data)

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

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from firelake.config import Schema
from firelake.grammars.prefix import Prefix, parse_prefix, render
from sinks.archive import archive_bytes
from sinks.buffer import Batch
from sinks.conversion import ConversionSpec, prepare_lines, unify
from sinks.paths import (
    FORMAT_CONVERSION_FAILED,
    archive_file_name,
    data_file_name,
    error_file_name,
)
from sinks.prefix import folder_keys, split_by_keys
from sinks.progress import PlannedFile

__all__ = [
    "CHUNK_SIZE",
    "BadLine",
    "Conversion",
    "FlushPlan",
    "Layout",
    "NotAnEventError",
    "arrow_schema",
    "convert",
    "error_records",
    "folder_chunks",
    "parquet_bytes",
    "plan_flush",
    "rows_by_folder",
    "to_table",
]

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


def _as_spec(schema: Schema | ConversionSpec | None) -> ConversionSpec:
    return schema if isinstance(schema, ConversionSpec) else ConversionSpec(schema)


def arrow_schema(schema: Schema | ConversionSpec) -> pa.Schema:
    """The Arrow schema of a table: its fields in order, all nullable."""
    target = _as_spec(schema).target
    assert target is not None, "an inferred schema has no Arrow schema before the data"
    return target


@functools.lru_cache(maxsize=64)
def _parse_options(spec: ConversionSpec) -> pj.ParseOptions:
    if spec.read_schema is None:
        return pj.ParseOptions()  # no schema: infer the columns
    # Fields outside the schema (e.g. enrichment a table does not keep) are dropped.
    return pj.ParseOptions(explicit_schema=spec.read_schema, unexpected_field_behavior="ignore")


@functools.lru_cache(maxsize=64)
def _cast_schema(spec: ConversionSpec) -> pa.Schema | None:
    """The types read columns are cast to after parsing (dates), None when none need it."""
    if spec.read_schema is None or spec.target is None:
        return None
    cast = pa.schema([spec.target.field(name) for name in spec.read_schema.names])
    return None if cast == spec.read_schema else cast


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


def _read_chunk(buffer: pa.Buffer, start: int, end: int, spec: ConversionSpec) -> pa.Table:
    return pj.read_json(
        pa.BufferReader(buffer.slice(start, end - start)),
        # One block per call: the block starts where we checked it does.
        read_options=pj.ReadOptions(block_size=end - start + 1, use_threads=False),
        parse_options=_parse_options(spec),
    )


def to_table(ndjson: bytes, schema: Schema | ConversionSpec) -> pa.Table:
    """Parse newline-delimited JSON objects into a table of the schema's read columns.

    Columns absent from every event are all-null; fields not in the schema are ignored;
    blank lines are skipped; dates are cast from their text. Raises
    :class:`NotAnEventError` when a chunk starts with a line that is not an object or a
    line yields an all-null row, and ``pyarrow.ArrowInvalid`` for a line that is not JSON
    or a value that does not convert to its column's type.
    """
    spec = _as_spec(schema)
    spans = []
    for start, end in _chunks(ndjson):
        first = _LEADING_SPACE.match(ndjson, start, end).end()  # type: ignore[union-attr]
        if first == end:
            continue  # only blank lines
        if ndjson[first : first + 1] != b"{":
            raise NotAnEventError("event is not a JSON object")
        spans.append((first, end))
    cast = _cast_schema(spec)
    if not spans:
        empty = cast or spec.read_schema or pa.schema([])
        return empty.empty_table()
    buffer = pa.py_buffer(ndjson)
    if len(spans) == 1:
        tables = [_read_chunk(buffer, *spans[0], spec)]
    else:
        tables = list(_parse_pool().map(lambda span: _read_chunk(buffer, *span, spec), spans))
    if spec.read_schema is None:
        unified = unify(tables)
        if len(unified) > 1:
            # Let the bisection split the batch where the inferred types disagree.
            raise pa.ArrowInvalid("inferred column types disagree between blocks")
        table = unified[0]
    else:
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        if table.schema.names != spec.read_schema.names:
            table = table.select(spec.read_schema.names)
        if cast is not None:
            table = table.cast(cast)
    # An all-null row needs a null in every column; one column without nulls (any required
    # column, normally) rules it out without looking at a single row. The Python pass has
    # refused non-objects already, and with it `{}` may stand for a map-only event.
    if not spec.python_pass and table.num_columns and all(c.null_count for c in table.columns):
        empty_rows = functools.reduce(pc.and_, (pc.is_null(c) for c in table.columns))
        if pc.any(empty_rows).as_py():
            raise NotAnEventError("event has none of the table's columns (null or {})")
    return table


@dataclass(frozen=True, slots=True)
class BadLine:
    """An event that could not be converted, where it came from, when it came, and why."""

    offset: int
    index: int
    line: bytes
    reason: str
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class Conversion:
    """The converted rows of a batch and the lines that failed.

    ``tables`` holds one table, or for an inferred schema whose batches disagree beyond
    widening, one per schema; ``table`` is the first.
    """

    tables: tuple[pa.Table, ...]
    bad: tuple[BadLine, ...]

    @property
    def table(self) -> pa.Table:
        return self.tables[0]

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.tables)


_FAILURES = (pa.ArrowInvalid, NotAnEventError)


def _lines_of(
    value: bytes, offset: int, spec: ConversionSpec, tables: list[pa.Table], bad: list[BadLine]
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
    _bisect_lines(items, offset, spec, tables, bad)


def _bisect_lines(
    items: Sequence[tuple[int, bytes, bytes]],
    offset: int,
    spec: ConversionSpec,
    tables: list[pa.Table],
    bad: list[BadLine],
) -> None:
    if not items:
        return
    try:
        tables.append(to_table(b"\n".join(item[2] for item in items), spec))
        return
    except _FAILURES as exc:
        if len(items) == 1:
            bad.append(BadLine(offset, items[0][0], items[0][1], str(exc)))
            return
    middle = len(items) // 2
    _bisect_lines(items[:middle], offset, spec, tables, bad)
    _bisect_lines(items[middle:], offset, spec, tables, bad)


def _bisect_messages(
    values: Sequence[bytes],
    offsets: Sequence[int],
    spec: ConversionSpec,
    tables: list[pa.Table],
    bad: list[BadLine],
) -> None:
    try:
        tables.append(to_table(b"\n".join(values), spec))
        return
    except _FAILURES:
        if len(values) == 1:
            _lines_of(values[0], offsets[0], spec, tables, bad)
            return
    middle = len(values) // 2
    _bisect_messages(values[:middle], offsets[:middle], spec, tables, bad)
    _bisect_messages(values[middle:], offsets[middle:], spec, tables, bad)


def _side_columns(
    prepared: Sequence[tuple[int, list[bytes | None], dict[str, list[object]]]],
    bad: Sequence[BadLine],
    spec: ConversionSpec,
) -> dict[str, pa.Array]:
    """The Python pass's columns, aligned with the rows that converted (input order)."""
    failed = {(b.offset, b.index) for b in bad}
    columns: dict[str, list[object]] = {}
    for offset, lines, side in prepared:
        for name in side:
            columns.setdefault(name, [])
        for index, line in enumerate(lines):
            if line is None or not line.strip() or (offset, index) in failed:
                continue
            for name, values in side.items():
                columns[name].append(values[index])
    target = spec.target
    assert target is not None
    return {
        name: pa.array(values, type=target.field(name).type) for name, values in columns.items()
    }


def convert(
    values: Sequence[bytes],
    offsets: Sequence[int],
    schema: Schema | ConversionSpec | None,
    timestamps: Sequence[int] | None = None,
) -> Conversion:
    """Convert a batch of envelope values (``offsets`` parallel to them) to rows.

    The whole batch is parsed at once; only if that fails is it bisected to isolate the
    lines that do not convert. Row order follows the input. ``timestamps`` (Kafka's, ms)
    give each failed line its arrival time.
    """
    spec = _as_spec(schema)
    if len(values) != len(offsets):
        raise ValueError(f"{len(values)} values but {len(offsets)} offsets")
    bad: list[BadLine] = []
    prepared: list[tuple[int, list[bytes | None], dict[str, list[object]]]] = []
    if spec.python_pass and values:
        rewritten = []
        for value, offset in zip(values, offsets, strict=True):
            original = value.split(b"\n")
            result = prepare_lines(original, spec)
            for index, reason in result.errors.items():
                bad.append(BadLine(offset, index, original[index], reason))
            prepared.append((offset, result.lines, result.side))
            rewritten.append(b"\n".join(line or b"" for line in result.lines))
        values = rewritten
    tables: list[pa.Table] = []
    if values:
        _bisect_messages(values, offsets, spec, tables, bad)
    if timestamps is not None and bad:
        arrival = dict(zip(offsets, timestamps, strict=True))
        bad = [BadLine(b.offset, b.index, b.line, b.reason, arrival.get(b.offset, 0)) for b in bad]
    bad.sort(key=lambda item: (item.offset, item.index))
    target = spec.target
    if target is None:  # inferred
        out = unify([t for t in tables if t.num_rows]) or [pa.table({})]
        return Conversion(tuple(out), tuple(bad))
    read = _cast_schema(spec) or spec.read_schema
    assert read is not None
    table = (
        pa.concat_tables(tables)
        if len(tables) > 1
        else (tables[0] if tables else read.empty_table())
    )
    if prepared:
        for name, column in _side_columns(prepared, bad, spec).items():
            table = table.append_column(target.field(name), column)
    for name in target.names:
        if name not in table.column_names:  # a side column of a batch with no good row
            table = table.append_column(
                target.field(name), pa.nulls(table.num_rows, target.field(name).type)
            )
    return Conversion((table.select(target.names),), tuple(bad))


def folder_chunks(
    conversion: Conversion,
    prefix: Prefix,
    *,
    time_field: str,
    fallback_ms: int,
    table: str,
) -> tuple[list[tuple[pa.Table, str | pa.ChunkedArray]], set[str]]:
    """Converted rows with each row's output folder, and the set of folders they touch."""
    fallback = datetime.fromtimestamp(fallback_ms / 1000, UTC)
    chunks: list[tuple[pa.Table, str | pa.ChunkedArray]] = []
    folders: set[str] = set()
    for rows in conversion.tables:
        if not rows.num_rows:
            continue
        keys = folder_keys(prefix, rows, time_field=time_field, fallback=fallback, table=table)
        if isinstance(keys, str):
            folders.add(keys)
        else:
            # Held until the flush: dictionary-encoded, a row costs 4 bytes, not its path.
            keys = pc.dictionary_encode(keys)
            for chunk in keys.chunks:
                folders.update(chunk.dictionary.to_pylist())
        chunks.append((rows, keys))
    return chunks, folders


def rows_by_folder(
    chunks: Sequence[tuple[pa.Table, str | pa.ChunkedArray]], inferred: bool = False
) -> dict[str, list[pa.Table]]:
    """Buffered chunks as folder -> tables (one per schema: several only when inferred).

    The chunks are concatenated first, so each folder is one slice of one sorted table.
    """
    groups: dict[pa.Schema, list[tuple[pa.Table, str | pa.ChunkedArray]]] = {}
    if inferred:
        tables = unify([t for t, _ in chunks])
        if len(tables) == 1:
            groups[tables[0].schema] = [(tables[0], _concat_keys(chunks))]
        else:
            for rows, keys in chunks:
                groups.setdefault(rows.schema, []).append((rows, keys))
    else:
        groups[pa.schema([])] = list(chunks)
    out: dict[str, list[pa.Table]] = {}
    for members in groups.values():
        rows = members[0][0] if len(members) == 1 else pa.concat_tables([t for t, _ in members])
        keys = members[0][1] if len(members) == 1 else _concat_keys(members)
        for folder, piece in split_by_keys(rows, keys):
            out.setdefault(folder, []).append(piece)
    return out


def _concat_keys(chunks: Sequence[tuple[pa.Table, str | pa.ChunkedArray]]) -> str | pa.ChunkedArray:
    keys = [k for _, k in chunks]
    if all(isinstance(k, str) for k in keys) and len(set(keys)) == 1:
        return keys[0]
    arrays: list[pa.Array] = []
    for rows, k in chunks:
        if isinstance(k, str):
            arrays.append(pa.array([k] * rows.num_rows, pa.string()))
        else:
            arrays.extend(k.cast(pa.string()).chunks)
    return pa.chunked_array(arrays, pa.string())


def parquet_bytes(table: pa.Table, compression: str = "zstd") -> bytes:
    """A table as the bytes of one Parquet file ('none' writes it uncompressed)."""
    out = pa.BufferOutputStream()
    pq.write_table(table, out, compression=None if compression == "none" else compression)
    return out.getvalue().to_pybytes()


#: Firehose's errorCode for a record that is not valid JSON or does not fit the schema.
_ERROR_CODE = "DataFormatConversion.MalformedData"


def error_records(
    bad: Sequence[BadLine],
    *,
    sink: str,
    table: str,
    topic: str,
    partition: int,
) -> bytes:
    """JSON lines in Firehose's error envelope, plus where each record came from."""
    lines = []
    for item in bad:
        lines.append(
            orjson.dumps(
                {
                    "attemptsMade": 1,
                    "arrivalTimestamp": item.timestamp_ms,
                    "errorCode": _ERROR_CODE,
                    "errorMessage": item.reason,
                    "rawData": base64.b64encode(item.line).decode("ascii"),
                    "sink": sink,
                    "table": table,
                    "sourceTopic": topic,
                    "sourcePartition": partition,
                    "sourceOffset": item.offset,
                    "sourceIndex": item.index,
                }
            )
        )
    return b"\n".join(lines) + b"\n"


@dataclass(frozen=True)
class Layout:
    """Where and how one sink writes: table, templates, codec, archive on or off."""

    sink: str
    table: str
    prefix: Prefix
    error_prefix: Prefix
    archive_prefix: Prefix | None = None
    compression: str = "zstd"
    inferred: bool = False

    @classmethod
    def of(cls, sink, schema: Schema | None) -> Layout:  # sink: firelake.config.SinkConfig
        return cls(
            sink=sink.name,
            table=sink.table,
            prefix=parse_prefix(sink.prefix),
            error_prefix=parse_prefix(sink.error_prefix),
            archive_prefix=parse_prefix(sink.archive_prefix) if sink.archive else None,
            compression=sink.compression,
            inferred=schema is None,
        )


@dataclass(frozen=True, slots=True)
class FlushPlan:
    """The files one flush writes, with what they hold."""

    files: tuple[PlannedFile, ...]
    rows: int
    bad: tuple[BadLine, ...]


def plan_flush(batch: Batch, layout: Layout, now: datetime | None = None) -> FlushPlan:
    """Plan a batch's files: one Parquet file per folder, the errors, the raw archive.

    Nothing is written yet, and nothing is serialised: each file's bytes are made when
    ``ProgressStore.commit_flush`` puts it, after recording every key in its intent.
    """
    now = now or datetime.now(UTC)
    first, last = batch.first_offset, batch.last_offset
    files: list[PlannedFile] = []
    rows = 0
    parts = rows_by_folder(batch.chunks, layout.inferred)
    for folder in sorted(parts):
        for variant, table in enumerate(parts[folder]):
            if not table.num_rows:
                continue
            rows += table.num_rows
            name = data_file_name(batch.topic, batch.partition, first, last, variant)
            files.append(
                PlannedFile(
                    f"{layout.table}/{folder}{name}",
                    functools.partial(parquet_bytes, table, layout.compression),
                )
            )
    bad: tuple[BadLine, ...] = tuple(batch.bad)
    if bad:
        folder = render(
            layout.error_prefix, when=now, table=layout.table, error_type=FORMAT_CONVERSION_FAILED
        )
        data = error_records(
            bad, sink=layout.sink, table=layout.table, topic=batch.topic, partition=batch.partition
        )
        files.append(
            PlannedFile(
                folder + error_file_name(batch.topic, batch.partition, first, last),
                functools.partial(bytes, data),
            )
        )
    if layout.archive_prefix is not None and batch.values:
        arrived = datetime.fromtimestamp((batch.max_timestamp_ms or 0) / 1000, UTC)
        folder = render(layout.archive_prefix, when=arrived, table=layout.table)
        files.append(
            PlannedFile(
                folder + archive_file_name(batch.topic, batch.partition, first, last),
                functools.partial(archive_bytes, batch),
            )
        )
    return FlushPlan(tuple(files), rows, bad)

"""A batch of envelopes as one Arrow table, and its partial aggregates computed by DuckDB.

Per-event costs are paid per batch: the lines of every envelope of a batch are joined and
parsed by ``pyarrow.json.read_json`` in C (with the source stream's schema when it has one),
then two DuckDB statements over that table do the rest without Python per event:

1. *project*: each event's partition, time (µs), key columns, the window filter, and the
   inner value and FILTER condition of every aggregate; with each event's watermark — its
   partition's largest earlier time (this batch or before) minus grace — so lateness is
   decided in the partition's order (:mod:`agents.windows.watermarks`);
2. *aggregate*: the windows each event falls in (hopping windows by a join with
   ``range(size / step)``), late (event, window) pairs apart, and the partial aggregates per
   (window, key) — per within-batch session for sessions, per event for sliding results.

Tumbling and hopping windows leave their partials in a DuckDB table on the same connection,
which the columnar state merges without a Python row per group
(:class:`~agents.windows.state.FixedState`); sliding windows and sessions get one tuple per
group. Late pairs come back one tuple each. Merges are exact
(:mod:`agents.windows.aggregates`).
"""

from __future__ import annotations

import bisect
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from agents.windows.aggregates import AggregateSpec, from_columns, partial_sql
from agents.windows.assign import US, Geometry
from agents.windows.watermarks import NO_TIME
from firelake.config import Schema, WindowConfig
from streams.envelope import (
    FORMAT_NDJSON,
    HEADER_COUNT,
    HEADER_FORMAT,
    EnvelopeError,
    decode,
    header,
)

__all__ = [
    "PARTIALS_TABLE",
    "BatchPartials",
    "BatchReader",
    "Group",
    "LatePair",
    "Rows",
    "SourceMessage",
    "Unreadable",
]

_MISSING_COLUMN = re.compile(r'Referenced column "([^"]+)" not found')


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """One message of the source stream, as the edge read it."""

    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] | None = None
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Group:
    """Partial aggregates of one group: ``start``/``end`` are the window (fixed windows),
    the session's first and last event time (sessions) or the event's time (sliding);
    ``seq`` orders sliding results that share a time."""

    key: tuple[Any, ...]
    start: int
    end: int
    count: int
    partials: list[Any]
    seq: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True, slots=True)
class LatePair:
    """An event (by its row) that missed the window ``[start, end)`` at ``watermark``."""

    row: int
    start: int
    end: int
    watermark: int


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A line that is not a JSON object of the stream's shape, or an event without time."""

    row: int
    reason: str


class Rows:
    """Every event line of a batch by row number, with its source partition, offset, index
    in its envelope and ingest time — kept per message, so building them costs per message,
    not per event; ``rows[i]`` is ``(partition, offset, index, line)``."""

    __slots__ = ("_messages", "_starts", "ingest", "lines", "partitions")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.partitions: list[int] = []
        self.ingest: list[int] = []
        self._starts: list[int] = []
        self._messages: list[tuple[int, int]] = []

    def add(self, partition: int, offset: int, timestamp_us: int, lines: Sequence[bytes]) -> int:
        """Append one message's lines; the row number of its first."""
        first = len(self.lines)
        self._starts.append(first)
        self._messages.append((partition, offset))
        self.lines.extend(lines)
        self.partitions.extend([partition] * len(lines))
        self.ingest.extend([timestamp_us] * len(lines))
        return first

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, row: int) -> tuple[int, int, int, bytes]:
        message = bisect.bisect_right(self._starts, row) - 1
        partition, offset = self._messages[message]
        return partition, offset, row - self._starts[message], self.lines[row]


@dataclass
class BatchPartials:
    """What one batch adds: groups, late pairs, per-partition largest times, the rows."""

    groups: list[Group] = field(default_factory=list)
    late: list[LatePair] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    max_time: dict[int, int] = field(default_factory=dict)
    #: (partition, offset, index in envelope, line) of every row, by row number.
    rows: Rows = field(default_factory=Rows)
    events: int = 0
    #: Fixed windows: the DuckDB table (on the reader's connection) holding the partials,
    #: one row per (window, key): ``__k0…``, ``__s``, ``__c``, ``__a0…``.
    partials_table: str | None = None


#: The table a batch's fixed-window partials are left in (see :class:`BatchPartials`).
PARTIALS_TABLE = "__partials"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _arrow_schema(schema: Schema | None) -> pa.Schema | None:
    if schema is None:
        return None
    from sinks.conversion import arrow_type

    fields = []
    for spec in schema.fields:
        kind = spec.type
        if kind.kind == "map":
            continue  # the JSON reader cannot build maps; an aggregate over one is refused
        fields.append(pa.field(spec.name, arrow_type(kind, for_reading=True)))
    return pa.schema(fields)


def _lines(message: SourceMessage) -> Sequence[bytes]:
    """A message's event lines; an envelope's keys are not parsed (windows group by fields)."""
    if header(message.headers, HEADER_FORMAT) != FORMAT_NDJSON:
        return decode(message.value, message.headers, message.key).lines
    value = message.value or b""
    lines = value.split(b"\n")
    count = header(message.headers, HEADER_COUNT)
    if count is None or count != str(len(lines)).encode():
        # Let the codec say what is wrong with it.
        return decode(message.value, message.headers, message.key).lines
    return lines


class BatchReader:
    """Turns batches of source messages into :class:`BatchPartials` for one window."""

    def __init__(
        self,
        spec: WindowConfig,
        schema: Schema | None,
        aggregates: Sequence[AggregateSpec],
        geometry: Geometry,
    ) -> None:
        self.spec = spec
        self.aggregates = list(aggregates)
        self.geometry = geometry
        self.grace_us = round(spec.grace_seconds * US)
        self.arrow_schema = _arrow_schema(schema)
        self.time_field = spec.time_field or (schema.time_field if schema is not None else "")
        self.con = duckdb.connect(config={"threads": "1"})
        self._plain = all(
            a.kind in ("count_star", "count", "sum", "min", "max") for a in aggregates
        )
        self._counts = [a.kind in ("count_star", "count") for a in aggregates]

    def close(self) -> None:
        self.con.close()

    # ------------------------------------------------------------------ parsing

    def _read(self, lines: list[bytes]) -> pa.Table:
        options = (
            pa_json.ParseOptions(
                explicit_schema=self.arrow_schema, unexpected_field_behavior="ignore"
            )
            if self.arrow_schema is not None
            else pa_json.ParseOptions()
        )
        return pa_json.read_json(io.BytesIO(b"\n".join(lines)), parse_options=options)

    def _table(self, rows: Rows, out: BatchPartials) -> pa.Table | None:
        """The readable rows' events as a table with their row number, partition and ingest
        time; rows that do not parse as the stream's events go to ``out.unreadable``."""
        bad = {u.row for u in out.unreadable}
        if bad:
            candidates = [i for i in range(len(rows)) if i not in bad]
            lines = [rows.lines[i] for i in candidates]
        else:
            candidates, lines = None, rows.lines
        try:
            table: pa.Table | None = self._read(lines)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            table = None
        if table is None or table.num_rows != len(lines):
            keep: list[int] = []
            for row in candidates if candidates is not None else range(len(rows)):
                line = rows.lines[row]
                try:
                    if line.lstrip().startswith(b"{") and self._read([line]).num_rows == 1:
                        keep.append(row)
                        continue
                    reason = "not a JSON object"
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    reason = str(exc).splitlines()[0]
                out.unreadable.append(Unreadable(row, f"unreadable event: {reason}"))
            table = self._read([rows.lines[i] for i in keep]) if keep else None
            candidates = keep
        if table is None:
            return None
        if candidates is None:
            index = pa.array(range(len(rows)), pa.int64())
            partitions, ingest = rows.partitions, rows.ingest
        else:
            index = pa.array(candidates, pa.int64())
            partitions = [rows.partitions[i] for i in candidates]
            ingest = [rows.ingest[i] for i in candidates]
        table = table.append_column("__i", index)
        table = table.append_column("__p", pa.array(partitions, pa.int64()))
        return table.append_column("__ts", pa.array(ingest, pa.int64()))

    # ------------------------------------------------------------------ SQL

    def _time_sql(self, table: pa.Table) -> str:
        if self.spec.time == "ingest":
            return "__ts"
        name = self.time_field
        if name not in table.column_names:
            return "CAST(NULL AS BIGINT)"
        kind = table.schema.field(name).type
        column = _quote(name)
        if pa.types.is_timestamp(kind):
            return f"epoch_us({column})"
        if pa.types.is_integer(kind):
            return f"({column} * 1000)"  # epoch milliseconds
        return f"epoch_us(TRY_CAST({column} AS TIMESTAMPTZ))"

    def _running_top(self, table: pa.Table, prior: dict[int, int]) -> pa.Table | None:
        """The batch with ``__t`` (µs) and ``__top`` — each event's partition's largest
        earlier time — computed with numpy when the time column is typed (the common case:
        a stream with a schema, or ingest time); None to let SQL do it."""
        if self.spec.time == "ingest":
            column = table.column("__ts")
        elif self.time_field in table.column_names and pa.types.is_timestamp(
            table.schema.field(self.time_field).type
        ):
            column = table.column(self.time_field)
        else:
            return None
        times = pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64())
        filled = times.fill_null(NO_TIME).combine_chunks()
        parts = table.column("__p").combine_chunks()
        pieces: list[pa.Array] = []
        positions: list[pa.Array] = []
        for partition in pc.unique(parts).to_pylist():
            index = pc.indices_nonzero(pc.equal(parts, partition))
            running = pc.cumulative_max(filled.take(index))
            start = pa.array([prior.get(partition, NO_TIME)], pa.int64())
            before = pa.concat_arrays([start, running.slice(0, len(running) - 1)])
            pieces.append(pc.max_element_wise(before, start[0]))
            positions.append(index)
        order = pc.sort_indices(pa.concat_arrays(positions))
        top = pa.concat_arrays(pieces).take(order)
        table = table.append_column("__tt", times)
        return table.append_column("__top", top)

    def _project_sql(self, table: pa.Table, prior: dict[int, int]) -> str:
        keys = ", ".join(f"{_quote(k)} AS __k{j}" for j, k in enumerate(self.spec.key))
        values = []
        for index, agg in enumerate(self.aggregates):
            values.append(f"({agg.inner or 'NULL'}) AS __v{index}")
            values.append(f"coalesce(({agg.filter or 'TRUE'}), FALSE) AS __f{index}")
        precomputed = "__top" in table.column_names
        select = ", ".join(
            [
                "__i",
                "__p",
                "__tt AS __t" if precomputed else f"{self._time_sql(table)} AS __t",
                *(["__top"] if precomputed else []),
                *([keys] if keys else []),
                f"coalesce(({self.spec.filter or 'TRUE'}), FALSE) AS __pass",
                *values,
            ]
        )
        if precomputed:
            return f"SELECT {select} FROM batch"
        cases = " ".join(f"WHEN {p} THEN {t}" for p, t in prior.items())
        prior_sql = f"CASE __p {cases} ELSE {NO_TIME} END" if cases else str(NO_TIME)
        return (
            f"SELECT *, greatest(coalesce(max(__t) OVER (PARTITION BY __p ORDER BY __i "
            f"ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), {NO_TIME}), {prior_sql}) "
            f"AS __top FROM (SELECT {select} FROM batch)"
        )

    def _partial_columns(self) -> str:
        columns = ["count(*)"]
        for index, agg in enumerate(self.aggregates):
            columns.extend(partial_sql(agg, f"__v{index}", f"__f{index}"))
        return ", ".join(columns)

    def _aliased_partials(self) -> str:
        """The partial columns named ``__c`` (events) and ``__a0, __a1, …`` in order."""
        columns = ["count(*) AS __c"]
        position = 0
        for index, agg in enumerate(self.aggregates):
            for sql in partial_sql(agg, f"__v{index}", f"__f{index}"):
                columns.append(f"{sql} AS __a{position}")
                position += 1
        return ", ".join(columns)

    def _widths(self) -> list[int]:
        return [2 if a.kind == "avg" else 1 for a in self.aggregates]

    def _partials(self, values: Sequence[Any]) -> list[Any]:
        if self._plain:
            # count, sum, min, max: the partial is the column's value as DuckDB gave it.
            return [
                v if v is not None or not c else 0
                for v, c in zip(values, self._counts, strict=True)
            ]
        out = []
        position = 0
        for agg, width in zip(self.aggregates, self._widths(), strict=True):
            out.append(from_columns(agg, list(values[position : position + width])))
            position += width
        return out

    def _run(self, table: pa.Table, prior: dict[int, int], closed: int, out: BatchPartials):
        con = self.con
        table = self._running_top(table, prior) or table
        con.register("batch", table)
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE rows AS {self._project_sql(table, prior)}")
        finally:
            con.unregister("batch")
        keys = [f"__k{j}" for j in range(len(self.spec.key))]
        key_list = ", ".join(keys)
        key_prefix = key_list + ", " if keys else ""
        nk = len(keys)
        grace = self.grace_us
        cut = f"greatest(__top - {grace}, {closed})"
        for partition, top in con.execute(
            "SELECT __p, max(__t) FROM rows WHERE __t IS NOT NULL GROUP BY __p"
        ).fetchall():
            out.max_time[partition] = top
        for (row,) in con.execute("SELECT __i FROM rows WHERE __pass AND __t IS NULL").fetchall():
            out.unreadable.append(Unreadable(row, f"no event time in {self.time_field!r}"))
        geometry = self.geometry
        partials = self._partial_columns()
        if geometry.type in ("tumbling", "hopping"):
            size, step = geometry.size, geometry.step
            windows = (
                f"SELECT *, __t - ((__t % {step}) + {step}) % {step} - j * {step} AS __s, "
                f"{cut} AS __cut FROM rows, range({geometry.hops}) AS hops(j) "
                "WHERE __pass AND __t IS NOT NULL"
            )
            con.execute(f"CREATE OR REPLACE TEMP TABLE win AS {windows}")
            for row, start, mark in con.execute(
                f"SELECT __i, __s, __cut FROM win WHERE __s + {size} <= __cut ORDER BY __i, __s"
            ).fetchall():
                out.late.append(LatePair(row, start, start + size, mark))
            # The partials stay in DuckDB (table PARTIALS_TABLE on this connection): the
            # fixed-window state merges them there, column-wise, without a row in Python.
            query = (
                f"SELECT {key_prefix}__s, {self._aliased_partials()} FROM win "
                f"WHERE __s + {size} > __cut GROUP BY {key_prefix}__s"
            )
            con.execute(f"CREATE OR REPLACE TEMP TABLE {PARTIALS_TABLE} AS {query}")
            out.partials_table = PARTIALS_TABLE
            return
        # Sliding results and sessions: an event is late once the watermark passed it.
        for row, t, mark in con.execute(
            f"SELECT __i, __t, {cut} FROM rows WHERE __pass AND __t IS NOT NULL "
            f"AND __t + 1 <= {cut} ORDER BY __i"
        ).fetchall():
            if geometry.type == "session":
                out.late.append(LatePair(row, t, t + geometry.gap, mark))
            else:
                out.late.append(LatePair(row, t - geometry.size, t, mark))
        live = f"SELECT * FROM rows WHERE __pass AND __t IS NOT NULL AND __t + 1 > {cut}"
        if geometry.type == "sliding":
            query = (
                f"SELECT {key_prefix}__t, __i, {partials} FROM ({live}) "
                f"GROUP BY {key_prefix}__t, __i"
            )
            for values in con.execute(query).fetchall():
                t, row = values[nk], values[nk + 1]
                p, offset, index, _ = out.rows[row]
                out.groups.append(
                    Group(
                        tuple(values[:nk]),
                        t,
                        t,
                        values[nk + 2],
                        self._partials(values[nk + 3 :]),
                        (p, offset, index),
                    )
                )
            return
        partition_by = f"PARTITION BY {key_list} " if keys else ""
        query = f"""
            WITH live AS ({live}),
            marked AS (
                SELECT *, CASE WHEN __t - lag(__t) OVER ({partition_by}ORDER BY __t)
                               < {geometry.gap} THEN 0 ELSE 1 END AS __new
                FROM live),
            numbered AS (
                SELECT *, sum(__new) OVER ({partition_by}ORDER BY __t, __new DESC
                                          ROWS UNBOUNDED PRECEDING) AS __sid
                FROM marked)
            SELECT {key_prefix}min(__t), max(__t), {partials}
            FROM numbered GROUP BY {key_prefix}__sid"""
        for values in con.execute(query).fetchall():
            out.groups.append(
                Group(
                    tuple(values[:nk]),
                    values[nk],
                    values[nk + 1],
                    values[nk + 2],
                    self._partials(values[nk + 3 :]),
                )
            )

    def read(
        self, messages: Sequence[SourceMessage], prior: dict[int, int], closed: int
    ) -> BatchPartials:
        """The partials of a batch, with ``prior`` the largest event time per partition
        before it and ``closed`` the watermark windows were closed at."""
        out = BatchPartials()
        rows = out.rows
        for message in messages:
            stamp = message.timestamp_ms * 1000
            try:
                lines = _lines(message)
            except EnvelopeError as exc:
                first = rows.add(message.partition, message.offset, stamp, [message.value or b""])
                out.unreadable.append(Unreadable(first, f"envelope: {exc}"))
                continue
            rows.add(message.partition, message.offset, stamp, lines)
        out.events = len(rows)
        table = self._table(rows, out) if len(rows) else None
        if table is not None and table.num_rows:
            self._run_with_missing_columns(table, prior, closed, out)
        return out

    def _run_with_missing_columns(
        self, table: pa.Table, prior: dict[int, int], closed: int, out: BatchPartials
    ) -> None:
        """Run the statements; without a schema, a field no event of the batch has reads as
        NULL (as it would in the lake) instead of failing the batch."""
        for _ in range(64):
            try:
                self._run(table, prior, closed, out)
                return
            except duckdb.BinderException as exc:
                match = _MISSING_COLUMN.search(str(exc))
                if self.arrow_schema is not None or match is None:
                    raise
                table = table.append_column(match.group(1), pa.nulls(table.num_rows))
        raise RuntimeError("too many missing columns")

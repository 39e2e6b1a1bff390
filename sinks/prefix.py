"""Firehose-style prefix templates: where in the lake a row, an error or an archive goes.

A template is literal text with expressions, as in Firehose's ``Prefix`` and
``ErrorOutputPrefix``::

    product=!{partitionKeyFromQuery:product}/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/

- ``!{timestamp:<pattern>}`` — the row's time (the schema's time field, else the Kafka
  timestamp, i.e. arrival time as on Firehose) in UTC, formatted with the Java pattern
  letters Firehose uses: ``yyyy yy MM dd HH mm ss``; any other letter is refused.
- ``!{partitionKeyFromQuery:<column>}`` — the value of a top-level column (Firehose's jq
  query ``.column``); a null or empty value becomes ``__HIVE_DEFAULT_PARTITION__`` and a
  ``/`` in a value is written ``%2F``, so a value never adds or escapes a folder.
- ``!{firehose:error-output-type}`` — the error category (``format-conversion-failed``).
- ``!{firehose:random-string}`` is refused: file names here are deterministic, that is
  what makes a rewritten flush replace its files instead of duplicating them.
- ``!{table}`` — Firelake's own: the sink's table name.

Rendering is vectorised: :func:`split_rows` builds each row's folder with Arrow compute
kernels (strftime, cast, join), then cuts the table into one slice per folder after one
stable sort — no Python per row. Pure logic: no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "DEFAULT_PARTITION",
    "Prefix",
    "PrefixError",
    "PrefixPart",
    "folder_keys",
    "parse_prefix",
    "render",
    "split_by_keys",
    "split_rows",
]

#: The folder value of a null or empty partition key (Hive's, which DuckDB reads as NULL).
DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"

_EXPRESSION = re.compile(r"!\{([^{}]*)\}")
_JAVA_TOKENS = {
    "yyyy": "%Y",
    "yy": "%y",
    "MM": "%m",
    "dd": "%d",
    "HH": "%H",
    "mm": "%M",
    "ss": "%S",
}
_JAVA_RUN = re.compile(r"([A-Za-z])\1*")
_COLUMN = re.compile(r"^\.?([A-Za-z_][A-Za-z0-9_]{0,100})$")


class PrefixError(ValueError):
    """A template that cannot be used, with the reason."""


@dataclass(frozen=True, slots=True)
class PrefixPart:
    """One piece of a template: ``kind`` is literal, timestamp, field, error_type or table."""

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class Prefix:
    """A parsed template."""

    text: str
    parts: tuple[PrefixPart, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        """The columns its ``partitionKeyFromQuery`` expressions read."""
        return tuple(p.value for p in self.parts if p.kind == "field")

    @property
    def uses_time(self) -> bool:
        return any(p.kind == "timestamp" for p in self.parts)


def _strftime_pattern(java: str) -> str:
    out = []
    position = 0
    for match in _JAVA_RUN.finditer(java):
        out.append(java[position : match.start()].replace("%", "%%"))
        token = match.group(0)
        if token not in _JAVA_TOKENS:
            raise PrefixError(
                f"timestamp pattern {java!r}: {token!r} is not one of {', '.join(_JAVA_TOKENS)}"
            )
        out.append(_JAVA_TOKENS[token])
        position = match.end()
    out.append(java[position:].replace("%", "%%"))
    return "".join(out)


@functools.lru_cache(maxsize=256)
def parse_prefix(text: str) -> Prefix:
    """Parse and check a template; raises :class:`PrefixError` naming what is wrong."""
    if text.startswith("/") or "//" in text:
        raise PrefixError(f"{text!r}: no leading '/' and no empty folder")
    if text and not text.endswith("/"):
        raise PrefixError(f"{text!r}: a prefix names folders, so it ends with '/'")
    parts: list[PrefixPart] = []
    position = 0
    for match in _EXPRESSION.finditer(text):
        if match.start() > position:
            parts.append(PrefixPart("literal", text[position : match.start()]))
        namespace, _, argument = match.group(1).partition(":")
        namespace, argument = namespace.strip(), argument.strip()
        if namespace == "timestamp":
            parts.append(PrefixPart("timestamp", _strftime_pattern(argument)))
        elif namespace == "partitionKeyFromQuery":
            column = _COLUMN.match(argument)
            if column is None:
                raise PrefixError(f"!{{{match.group(1)}}}: a top-level column name is needed")
            parts.append(PrefixPart("field", column.group(1)))
        elif namespace == "firehose" and argument == "error-output-type":
            parts.append(PrefixPart("error_type", ""))
        elif namespace == "table" and not argument:
            parts.append(PrefixPart("table", ""))
        else:
            raise PrefixError(
                f"!{{{match.group(1)}}} is not supported (timestamp, partitionKeyFromQuery, "
                "firehose:error-output-type, table)"
            )
        position = match.end()
    if position < len(text):
        parts.append(PrefixPart("literal", text[position:]))
    for part in parts:
        if part.kind == "literal" and ("!{" in part.value or ".." in part.value.split("/")):
            raise PrefixError(f"{text!r}: unbalanced '!{{' or a '..' folder")
    return Prefix(text, tuple(parts))


def _safe(value: str) -> str:
    if not value:
        return DEFAULT_PARTITION
    value = value.replace("/", "%2F")
    return value.replace(".", "%2E") if value in (".", "..") else value


def render(
    prefix: Prefix,
    *,
    when: datetime,
    table: str = "",
    error_type: str = "",
    keys: Mapping[str, object] | None = None,
) -> str:
    """The folder of one moment (and field values): for errors, archives and tests."""
    when = when.astimezone(UTC)
    out = []
    for part in prefix.parts:
        if part.kind == "literal":
            out.append(part.value)
        elif part.kind == "timestamp":
            out.append(when.strftime(part.value))
        elif part.kind == "field":
            value = (keys or {}).get(part.value)
            out.append(_safe("" if value is None else str(value)))
        elif part.kind == "error_type":
            out.append(error_type)
        else:
            out.append(table)
    return "".join(out)


def _field_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_boolean(column.type):
        column = pc.if_else(column, "true", "false")
    strings = pc.cast(column, pa.string())
    strings = pc.replace_substring(strings, "/", "%2F")
    strings = pc.if_else(pc.is_in(strings, pa.array([".", ".."])), "%2E", strings)
    empty = pc.or_kleene(pc.is_null(strings), pc.equal(strings, ""))
    return pc.if_else(empty, DEFAULT_PARTITION, strings)


def folder_keys(
    prefix: Prefix,
    rows: pa.Table,
    *,
    time_field: str,
    fallback: datetime,
    table: str = "",
) -> str | pa.ChunkedArray:
    """Each row's folder: one string when every row shares it, else a string per row.

    Rows whose time is null — all rows when there is no time field — use ``fallback``. A
    column named by ``partitionKeyFromQuery`` that the table lacks, or that cannot be
    written as text (a list, say), reads as null: the default partition.
    """
    times = None
    if prefix.uses_time and time_field and time_field in rows.column_names and rows.num_rows:
        fill = pa.scalar(fallback.astimezone(UTC), type=pa.timestamp("us", tz="UTC"))
        times = pc.fill_null(pc.cast(rows.column(time_field), fill.type), fill)
        if not prefix.fields and _hourly(prefix):
            bounds = pc.min_max(pc.floor_temporal(times, unit="hour"))
            if bounds["min"] == bounds["max"]:
                # The common case: one batch, one hour, no field keys: no per-row strings.
                return render(prefix, when=bounds["min"].as_py(), table=table)
    if not prefix.fields and times is None:
        return render(prefix, when=fallback, table=table)
    return _keys(prefix, rows, times, fallback, table)


def _hourly(prefix: Prefix) -> bool:
    # A template whose time patterns change at most hourly renders one folder per hour.
    return all(
        "%M" not in p.value and "%S" not in p.value for p in prefix.parts if p.kind == "timestamp"
    )


def _keys(
    prefix: Prefix,
    rows: pa.Table,
    times: pa.ChunkedArray | None,
    fallback: datetime,
    table: str,
) -> pa.ChunkedArray:
    pieces: list[pa.ChunkedArray | pa.Scalar] = []
    for part in prefix.parts:
        if part.kind == "timestamp":
            if times is None:
                pieces.append(pa.scalar(fallback.astimezone(UTC).strftime(part.value)))
            else:
                pieces.append(pc.strftime(times, format=part.value))
        elif part.kind == "field":
            if part.value not in rows.column_names:
                pieces.append(pa.scalar(DEFAULT_PARTITION))
                continue
            try:
                pieces.append(_field_strings(rows.column(part.value)))
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
                # A list or struct (an inferred schema; declared ones are refused at start)
                # has no folder text: its rows go to the default partition, never stall.
                pieces.append(pa.scalar(DEFAULT_PARTITION))
        else:
            pieces.append(pa.scalar(render(Prefix("", (part,)), when=fallback, table=table)))
    if not any(isinstance(p, pa.ChunkedArray) for p in pieces):
        text = "".join(p.as_py() for p in pieces)  # type: ignore[union-attr]
        return pa.chunked_array([pa.array([text] * rows.num_rows, pa.string())])
    return pc.binary_join_element_wise(*pieces, "")


def split_by_keys(rows: pa.Table, keys: str | pa.ChunkedArray) -> list[tuple[str, pa.Table]]:
    """Cut rows into (folder, rows) by their keys, folders sorted, input order kept inside.

    One stable sort and one slice per folder: cost does not grow with a Python loop per row.
    """
    if rows.num_rows == 0:
        return []
    if isinstance(keys, str):
        return [(keys, rows)]
    if pa.types.is_dictionary(keys.type):
        keys = keys.cast(pa.string())  # chunks may carry different dictionaries
    encoded = pc.dictionary_encode(keys).combine_chunks()
    names = encoded.dictionary.to_pylist()
    if len(names) == 1:
        return [(names[0], rows)]
    # Rank folders by name so the output order is stable whatever the input order.
    rank = pc.rank(pa.array(names), sort_keys="ascending", tiebreaker="first")
    ordered = pc.take(pc.subtract(rank, 1), encoded.indices)
    order = pc.sort_indices(ordered)  # stable: input order kept inside a folder
    sorted_rows = rows.take(order)
    counts = {c["values"].as_py(): c["counts"].as_py() for c in pc.value_counts(ordered)}
    out = []
    offset = 0
    for position, name in enumerate(sorted(names)):
        size = counts.get(position, 0)
        if size:
            out.append((name, sorted_rows.slice(offset, size)))
            offset += size
    return out


def split_rows(
    prefix: Prefix,
    rows: pa.Table,
    *,
    time_field: str,
    fallback: datetime,
    table: str = "",
) -> list[tuple[str, pa.Table]]:
    """Cut ``rows`` into (folder, rows) per rendered folder (:func:`folder_keys` then
    :func:`split_by_keys`)."""
    if rows.num_rows == 0:
        return []
    keys = folder_keys(prefix, rows, time_field=time_field, fallback=fallback, table=table)
    return split_by_keys(rows, keys)

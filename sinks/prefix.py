"""Firehose prefix templates applied to whole Arrow tables: each row's output folder.

The grammar (``firelake.grammars.prefix``) parses a template; here :func:`split_rows` builds
each row's folder with Arrow compute kernels (strftime, cast, join), then cuts the table into
one slice per folder after one stable sort — no Python per row. Pure logic: no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from firelake.grammars.prefix import DEFAULT_PARTITION, Prefix, render

__all__ = [
    "folder_keys",
    "split_by_keys",
    "split_rows",
]


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
    hours = None
    if times is not None and _hourly(prefix):
        # Rows of a batch fall in a few hours: format each hour once, then pick per row
        # (strftime per row was a sink's largest Arrow cost on batches spanning hours).
        hours = pc.dictionary_encode(pc.floor_temporal(times, unit="hour")).combine_chunks()
    for part in prefix.parts:
        if part.kind == "timestamp":
            if times is None:
                pieces.append(pa.scalar(fallback.astimezone(UTC).strftime(part.value)))
            elif hours is not None:
                texts = pc.strftime(hours.dictionary, format=part.value)
                pieces.append(pa.chunked_array([pc.take(texts, hours.indices)]))
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

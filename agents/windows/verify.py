"""``windows verify`` and ``windows backfill``: the statements to run and what their rows mean.

Verify recomputes every closed window with DuckDB over the lake's raw events of the
window's source (the sink's table), leaving out the events the late table says were late,
and compares the result with the final rows the agent wrote to its output table: a window
SQL has and the agent does not, one the agent has twice, one only the agent has, and every
value that differs are each reported. By default the comparison covers windows that end at
or before the last final window the agent emitted (later ones may still be open).

Backfill computes the definition over a range of the lake's history and turns the rows
into result rows (``is_final`` true) for the window's output stream — what the agent
would have emitted for events it never saw.

Pure: the statements are text; ``firelake windows`` runs them through ``queries.engine``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.windows.assign import geometry_of
from agents.windows.processor import format_us
from agents.windows.sql import late_relation_sql, quote, window_sql
from firelake.config import FirelakeConfig, WindowConfig

__all__ = [
    "Difference",
    "WindowTables",
    "backfill_rows",
    "compare",
    "expected_sql",
    "live_sql",
    "tables_of",
]


@dataclass(frozen=True)
class WindowTables:
    """The lake tables of a window: its source's, its results' and its late events'."""

    source: str
    output: str
    late: str
    time_column: str


def _table_of(config: FirelakeConfig, stream: str, role: str, window: str) -> str:
    for sink in config.sinks.values():
        if sink.stream == stream:
            return sink.table
    raise ValueError(
        f"window {window!r}: no sink writes its {role} stream {stream!r} to the lake; "
        "declare one under [sinks]"
    )


def tables_of(config: FirelakeConfig, name: str) -> WindowTables:
    """The lake tables verify and backfill read (ValueError naming what is missing)."""
    spec = config.windows[name]
    if spec.time == "ingest":
        raise ValueError(f"window {name!r} uses ingest time, which the lake does not keep")
    schema = config.schema_of(spec.source)
    time_column = spec.time_field or (schema.time_field if schema is not None else "")
    return WindowTables(
        source=_table_of(config, spec.source, "source", name),
        output=_table_of(config, spec.output, "output", name),
        late=_table_of(config, spec.late, "late", name),
        time_column=time_column,
    )


def expected_sql(
    config: FirelakeConfig,
    name: str,
    tables: WindowTables,
    *,
    with_late: bool,
    since_us: int | None = None,
    until_us: int | None = None,
) -> str:
    """SQL's windows over the raw events (minus late ones when the late table exists)."""
    spec = config.windows[name]
    late = late_relation_sql(tables.late, name, spec.id_field) if with_late else None
    return window_sql(
        spec,
        geometry_of(spec),
        quote(tables.source),
        tables.time_column,
        late=late,
        since_us=since_us,
        until_us=until_us,
    )


def live_sql(
    spec: WindowConfig, tables: WindowTables, since_us: int | None, until_us: int | None
) -> str:
    """The agent's final rows, with window bounds in µs like :func:`expected_sql`'s."""
    columns = ", ".join(quote(c) for c in (*spec.key, *spec.aggregates, "event_count"))
    bounds = ["is_final"]
    if since_us is not None:
        bounds.append(f"window_start >= {since_us}")
    if until_us is not None:
        bounds.append(f"window_end <= {until_us}")
    return (
        "SELECT * FROM (SELECT epoch_us(CAST(window_start AS TIMESTAMPTZ)) AS window_start, "
        f"epoch_us(CAST(window_end AS TIMESTAMPTZ)) AS window_end, is_final, {columns} "
        f"FROM {quote(tables.output)}) WHERE {' AND '.join(bounds)}"
    )


@dataclass(frozen=True)
class Difference:
    """One window on which the agent and SQL disagree."""

    window_start: str
    window_end: str
    key: tuple[Any, ...]
    problem: str

    def __str__(self) -> str:
        key = ", ".join(map(str, self.key)) or "(global)"
        return f"[{self.window_start}, {self.window_end}) {key}: {self.problem}"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def compare(
    spec: WindowConfig,
    expected: Iterable[dict[str, Any]],
    live: Iterable[dict[str, Any]],
) -> list[Difference]:
    """Every window where the agent's final rows and SQL's rows differ."""
    keys = list(spec.key)
    values = [*spec.aggregates, "event_count"]

    def ident(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row["window_start"], row["window_end"], *(row[k] for k in keys))

    # Sliding windows give one result per event: events of a key at the same time give equal
    # rows, so each side counts how many times it has a window.
    wanted: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in expected:
        wanted.setdefault(ident(row), []).append(row)
    want = {key: rows[0] for key, rows in wanted.items()}
    got: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in live:
        got.setdefault(ident(row), []).append(row)
    out: list[Difference] = []
    for key in sorted(set(want) | set(got), key=repr):
        start, end = format_us(key[0]), format_us(key[1])
        rows = got.get(key, [])
        if key not in want:
            out.append(Difference(start, end, key[2:], "emitted, but SQL finds no such window"))
            continue
        if not rows:
            out.append(Difference(start, end, key[2:], "SQL has this window; the agent has not"))
            continue
        if len(rows) != len(wanted[key]):
            times = f"emitted {len(rows)} times, SQL has it {len(wanted[key])} times"
            out.append(Difference(start, end, key[2:], times))
        for column in values:
            if not _same(rows[0][column], want[key][column]):
                problem = f"{column}: agent {rows[0][column]!r}, SQL {want[key][column]!r}"
                out.append(Difference(start, end, key[2:], problem))
    return out


def backfill_rows(
    spec: WindowConfig, columns: Sequence[str], rows: Iterable[Sequence[Any]], emit_us: int
) -> list[dict[str, Any]]:
    """Result rows (the output stream's shape, ``is_final`` true) of :func:`expected_sql`."""
    from agents.windows.processor import json_value

    out = []
    for values in rows:
        raw = dict(zip(columns, values, strict=True))
        row: dict[str, Any] = {
            "window_start": format_us(raw["window_start"]),
            "window_end": format_us(raw["window_end"]),
        }
        for column in (*spec.key, *spec.aggregates):
            row[column] = json_value(raw[column])
        row["event_count"] = raw["event_count"]
        row["emit_time"] = format_us(emit_us)
        row["is_final"] = True
        out.append(row)
    return out

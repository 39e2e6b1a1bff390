"""A window definition as one DuckDB statement over stored events (``verify``, ``backfill``).

The live agent and this SQL must agree window for window, so both follow one definition
(:mod:`agents.windows.assign`): times in epoch µs, half-open windows, sessions split where
two consecutive events of a key are ``gap`` or more apart, sliding results over
``(t - size, t]`` per event (a ``RANGE`` frame, peers included). The aggregates are the
user's own expressions, unchanged: DuckDB computes them directly, not through the agent's
partials — an independent check of the decomposition.

Late events are accounted for by an optional relation of the late records
(``late_id``, ``late_start`` µs): an event excluded from a window live is excluded here by its
id — per window for tumbling and hopping windows (an event late for one hopping window still
counts in the others), entirely for sessions and sliding windows.

Pure: the statement is text, run by the caller through ``queries.engine``.
"""

from __future__ import annotations

from agents.windows.assign import Geometry
from firelake.config import WindowConfig

__all__ = ["late_relation_sql", "quote", "window_sql"]


def quote(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def late_relation_sql(table: str, window: str, id_field: str) -> str:
    """(late_id, late_start) of a late table's records of window ``window``."""
    return (
        f"SELECT CAST({quote(id_field)} AS VARCHAR) AS late_id, "
        f"epoch_us(CAST(late_window_start AS TIMESTAMPTZ)) AS late_start "
        f"FROM {quote(table)} WHERE late_window = {_literal(window)} "
        f"AND late_reason = 'window_closed'"
    )


def window_sql(
    spec: WindowConfig,
    geometry: Geometry,
    relation: str,
    time_column: str,
    *,
    late: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
) -> str:
    """Rows (window_start, window_end [µs], key columns, aggregates, event_count) of the
    windows of ``relation`` (a table name or a parenthesised query) that lie wholly within
    ``[since_us, until_us)``; ``late`` is a :func:`late_relation_sql` query or None."""
    t = f"epoch_us(CAST({quote(time_column)} AS TIMESTAMPTZ))"
    keys = [quote(k) for k in spec.key]
    key_list = ", ".join(keys)
    key_prefix = key_list + ", " if keys else ""
    partition = f"PARTITION BY {key_list} " if keys else ""
    aggregates = ", ".join(f"{expr} AS {quote(col)}" for col, expr in spec.aggregates.items())
    where = f"coalesce(({spec.filter or 'TRUE'}), FALSE) AND {t} IS NOT NULL"
    id_column = quote(spec.id_field)
    src = f"SELECT *, {t} AS __t FROM {relation} WHERE {where}"
    bounds = []
    if since_us is not None:
        bounds.append(f"window_start >= {since_us}")
    if until_us is not None:
        bounds.append(f"window_end <= {until_us}")
    bounded = f" WHERE {' AND '.join(bounds)}" if bounds else ""
    if geometry.type in ("tumbling", "hopping"):
        step, size = geometry.step, geometry.size
        late_filter = (
            f" WHERE NOT EXISTS (SELECT 1 FROM ({late}) l WHERE l.late_id = "
            f"CAST(win.{id_column} AS VARCHAR) AND l.late_start = win.__s)"
            if late
            else ""
        )
        body = f"""
            WITH src AS ({src}),
            win AS (SELECT src.*, __t - ((__t % {step}) + {step}) % {step} - j * {step} AS __s
                    FROM src, range({geometry.hops}) AS hops(j)),
            kept AS (SELECT * FROM win{late_filter})
            SELECT __s AS window_start, __s + {size} AS window_end, {key_prefix}{aggregates},
                   count(*) AS event_count
            FROM kept GROUP BY {key_prefix}__s"""
        return f"SELECT * FROM ({body}){bounded}"
    late_filter = (
        f" WHERE NOT EXISTS (SELECT 1 FROM ({late}) l WHERE l.late_id = "
        f"CAST(src.{id_column} AS VARCHAR))"
        if late
        else ""
    )
    if geometry.type == "session":
        body = f"""
            WITH src AS ({src}),
            kept AS (SELECT * FROM src{late_filter}),
            marked AS (
                SELECT *, CASE WHEN __t - lag(__t) OVER ({partition}ORDER BY __t)
                               < {geometry.gap} THEN 0 ELSE 1 END AS __new FROM kept),
            numbered AS (
                SELECT *, sum(__new) OVER ({partition}ORDER BY __t, __new DESC
                                           ROWS UNBOUNDED PRECEDING) AS __sid FROM marked)
            SELECT min(__t) AS window_start, max(__t) + {geometry.gap} AS window_end,
                   {key_prefix}{aggregates}, count(*) AS event_count
            FROM numbered GROUP BY {key_prefix}__sid"""
        return f"SELECT * FROM ({body}){bounded}"
    frame = (
        f"OVER ({partition}ORDER BY __t RANGE BETWEEN {geometry.size - 1} PRECEDING "
        "AND CURRENT ROW)"
    )
    windowed = ", ".join(f"{expr} {frame} AS {quote(col)}" for col, expr in spec.aggregates.items())
    body = f"""
        WITH src AS ({src}),
        kept AS (SELECT * FROM src{late_filter})
        SELECT __t - {geometry.size} AS window_start, __t AS window_end, {key_prefix}{windowed},
               count(*) {frame} AS event_count
        FROM kept"""
    return f"SELECT * FROM ({body}){bounded}"

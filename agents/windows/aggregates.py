"""Decomposable aggregates: computed per batch, merged exactly.

A window's ``aggregates`` map output columns to expressions such as ``count(*)``,
``sum(position_seconds) FILTER (WHERE event_type = 'stop')`` or ``count(DISTINCT user_id)``.
Their grammar (:mod:`firelake.grammars.aggregates`) parses the outer call only; the inner
expression and the FILTER condition stay SQL that DuckDB evaluates over a whole batch.
Each aggregate has a *partial* form that merges exactly, in any order:

=================  =========================  ==================================
aggregate          partial                    merge
=================  =========================  ==================================
count(*), count(x) int                        sum
sum(x)             value or None              sum (None: nothing counted yet)
min(x), max(x)     value or None              min, max
avg(x)             [sum, count]               pairwise sum; final sum / count
count(DISTINCT x)  set of values              union; final its size (exact)
=================  =========================  ==================================
"""

from __future__ import annotations

from typing import Any

from firelake.grammars.aggregates import AggregateError, AggregateSpec, Kind, parse_aggregate

__all__ = [
    "AggregateError",
    "AggregateSpec",
    "Kind",
    "empty_partial",
    "finalize",
    "from_columns",
    "merge_partial",
    "parse_aggregate",
    "partial_sql",
]


def partial_sql(spec: AggregateSpec, value: str, condition: str) -> list[str]:
    """The SQL aggregates (over projected rows) whose results form ``spec``'s partial.

    ``value`` is the column holding the inner expression's value, ``condition`` the column
    holding its FILTER condition.
    """
    where = f" FILTER (WHERE {condition})"
    if spec.kind == "count_star":
        return [f"count(*){where}"]
    if spec.kind == "avg":
        return [f"sum({value}){where}", f"count({value}){where}"]
    if spec.kind == "count_distinct":
        return [f"list(DISTINCT {value}) FILTER (WHERE {condition} AND {value} IS NOT NULL)"]
    return [f"{spec.kind}({value}){where}"]


def empty_partial(spec: AggregateSpec) -> Any:
    """The partial of no rows."""
    if spec.kind in ("count_star", "count"):
        return 0
    if spec.kind == "avg":
        return [None, 0]
    if spec.kind == "count_distinct":
        return set()
    return None


def from_columns(spec: AggregateSpec, values: list[Any]) -> Any:
    """A partial from the values :func:`partial_sql`'s columns returned for one group."""
    if spec.kind == "avg":
        return [values[0], values[1] or 0]
    if spec.kind == "count_distinct":
        return set(values[0] or ())
    if spec.kind in ("count_star", "count"):
        return values[0] or 0
    return values[0]


def _add(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def merge_partial(spec: AggregateSpec, a: Any, b: Any) -> Any:
    """The partial of both partials' rows (``a`` may be updated in place and returned)."""
    kind = spec.kind
    if kind in ("count_star", "count", "sum"):
        return _add(a, b)
    if kind == "min":
        return b if a is None or (b is not None and b < a) else a
    if kind == "max":
        return b if a is None or (b is not None and b > a) else a
    if kind == "avg":
        return [_add(a[0], b[0]), a[1] + b[1]]
    a |= b
    return a


def finalize(spec: AggregateSpec, partial: Any) -> Any:
    """The aggregate's value from its partial, as SQL would give it."""
    if spec.kind == "avg":
        total, count = partial
        return None if not count else float(total) / count
    if spec.kind == "count_distinct":
        return len(partial)
    return partial

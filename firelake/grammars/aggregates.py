"""Window aggregate expressions: the grammar of ``[windows.<name>] aggregates``.

An aggregate is one outer call in DuckDB syntax — count, sum, min, max or avg, with
DISTINCT for count, and an optional ``FILTER (WHERE …)`` — whose inner expression and
condition stay SQL. Only these merge exactly across batches (``agents.windows.aggregates``
holds their partial forms). The configuration checks expressions with
:func:`parse_aggregate`; a leaf: standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "AggregateError",
    "AggregateSpec",
    "Kind",
    "parse_aggregate",
]

Kind = Literal["count_star", "count", "sum", "min", "max", "avg", "count_distinct"]

_CALL = re.compile(r"\s*(count|sum|min|max|avg)\s*\(", re.IGNORECASE)
_DISTINCT = re.compile(r"\s*DISTINCT\s+", re.IGNORECASE)
_FILTER = re.compile(r"\s*FILTER\s*\(\s*WHERE\s+", re.IGNORECASE)


class AggregateError(ValueError):
    """An aggregate expression Firelake cannot compute incrementally; says why."""


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    """One parsed aggregate: its kind, inner SQL (``""`` for count(*)) and FILTER SQL."""

    kind: Kind
    inner: str
    filter: str
    text: str


def _closing(text: str, start: int) -> int:
    """Index of the parenthesis closing the one before ``start`` (quotes respected)."""
    depth = 1
    index = start
    quote = ""
    while index < len(text):
        char = text[index]
        if quote:
            if char == quote:
                if index + 1 < len(text) and text[index + 1] == quote:
                    index += 1  # a doubled quote inside a literal
                else:
                    quote = ""
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise AggregateError("unbalanced parentheses or quotes")


def parse_aggregate(text: str) -> AggregateSpec:
    """Parse ``fn([DISTINCT] expr) [FILTER (WHERE cond)]``; :class:`AggregateError` if not."""
    match = _CALL.match(text)
    if match is None:
        raise AggregateError(
            f"{text!r} is not count(...), sum(...), min(...), max(...) or avg(...) "
            "(only these merge exactly across batches)"
        )
    name = match.group(1).lower()
    close = _closing(text, match.end())
    inner = text[match.end() : close].strip()
    distinct = _DISTINCT.match(inner)
    if distinct is not None:
        if name != "count":
            raise AggregateError(f"DISTINCT is supported in count only, not in {name}")
        inner = inner[distinct.end() :].strip()
    rest = text[close + 1 :]
    condition = ""
    if rest.strip():
        found = _FILTER.match(rest)
        if found is None:
            raise AggregateError(f"unexpected {rest.strip()!r} after the call (only FILTER)")
        end = _closing(rest, found.end())
        if rest[end + 1 :].strip():
            raise AggregateError(f"unexpected {rest[end + 1 :].strip()!r} after FILTER (...)")
        condition = rest[found.end() : end].strip()
        if not condition:
            raise AggregateError("FILTER (WHERE ...) needs a condition")
    if not inner:
        raise AggregateError(f"{name}() needs an argument")
    kind: Kind
    if inner == "*":
        if name != "count" or distinct is not None:
            raise AggregateError(f"{name}(*) is not an aggregate; count(*) is")
        kind, inner = "count_star", ""
    elif distinct is not None:
        kind = "count_distinct"
    else:
        kind = name  # type: ignore[assignment]
    return AggregateSpec(kind, inner, condition, text.strip())

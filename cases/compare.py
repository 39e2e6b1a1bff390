"""Comparing a query's rows with a case's expected rows, and saying how they differ.

Rows are JSON objects (``firelake query --format json``: times as ISO text, decimals as
numbers). The order of rows counts only when the statement sorts them (a top-level
``ORDER BY``); otherwise the rows are compared as a multiset. Numbers compare within a
relative and absolute tolerance when either is a float, so ``avg()`` or a float ``sum()``
over differently batched files still matches. Values from a CSV file arrive as text and
are read as numbers where the actual value is one; an empty CSV cell is null.

A mismatch is a :class:`Diff`: the missing rows (expected, not found) and the unexpected
ones (found, not expected), each printed as one JSON line, so a broken route or schema
names the rows it changed. :func:`wall_clock_values` finds values that fall within the
run's own wall-clock time — the mark of a case that depends on when it runs.
Pure: no Kafka client, no DuckDB.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "DEFAULT_TOLERANCE",
    "Diff",
    "compare_rows",
    "is_ordered",
    "wall_clock_values",
]

#: Relative and absolute tolerance of float comparisons.
DEFAULT_TOLERANCE = 1e-9
#: Rows a diff prints per side before it summarises the rest.
SHOWN_ROWS = 20

Row = Mapping[str, Any]


def _strip(sql: str) -> str:
    """SQL without string literals, quoted names and comments."""
    sql = re.sub(r"--[^\n]*", " ", sql)
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.S)
    sql = re.sub(r"'(?:[^']|'')*'", "''", sql)
    return re.sub(r'"(?:[^"]|"")*"', '""', sql)


def is_ordered(sql: str) -> bool:
    """Whether the last statement sorts its result (an ORDER BY outside parentheses)."""
    text = _strip(sql)
    statements = [s for s in text.split(";") if s.strip()]
    text = statements[-1] if statements else text
    previous = None
    while previous != text:  # innermost parentheses first, until none is left
        previous = text
        text = re.sub(r"\([^()]*\)", " ", text)
    return re.search(r"\border\s+by\b", text, re.I) is not None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _coerce(expected: Any, actual: Any) -> Any:
    """A CSV cell (text) read as the actual value's kind."""
    if not isinstance(expected, str) or isinstance(actual, str):
        return expected
    if expected == "":
        return None
    if isinstance(actual, bool):
        return {"true": True, "false": False}.get(expected.lower(), expected)
    if isinstance(actual, (int, float)):
        try:
            return int(expected) if re.fullmatch(r"-?\d+", expected) else float(expected)
        except ValueError:
            return expected
    if isinstance(actual, (list, dict)):
        try:
            return json.loads(expected)
        except json.JSONDecodeError:
            return expected
    return expected


def _equal(expected: Any, actual: Any, tolerance: float) -> bool:
    expected = _coerce(expected, actual)
    a, b = _number(expected), _number(actual)
    if a is not None and b is not None:
        if isinstance(expected, int) and isinstance(actual, int):
            return expected == actual
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(
            _equal(e, x, tolerance) for e, x in zip(expected, actual, strict=True)
        )
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(
            _equal(expected[k], actual[k], tolerance) for k in expected
        )
    return bool(expected == actual)


def _row_equal(expected: Row, actual: Row, tolerance: float) -> bool:
    return all(_equal(expected.get(c), actual.get(c), tolerance) for c in actual)


def _key(row: Row, columns: Sequence[str]) -> str:
    """An exact-match key (rows equal without any tolerance share it)."""
    return json.dumps([row.get(c) for c in columns], sort_keys=True, default=str)


def _line(row: Row) -> str:
    return json.dumps(dict(row), ensure_ascii=False, default=str)


@dataclass
class Diff:
    """How a query's rows differ from the expected rows (empty: they match)."""

    sql: str
    ordered: bool
    missing: list[Row] = field(default_factory=list)
    unexpected: list[Row] = field(default_factory=list)
    #: Rows at the same position that differ (ordered results only): (position, want, got).
    moved: list[tuple[int, Row, Row]] = field(default_factory=list)
    columns: str = ""

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.moved or self.columns)

    def render(self, label: str = "") -> str:
        """A readable report: the statement, then each kind of difference, row by row."""
        out = [f"{label or 'query'}: rows differ", f"  SQL: {' '.join(self.sql.split())}"]
        if self.columns:
            out.append(f"  columns: {self.columns}")

        def rows(title: str, items: Sequence[Row], sign: str) -> None:
            if not items:
                return
            out.append(f"  {title} ({len(items)}):")
            out.extend(f"    {sign} {_line(row)}" for row in items[:SHOWN_ROWS])
            if len(items) > SHOWN_ROWS:
                out.append(f"    … and {len(items) - SHOWN_ROWS} more")

        rows("missing rows (expected, not found)", self.missing, "-")
        rows("unexpected rows (found, not expected)", self.unexpected, "+")
        if self.moved:
            out.append(f"  rows differing in place (ORDER BY) ({len(self.moved)}):")
            for position, want, got in self.moved[:SHOWN_ROWS]:
                out.append(f"    row {position}: - {_line(want)}")
                out.append(f"    row {position}: + {_line(got)}")
            if len(self.moved) > SHOWN_ROWS:
                out.append(f"    … and {len(self.moved) - SHOWN_ROWS} more")
        return "\n".join(out)


def compare_rows(
    sql: str,
    expected: Sequence[Row],
    actual: Sequence[Row],
    columns: Sequence[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Diff:
    """Compare rows; ordered by position when the SQL sorts, else as a multiset."""
    ordered = is_ordered(sql)
    diff = Diff(sql, ordered)
    names = list(columns) if columns is not None else list(actual[0] if actual else ())
    want_names = list(expected[0]) if expected else names
    if expected and actual and set(want_names) != set(names):
        diff.columns = f"expected {want_names}, got {names}"
        diff.missing, diff.unexpected = list(expected), list(actual)
        return diff
    if ordered:
        for position, (want, got) in enumerate(zip(expected, actual, strict=False)):
            if not _row_equal(want, got, tolerance):
                diff.moved.append((position, want, got))
        diff.missing = list(expected[len(actual) :])
        diff.unexpected = list(actual[len(expected) :])
        return diff
    # Exact matches by key first (fast), then the rest pairwise within the tolerance.
    pool: dict[str, list[Row]] = {}
    for row in actual:
        pool.setdefault(_key(row, names), []).append(row)
    unmatched: list[Row] = []
    for want in expected:
        bucket = pool.get(_key({c: _coerce(want.get(c), None) for c in names}, names))
        if bucket:
            bucket.pop()
        else:
            unmatched.append(want)
    rest = [row for bucket in pool.values() for row in bucket]
    for want in unmatched:
        hit = next((i for i, got in enumerate(rest) if _row_equal(want, got, tolerance)), None)
        if hit is None:
            diff.missing.append(want)
        else:
            rest.pop(hit)
    diff.unexpected = rest
    return diff


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def wall_clock_values(
    rows: Sequence[Row],
    started: datetime,
    ended: datetime,
    input_until_ms: int = 0,
    slack_s: float = 2.0,
) -> list[str]:
    """Columns holding a time within the run itself (give or take ``slack_s``) and later
    than the input's last timestamp (``input_until_ms``: a recording replayed soon after
    it was made holds recent times of its own)."""
    low = max(started.timestamp() - slack_s, input_until_ms / 1000)
    high = ended.timestamp() + slack_s
    found: list[str] = []
    for row in rows:
        for column, value in row.items():
            if column in found or not isinstance(value, str) or not _ISO.match(value):
                continue
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            if low < moment.timestamp() <= high:
                found.append(column)
    return found

"""Changelog records: a window's state entries as compact JSON, types kept.

Partial aggregates hold what DuckDB returned — ints, floats, strings, but also timestamps,
dates and decimals (``max(event_time)``, a decimal sum) and sets (``count(DISTINCT …)``).
JSON has none of the last four, so they are written tagged (``{"$ts": µs}``,
``{"$d": "YYYY-MM-DD"}``, ``{"$dec": "1.50"}``, ``{"$set": [...]}``) and read back as the same
Python values, so a restored state merges and compares exactly like the one that was lost.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["dumps", "from_jsonable", "loads", "to_jsonable"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_jsonable(value: Any) -> Any:
    """``value`` with the types JSON lacks tagged."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"$set": [to_jsonable(v) for v in value]}
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return {"$ts": (moment - _EPOCH) // timedelta(microseconds=1)}
    if isinstance(value, date):
        return {"$d": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, dict):
        return {"$obj": {str(k): to_jsonable(v) for k, v in value.items()}}
    raise TypeError(f"cannot keep a {type(value).__name__} in window state: {value!r}")


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def from_jsonable(value: Any) -> Any:
    """The inverse of :func:`to_jsonable`."""
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    if isinstance(value, dict):
        if "$ts" in value:
            return _EPOCH + timedelta(microseconds=value["$ts"])
        if "$d" in value:
            return date.fromisoformat(value["$d"])
        if "$dec" in value:
            return Decimal(value["$dec"])
        if "$set" in value:
            return {_hashable(from_jsonable(v)) for v in value["$set"]}
        if "$obj" in value:
            return {k: from_jsonable(v) for k, v in value["$obj"].items()}
        return {k: from_jsonable(v) for k, v in value.items()}
    return value


def _tag(value: Any) -> Any:
    """orjson's fallback for the types JSON lacks (datetimes passed through to here)."""
    if isinstance(value, (set, frozenset, datetime, date, Decimal)):
        return to_jsonable(value)
    raise TypeError(f"cannot keep a {type(value).__name__} in window state: {value!r}")


_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME


def dumps(value: Any) -> bytes:
    """JSON bytes of a state value (plain values take orjson's C path, the rest are tagged)."""
    return orjson.dumps(value, default=_tag, option=_OPTIONS)


def loads(data: bytes) -> Any:
    """A state value from :func:`dumps`' bytes."""
    return from_jsonable(orjson.loads(data))

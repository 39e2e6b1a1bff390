"""Event validation against a schema: parse, check every declared field, normalize timestamps.

This runs once per event on the router's hot path, so each schema is compiled once into a
:class:`Validator` holding a tuple of ``(name, required, checker)`` entries, and the common
case (a timestamp already in canonical form, a value of the right type) costs one type
test or one ``datetime.fromisoformat`` call.

Timestamps come out in the one canonical form the lake expects,
``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, microseconds), which ``pyarrow.json.read_json`` reads
as ``timestamp[us, tz=UTC]`` and which sorts lexicographically in time order.

A failed check raises :class:`ValidationError` with an error type from :data:`ERROR_TYPES`
and a reason naming the field and what was wrong; the router turns it into a DLQ record.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from firelake.config import Schema

__all__ = [
    "DELIVERY_FAILED",
    "ENVELOPE_ERROR",
    "ERROR_TYPES",
    "INVALID_JSON",
    "MISSING_FIELD",
    "NOT_AN_OBJECT",
    "NO_ROUTE",
    "PROCESSING_FAILED",
    "TOO_LARGE",
    "TOO_OLD",
    "WRONG_TYPE",
    "ValidationError",
    "Validator",
    "canonical_to_epoch_ms",
    "format_epoch_ms",
    "format_timestamp",
    "normalize_timestamp",
    "parse_event",
    "validate",
    "validator_for",
]

INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
NO_ROUTE = "no_route"
ENVELOPE_ERROR = "envelope_error"
TOO_LARGE = "too_large"
TOO_OLD = "record_too_old"
PROCESSING_FAILED = "processing_failed"
DELIVERY_FAILED = "delivery_failed"

#: Every error type a DLQ record may carry.
ERROR_TYPES = (
    INVALID_JSON,
    NOT_AN_OBJECT,
    MISSING_FIELD,
    WRONG_TYPE,
    NO_ROUTE,
    ENVELOPE_ERROR,
    TOO_LARGE,
    TOO_OLD,
    PROCESSING_FAILED,
    DELIVERY_FAILED,
)

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_SHOWN = 80  # characters of a bad value quoted in a reason; DLQ keeps the whole payload


class ValidationError(ValueError):
    """An event that cannot be routed: ``error_type`` (one of ERROR_TYPES) and ``reason``."""

    def __init__(self, error_type: str, reason: str) -> None:
        self.error_type = error_type
        self.reason = reason
        super().__init__(f"{error_type}: {reason}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _wrong(name: str, expected: str, value: Any, detail: str = "") -> ValidationError:
    suffix = f" ({detail})" if detail else ""
    return ValidationError(
        WRONG_TYPE, f"field {name!r}: expected {expected}, got {_shown(value)}{suffix}"
    )


# --------------------------------------------------------------------------- timestamps


def format_timestamp(moment: datetime) -> str:
    """The canonical form of an aware (or naive = UTC) datetime: ``...T..:..:...ffffffZ``."""
    if moment.tzinfo is not None and moment.utcoffset():
        moment = moment.astimezone(UTC)
    # An f-string is several times faster than strftime on this path.
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def format_epoch_ms(epoch_ms: int) -> str:
    """The canonical form of a time given in epoch milliseconds (OverflowError out of range)."""
    return format_timestamp(_EPOCH + timedelta(milliseconds=epoch_ms))


def normalize_timestamp(value: Any) -> str:
    """A timestamp value (ISO-8601 string or epoch-ms int) in canonical form.

    Raises ``ValueError`` naming what is wrong with the value; callers add the field name.
    """
    if type(value) is str:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            detail = str(exc)
            # Python's generic message only repeats the value, which the reason shows already.
            if detail.startswith("Invalid isoformat string"):
                raise ValueError("not ISO-8601") from None
            raise ValueError(f"not a valid time: {detail}") from None
        # Fast paths: the value parsed, so a string already in canonical shape is itself,
        # and the two common UTC shapes (seconds, JavaScript's milliseconds) only need
        # zero padding, which is cheaper than formatting the datetime.
        if value[-1:] == "Z":
            size = len(value)
            if size == 27 or size == 20 or size == 24:
                # Separators in place (a week date like 2026-W48-7 has none at 7).
                shaped = (
                    value[4] == "-"
                    and value[7] == "-"
                    and value[10] == "T"
                    and value[13] == ":"
                    and value[16] == ":"
                )
                if shaped and size == 20:
                    return value[:19] + ".000000Z"
                if shaped and value[19] == ".":
                    return value if size == 27 else value[:23] + "000Z"
        try:
            return format_timestamp(moment)
        except OverflowError:
            raise ValueError("outside years 1-9999 in UTC") from None
    if type(value) is int:
        try:
            return format_epoch_ms(value)
        except OverflowError:
            raise ValueError("epoch milliseconds outside years 1-9999") from None
    raise ValueError("neither an ISO-8601 string nor epoch milliseconds")


def canonical_to_epoch_ms(text: str) -> int:
    """Epoch milliseconds of a canonical timestamp string (for envelope time headers)."""
    moment = datetime.fromisoformat(text)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


# --------------------------------------------------------------------------- field checkers

# A checker takes (field name, value) and returns the value to store (possibly normalized),
# or raises ValidationError. Returning the same object means "unchanged".
Checker = Callable[[str, Any], Any]


def _check_string(name: str, value: Any) -> Any:
    if type(value) is str:
        return value
    raise _wrong(name, "string", value)


def _check_int(name: str, value: Any) -> Any:
    # type() rather than isinstance(): bool is a subclass of int and must not pass.
    if type(value) is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
        raise _wrong(name, "int", value, "outside the 64-bit range")
    raise _wrong(name, "int", value)


def _check_float(name: str, value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
        raise _wrong(name, "float", value, "outside the 64-bit range")
    raise _wrong(name, "float", value)


def _check_bool(name: str, value: Any) -> Any:
    if type(value) is bool:
        return value
    raise _wrong(name, "bool", value)


def _check_timestamp(name: str, value: Any) -> Any:
    try:
        return normalize_timestamp(value)
    except ValueError as exc:
        raise _wrong(name, "timestamp", value, str(exc)) from None


_CHECKERS: dict[str, Checker] = {
    "string": _check_string,
    "int": _check_int,
    "float": _check_float,
    "bool": _check_bool,
    "timestamp": _check_timestamp,
}

# Python types a field's value may have to pass without calling its checker (ints are not
# here: they still need the 64-bit range check).
_ACCEPTED: dict[str, type] = {"string": str, "bool": bool, "float": float}


# --------------------------------------------------------------------------- parsing, validating


def parse_event(line: bytes) -> dict[str, Any]:
    """Parse one event's bytes: it must be a JSON object (ValidationError otherwise)."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(INVALID_JSON, f"invalid JSON: {exc}") from None
    if type(event) is not dict:
        raise ValidationError(
            NOT_AN_OBJECT, f"expected a JSON object, got {type(event).__name__} {_shown(event)}"
        )
    return event


class Validator:
    """A schema compiled for fast per-event checks.

    Calling it with a parsed event returns the event with its declared fields checked and
    timestamps normalized. The input dict is never modified: when a value changes, a copy
    is returned, so one parsed event can be validated against several schemas (fan-out).
    Undeclared fields are kept as they are.
    """

    __slots__ = ("_plan", "schema")

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._plan: tuple[tuple[str, bool, type | None, Checker], ...] = tuple(
            (spec.name, spec.required, _ACCEPTED.get(spec.type), _CHECKERS[spec.type])
            for spec in schema.fields
        )

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        """Check one parsed event; raises ValidationError on the first bad field."""
        changed: dict[str, Any] | None = None
        get = event.get
        for name, required, accepted, check in self._plan:
            value = get(name)
            if value is None:
                if required:
                    state = "is null" if name in event else "is missing"
                    raise ValidationError(MISSING_FIELD, f"field {name!r}: required, {state}")
                continue
            if type(value) is accepted:
                continue  # inline fast path: saves a call per string/bool/float field
            checked = check(name, value)
            if checked is not value:
                if changed is None:
                    changed = {}
                changed[name] = checked
        if changed is None:
            return event
        out = dict(event)
        out.update(changed)
        return out

    def validate_bytes(self, line: bytes) -> dict[str, Any]:
        """Parse and check one event's bytes."""
        return self(parse_event(line))


@functools.lru_cache(maxsize=256)
def validator_for(schema: Schema) -> Validator:
    """The compiled validator of a schema (cached: schemas are frozen and hashable)."""
    return Validator(schema)


def validate(event_bytes: bytes, schema: Schema) -> dict[str, Any]:
    """Parse one event and check it against a schema; returns the normalized event dict.

    Raises :class:`ValidationError` (``invalid_json``, ``not_an_object``, ``missing_field``
    or ``wrong_type``) whose reason names the field and what was wrong.
    """
    return validator_for(schema).validate_bytes(event_bytes)

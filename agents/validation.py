"""Event validation against a schema: parse, check every declared field, normalize values.

This runs once per event on the router's hot path, so each schema is compiled once into a
:class:`Validator` holding a tuple of ``(name, required, checker)`` entries, and the common
case (a timestamp already in canonical form, a value of the right type) costs one type
test or one ``datetime.fromisoformat`` call. Parametric types (``decimal(p,s)``,
``list<T>``, ``struct<...>``, ``map<K,V>``) get a checker built once per type text.

Values come out in the form the sink's conversion (``sinks.conversion``) reads:

- timestamps in the one canonical form ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, µs), which
  ``pyarrow.json.read_json`` reads as ``timestamp[us, tz=UTC]`` and which sorts in time
  order; dates as ``YYYY-MM-DD`` (the only text Arrow casts to ``date32``);
- decimals checked against precision and scale the way the sink does (it refuses, never
  rounds, a value with more decimal places than the scale). A decimal *string* becomes the
  canonical fixed-point text (``"12.30"`` for decimal(10,2)), exact at any precision. A
  JSON *number* is kept as it is: orjson writes a float back as its shortest round-trip
  text, which is what was checked and what the sink parses (a number with more than 17
  significant digits has lost them in the JSON parser already: send such values as text);
- lists, structs and maps checked item by item; a struct may carry keys it does not
  declare (the sink ignores them, as it does top-level fields outside the schema); map
  keys, which JSON writes as strings, must convert to the key type and are rewritten in
  canonical form (``"007"`` → ``"7"`` for int keys).

A failed check raises :class:`ValidationError` with an error type from :data:`ERROR_TYPES`
and a reason naming the field and what was wrong; the router turns it into a DLQ record.
"""

from __future__ import annotations

import functools
import keyword
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import msgspec
import orjson

from firelake.config import Schema
from firelake.grammars.field_types import FieldType, parse_field_type

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
    "canonical_decimal",
    "canonical_to_epoch_ms",
    "checker_for",
    "format_epoch_ms",
    "format_timestamp",
    "normalize_date",
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


#: Canonical forms of timestamp strings seen lately: events of one second share their
#: time text by the thousands at peak, and parsing it is a router's largest field cost.
_CANONICAL_TIMES: dict[str, str] = {}
_CANONICAL_TIMES_MAX = 65_536


def _check_timestamp(name: str, value: Any) -> Any:
    if type(value) is str:
        known = _CANONICAL_TIMES.get(value)
        if known is not None:
            # Already canonical: the value itself, so callers see "unchanged" by identity.
            return value if known == value else known
    try:
        canonical = normalize_timestamp(value)
    except ValueError as exc:
        raise _wrong(name, "timestamp", value, str(exc)) from None
    if type(value) is str:
        if len(_CANONICAL_TIMES) >= _CANONICAL_TIMES_MAX:
            _CANONICAL_TIMES.clear()
        _CANONICAL_TIMES[value] = canonical
    return value if canonical == value else canonical


def normalize_date(value: Any) -> str:
    """A date value (an ISO-8601 date string) as ``YYYY-MM-DD``; ValueError says why not.

    ``date.fromisoformat`` also takes the basic (``20261129``) and week (``2026-W48-7``)
    forms; they are rewritten, because Arrow's cast to ``date32`` reads ``YYYY-MM-DD`` only.
    """
    if type(value) is not str:
        raise ValueError("dates are ISO-8601 strings such as '2026-11-29'")
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValueError("not an ISO-8601 date (YYYY-MM-DD)") from None
    if len(value) == 10 and value[4] == "-" and value[7] == "-":
        return value  # already canonical: no new string
    return day.isoformat()


def _check_date(name: str, value: Any) -> Any:
    try:
        return normalize_date(value)
    except ValueError as exc:
        raise _wrong(name, "date", value, str(exc)) from None


# Decimal text as Arrow's decimal parser takes it: sign, digits with an optional point,
# optional exponent. No spaces, underscores, NaN or Infinity (Python's Decimal takes them,
# Arrow does not). The exponent is bounded only to keep int() cheap; any value it could
# express beyond 38 digits is refused by the precision and scale checks anyway.
_DECIMAL_TEXT = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d{1,6}))?")


def canonical_decimal(text: str, precision: int, scale: int) -> str:
    """Decimal text as fixed-point text with exactly ``scale`` places, exactly.

    Raises ValueError when the text is not a number, needs more places than ``scale`` (the
    sink refuses rather than rounds) or more integer digits than ``precision - scale``.
    Pure string and int arithmetic: no float, no decimal context that could round.
    """
    match = _DECIMAL_TEXT.fullmatch(text)
    if match is None or not (match[2] or match[3]):
        raise ValueError("not a decimal number")
    sign, whole, fraction, exponent = match[1], match[2], match[3] or "", match[4]
    digits = (whole + fraction).lstrip("0")
    power = (int(exponent) if exponent else 0) - len(fraction)
    significant = digits.rstrip("0")
    power += len(digits) - len(significant)
    if not significant:
        return "0." + "0" * scale if scale else "0"
    places = -power if power < 0 else 0
    if places > scale:
        raise ValueError(f"{places} decimal places; the scale is {scale}")
    integer_digits = len(significant) + power
    if integer_digits > precision - scale:
        raise ValueError(
            f"{integer_digits} integer digits; decimal({precision},{scale}) holds "
            f"{precision - scale}"
        )
    units = str(int(significant) * 10 ** (power + scale)).rjust(scale + 1, "0")
    sign = "-" if sign == "-" else ""
    return f"{sign}{units[:-scale]}.{units[-scale:]}" if scale else f"{sign}{units}"


def _decimal_checker(kind: FieldType) -> Checker:
    precision, scale = kind.params
    label = str(kind)
    bound = 10 ** (precision - scale)

    def check(name: str, value: Any) -> Any:
        kind_of = type(value)
        if kind_of is int:
            if -bound < value < bound:
                return value
            raise _wrong(name, label, value, f"more than {precision - scale} integer digits")
        try:
            if kind_of is str:
                text = canonical_decimal(value, precision, scale)
                return value if text == value else text  # same object: no event copy
            if kind_of is float and math.isfinite(value):
                # repr is the shortest text that reads back as this float: what orjson
                # writes into the typed stream and the sink parses. Checked, kept as is.
                canonical_decimal(repr(value), precision, scale)
                return value
        except ValueError as exc:
            raise _wrong(name, label, value, str(exc)) from None
        raise _wrong(name, label, value, "a decimal is a JSON number or a numeric string")

    return check


_CHECKERS: dict[str, Checker] = {
    "string": _check_string,
    "int": _check_int,
    "float": _check_float,
    "bool": _check_bool,
    "timestamp": _check_timestamp,
    "date": _check_date,
}

# Python types a field's value may have to pass without calling its checker (ints are not
# here: they still need the 64-bit range check).
_ACCEPTED: dict[str, type] = {"string": str, "bool": bool, "float": float}


def _key_converter(kind: FieldType) -> Callable[[str], str] | None:
    """How a map key (a JSON string) becomes the canonical text of its key type.

    None for string keys: nothing to do. Otherwise a function raising ValueError.
    """
    name = kind.kind
    if name == "string":
        return None
    if name == "int":

        def to_int(key: str) -> str:
            if not _INT_TEXT.fullmatch(key):
                raise ValueError("not an integer")
            number = int(key)
            if not _INT64_MIN <= number <= _INT64_MAX:
                raise ValueError("outside the 64-bit range")
            return str(number)

        return to_int
    if name == "float":

        def to_float(key: str) -> str:
            match = _DECIMAL_TEXT.fullmatch(key)
            if match is None or not (match[2] or match[3]):
                raise ValueError("not a number")
            number = float(key)
            if not math.isfinite(number):
                raise ValueError("outside the float range")
            return repr(number)

        return to_float
    if name == "bool":

        def to_bool(key: str) -> str:
            if key not in ("true", "false"):
                raise ValueError("bool keys are 'true' or 'false'")
            return key

        return to_bool
    if name == "timestamp":
        return normalize_timestamp
    if name == "date":
        return normalize_date
    raise ValueError(f"map keys must be scalar, got {kind}")  # pragma: no cover - parse refuses


_INT_TEXT = re.compile(r"[+-]?\d{1,19}")


def _build(kind: FieldType) -> tuple[type | None, Checker]:
    """The (fast-path Python type, checker) of a column type; containers recurse."""
    if kind.kind in _CHECKERS:
        return _ACCEPTED.get(kind.kind), _CHECKERS[kind.kind]
    if kind.kind == "decimal":
        return None, _decimal_checker(kind)
    if kind.kind == "list":
        return None, _list_checker(kind)
    if kind.kind == "struct":
        return None, _struct_checker(kind)
    if kind.kind == "map":
        return None, _map_checker(kind)
    raise ValueError(f"no checker for {kind}")  # pragma: no cover - parse refuses


def _list_checker(kind: FieldType) -> Checker:
    label = str(kind)
    accepted, check_item = _build(kind.items[0])

    def check(name: str, value: Any) -> Any:
        if type(value) is not list:
            raise _wrong(name, label, value)
        out: list[Any] | None = None
        for index, item in enumerate(value):
            # A null item is a null in the Arrow list, as the sink reads it.
            if item is None or type(item) is accepted:
                continue
            checked = check_item(f"{name}[{index}]", item)
            if checked is not item:
                if out is None:
                    out = list(value)
                out[index] = checked
        return value if out is None else out

    return check


def _struct_checker(kind: FieldType) -> Checker:
    label = str(kind)
    plan = tuple(
        (field_name, *_build(item)) for field_name, item in zip(kind.names, kind.items, strict=True)
    )

    def check(name: str, value: Any) -> Any:
        if type(value) is not dict:
            raise _wrong(name, label, value)
        changed: dict[str, Any] | None = None
        for field_name, accepted, check_field in plan:
            item = value.get(field_name)
            if item is None or type(item) is accepted:
                continue  # absent and null fields are nulls in the sink's struct
            checked = check_field(f"{name}.{field_name}", item)
            if checked is not item:
                if changed is None:
                    changed = {}
                changed[field_name] = checked
        if changed is None:
            return value
        # Keys the struct does not declare stay: the sink ignores them like top-level ones.
        return {**value, **changed}

    return check


def _map_checker(kind: FieldType) -> Checker:
    label = str(kind)
    key_kind, value_kind = kind.items
    to_key = _key_converter(key_kind)
    accepted, check_value = _build(value_kind)

    def check(name: str, value: Any) -> Any:
        if type(value) is not dict:
            raise _wrong(name, label, value)
        out: dict[str, Any] | None = None
        for position, (key, item) in enumerate(value.items()):
            new_key = key
            if to_key is not None:
                try:
                    new_key = to_key(key)
                except ValueError as exc:
                    raise _wrong(f"{name} key", str(key_kind), key, str(exc)) from None
            new_item = item
            if item is not None and type(item) is not accepted:
                new_item = check_value(f"{name}[{orjson.dumps(key).decode()}]", item)
            if out is None and (new_key != key or new_item is not item):
                out = dict(list(value.items())[:position])
            if out is not None:
                if new_key in out:
                    raise _wrong(f"{name} key", str(key_kind), key, f"the same key as {new_key!r}")
                out[new_key] = new_item
        return value if out is None else out

    return check


@functools.lru_cache(maxsize=1024)
def checker_for(kind: FieldType | str) -> tuple[type | None, Checker]:
    """The (fast-path Python type, checker) of a column type such as ``list<date>``.

    Built once per type text: a schema's validator and every schema sharing a column type
    reuse the same closures. ValueError for a type :func:`parse_field_type` refuses.
    """
    return _build(parse_field_type(kind) if isinstance(kind, str) else kind)


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


_I64 = Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=_INT64_MAX)]
#: Column kinds msgspec checks exactly as the checkers do (timestamps: the JSON type only;
#: their text is normalized after, in Python).
_MSGSPEC_TYPES: dict[str, Any] = {
    "string": str,
    "int": _I64,
    "float": float | _I64,
    "bool": bool,
    "timestamp": str | _I64,
}
_convert = msgspec.convert
#: (field name, required, fast-path Python type, checker) of one declared field.
_PlanEntry = tuple[str, bool, "type | None", Checker]


def _compiled_check(schema: Schema) -> type[msgspec.Struct] | None:
    """A msgspec struct whose conversion from an event dict passes exactly when every
    declared field has its JSON type and every required one is there and not null; None
    for a schema with other column kinds or names msgspec cannot hold."""
    fields: list[Any] = []
    for spec in schema.fields:
        kind = _MSGSPEC_TYPES.get(str(spec.type))
        if kind is None or not spec.name.isidentifier() or keyword.iskeyword(spec.name):
            return None
        fields.append((spec.name, kind) if spec.required else (spec.name, kind | None, None))
    # Required fields first: a struct's fields with defaults come last.
    fields.sort(key=lambda f: len(f) == 3)
    try:
        return msgspec.defstruct(f"Checked_{schema.name}", fields)
    except (TypeError, ValueError):
        return None


class Validator:
    """A schema compiled for fast per-event checks.

    Calling it with a parsed event returns the event with its declared fields checked and
    timestamps normalized. The input dict is never modified: when a value changes, a copy
    is returned, so one parsed event can be validated against several schemas (fan-out).
    Undeclared fields are kept as they are.

    Schemas of plain columns (string, int, float, bool, timestamp) are checked in one
    ``msgspec.convert`` call (C) and only timestamps are then looked at in Python; an event
    that conversion refuses goes the field-by-field way, which names the first bad field.
    """

    __slots__ = ("_compiled", "_plan", "_times", "schema")

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._plan: tuple[_PlanEntry, ...] = tuple(
            (spec.name, spec.required, *checker_for(spec.type)) for spec in schema.fields
        )
        self._compiled = _compiled_check(schema)
        #: What is left to do once the compiled check passed: normalize the timestamps.
        self._times = tuple(
            entry
            for entry, spec in zip(self._plan, schema.fields, strict=True)
            if spec.type == "timestamp"
        )

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        """Check one parsed event; raises ValidationError on the first bad field."""
        compiled = self._compiled
        if compiled is None:
            return self._check(event)
        try:
            _convert(event, compiled)
        except msgspec.ValidationError:
            return self._check(event)
        return self._check(event, self._times)

    def _check(
        self, event: dict[str, Any], plan: tuple[_PlanEntry, ...] | None = None
    ) -> dict[str, Any]:
        """Field by field, in declaration order (of ``plan``, default all fields): the first
        bad field raises."""
        changed: dict[str, Any] | None = None
        get = event.get
        for name, required, accepted, check in self._plan if plan is None else plan:
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

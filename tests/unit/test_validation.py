"""Unit tests: event validation, timestamp normalization and DLQ records."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.dlq import DeadLetters, dlq_line, dlq_record
from agents.validation import (
    ERROR_TYPES,
    ValidationError,
    Validator,
    canonical_to_epoch_ms,
    format_epoch_ms,
    normalize_timestamp,
    parse_event,
    validate,
    validator_for,
)
from firelake.config import DLQ_SCHEMA, FieldSpec, Schema
from firelake.grammars.field_types import FieldType
from sinks.conversion import arrow_type
from sinks.parquet import convert

SCHEMA = Schema(
    name="t",
    fields=(
        FieldSpec("id", "string", True),
        FieldSpec("at", "timestamp", True),
        FieldSpec("n", "int"),
        FieldSpec("x", "float"),
        FieldSpec("ok", "bool"),
        FieldSpec("when", "timestamp"),
    ),
    time_field="at",
)
BASE = {"id": "e1", "at": "2026-11-29T08:00:00.000000Z"}


def check(**fields: object) -> dict:
    return validate(orjson.dumps({**BASE, **fields}), SCHEMA)


def failure(line: bytes) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        validate(line, SCHEMA)
    assert info.value.error_type in ERROR_TYPES
    return info.value


# ------------------------------------------------------------------ valid events


def test_valid_event_keeps_values_and_undeclared_fields() -> None:
    event = check(n=3, x=1.5, ok=False, extra={"nested": [1]})
    assert event == {**BASE, "n": 3, "x": 1.5, "ok": False, "extra": {"nested": [1]}}


def test_optional_fields_may_be_absent_or_null() -> None:
    assert check(n=None, x=None, ok=None, when=None)["n"] is None
    assert check() == BASE


def test_float_accepts_ints() -> None:
    assert check(x=7)["x"] == 7


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("2026-11-29T08:00:00.000000Z", "2026-11-29T08:00:00.000000Z"),
        ("2026-11-29T08:00:00Z", "2026-11-29T08:00:00.000000Z"),
        ("2026-11-29T08:00:00.5Z", "2026-11-29T08:00:00.500000Z"),
        ("2026-11-29T08:00:00.123Z", "2026-11-29T08:00:00.123000Z"),  # JavaScript's form
        ("2026-W48-7T08:00:00Z", "2026-11-29T08:00:00.000000Z"),  # ISO week date
        ("2026-W48-7T08:00:00.000Z", "2026-11-29T08:00:00.000000Z"),
        ("2026-11-29", "2026-11-29T00:00:00.000000Z"),
        ("2026-11-29T10:30:00.123+02:00", "2026-11-29T08:30:00.123000Z"),
        ("2026-11-29T00:30:00-01:00", "2026-11-29T01:30:00.000000Z"),
        ("2026-11-29T08:00:00", "2026-11-29T08:00:00.000000Z"),  # naive means UTC
        ("2026-11-29 08:00:00.000001+00:00", "2026-11-29T08:00:00.000001Z"),
        (1795939200123, "2026-11-29T08:00:00.123000Z"),  # epoch milliseconds
        (0, "1970-01-01T00:00:00.000000Z"),
        (-1000, "1969-12-31T23:59:59.000000Z"),
    ],
)
def test_timestamps_are_normalized_to_canonical_utc(given: object, canonical: str) -> None:
    assert normalize_timestamp(given) == canonical
    assert check(at=given)["at"] == canonical
    assert check(when=given)["when"] == canonical


def test_canonical_timestamp_string_is_returned_as_is() -> None:
    value = "2026-11-29T08:00:00.000000Z"
    assert normalize_timestamp(value) is value


def test_validator_does_not_modify_its_input_and_copies_only_on_change() -> None:
    validator = Validator(SCHEMA)
    event = {**BASE, "when": 0}
    out = validator(event)
    assert event["when"] == 0 and out["when"] == "1970-01-01T00:00:00.000000Z"
    unchanged = dict(BASE)
    assert validator(unchanged) is unchanged


def test_validator_for_caches_per_schema() -> None:
    assert validator_for(SCHEMA) is validator_for(SCHEMA)


def test_epoch_helpers_round_trip() -> None:
    text = format_epoch_ms(1795939200123)
    assert canonical_to_epoch_ms(text) == 1795939200123


# ------------------------------------------------------------------ errors


def test_invalid_json() -> None:
    error = failure(b'{"id": ')
    assert error.error_type == "invalid_json"
    assert error.reason.startswith("invalid JSON")


@pytest.mark.parametrize("line", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_not_an_object(line: bytes) -> None:
    error = failure(line)
    assert error.error_type == "not_an_object"
    assert "expected a JSON object" in error.reason


def test_missing_required_field() -> None:
    error = failure(orjson.dumps({"at": BASE["at"]}))
    assert (error.error_type, error.reason) == ("missing_field", "field 'id': required, is missing")


def test_null_required_field() -> None:
    error = failure(orjson.dumps({**BASE, "at": None}))
    assert (error.error_type, error.reason) == ("missing_field", "field 'at': required, is null")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("id", 5, "field 'id': expected string, got 5"),
        ("n", True, "field 'n': expected int, got True"),
        ("n", 1.0, "field 'n': expected int, got 1.0"),
        ("n", "3", "field 'n': expected int, got '3'"),
        ("x", False, "field 'x': expected float, got False"),
        ("x", "1.5", "field 'x': expected float, got '1.5'"),
        ("ok", 1, "field 'ok': expected bool, got 1"),
        ("ok", "true", "field 'ok': expected bool, got 'true'"),
        ("at", "yesterday", "field 'at': expected timestamp, got 'yesterday'"),
        ("at", 1.5e12, "field 'at': expected timestamp, got 1500000000000.0"),
        ("at", True, "field 'at': expected timestamp, got True"),
        (
            "at",
            "2026-13-01T00:00:00Z",
            "field 'at': expected timestamp, got '2026-13-01T00:00:00Z'",
        ),
        ("at", 10**18, "field 'at': expected timestamp, got 1000000000000000000"),
        ("when", ["2026-11-29"], "field 'when': expected timestamp, got ['2026-11-29']"),
    ],
)
def test_wrong_type_names_the_field_and_value(field: str, value: object, expected: str) -> None:
    error = failure(orjson.dumps({**BASE, field: value}))
    assert error.error_type == "wrong_type"
    assert error.reason.startswith(expected), error.reason


def test_int_outside_64_bits_is_wrong_type() -> None:
    error = failure(b'{"id": "e", "at": 0, "n": 9223372036854775808}')
    assert error.error_type == "wrong_type"
    assert "64-bit" in error.reason


def test_timestamp_overflowing_after_utc_conversion() -> None:
    error = failure(orjson.dumps({**BASE, "at": "0001-01-01T00:00:00+01:00"}))
    assert error.error_type == "wrong_type"
    assert "years 1-9999" in error.reason


def test_long_values_are_cut_in_reasons() -> None:
    error = failure(orjson.dumps({**BASE, "at": "y" * 500}))
    assert len(error.reason) < 200
    assert "..." in error.reason


def test_parse_event_is_exposed_for_routing() -> None:
    assert parse_event(b'{"a": 1}') == {"a": 1}


# ------------------------------------------------------------------ DLQ records


def _record(payload: bytes, **kwargs: object) -> dict:
    return dlq_record(
        payload,
        "wrong_type",
        "field 'at': expected timestamp, got 'yesterday'",
        router="r1",
        source_topic="raw",
        source_partition=2,
        source_offset=41,
        source_index=7,
        failed_at="2026-11-29T08:00:00.000000Z",
        **kwargs,  # type: ignore[arg-type]
    )


def test_dlq_record_has_the_dlq_schema_fields_and_the_payload_byte_for_byte() -> None:
    payload = '{"id": "ä", "at":  "yesterday"}'.encode()
    record = _record(payload)
    assert list(record) == [spec.name for spec in DLQ_SCHEMA.fields]
    assert record["payload"].encode("utf-8") == payload
    assert record["payload_base64"] is None
    assert record["attempts"] == 1
    assert (record["source_partition"], record["source_offset"], record["source_index"]) == (
        2,
        41,
        7,
    )
    # The record itself passes the DLQ schema.
    assert validate(dlq_line(record), DLQ_SCHEMA) == record


def test_dlq_record_of_invalid_utf8_is_base64() -> None:
    payload = b'{"id": "\xff\xfe"}'
    record = _record(payload)
    assert record["payload"] is None
    assert base64.b64decode(record["payload_base64"]) == payload


def test_dlq_payload_is_bounded_and_the_cut_is_reported() -> None:
    payload = b'"' * 10_000  # each quote doubles when JSON-escaped
    record = _record(payload, max_payload_bytes=1000)
    assert len(orjson.dumps(record["payload"])) <= 1000
    assert payload.startswith(record["payload"].encode())
    assert "payload cut to its first" in record["reason"]
    assert "of 10000 bytes" in record["reason"]


def test_dlq_line_is_one_compact_line() -> None:
    line = dlq_line(_record(b"a\nb"))
    assert b"\n" not in line
    assert orjson.loads(line)["payload"] == "a\nb"


def test_dead_letters_use_the_injected_clock() -> None:
    letters = DeadLetters("r1", clock=lambda: 1795939200.5)
    record = letters.record(
        b"x",
        "invalid_json",
        "bad",
        source_topic="t",
        source_partition=0,
        source_offset=1,
        source_index=0,
    )
    assert record["failed_at"] == "2026-11-29T08:00:00.500000Z"
    assert record["router"] == "r1"
    with pytest.raises(ValueError, match="max_payload_bytes"):
        DeadLetters("r1", max_payload_bytes=10)


# ------------------------------------------------------------------ parametric types

TYPED = Schema(
    name="typed",
    fields=(
        FieldSpec("day", "date"),
        FieldSpec("price", "decimal(10,2)"),
        FieldSpec("tags", "list<string>"),
        FieldSpec("times", "list<timestamp>"),
        FieldSpec("device", "struct<os:string,seen:timestamp,size:list<int>>"),
        FieldSpec("counts", "map<string,int>"),
        FieldSpec("by_id", "map<int,decimal(4,1)>"),
    ),
)


def typed(**fields: object) -> dict:
    return validate(orjson.dumps(fields), TYPED)


def typed_failure(**fields: object) -> str:
    with pytest.raises(ValidationError) as info:
        typed(**fields)
    assert info.value.error_type == "wrong_type"
    return info.value.reason


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("2026-11-29", "2026-11-29"),
        ("20261129", "2026-11-29"),  # ISO basic form
        ("2026-W48-7", "2026-11-29"),  # ISO week date
        ("0001-01-01", "0001-01-01"),
    ],
)
def test_dates_are_normalized_to_yyyy_mm_dd(given: str, canonical: str) -> None:
    assert typed(day=given)["day"] == canonical


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("2026-02-30", "not an ISO-8601 date"),
        ("2026-11-29T08:00:00Z", "not an ISO-8601 date"),
        ("29.11.2026", "not an ISO-8601 date"),
        (20261129, "ISO-8601 strings"),
    ],
)
def test_bad_dates_are_refused(value: object, detail: str) -> None:
    reason = typed_failure(day=value)
    assert reason.startswith("field 'day': expected date, got"), reason
    assert detail in reason


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("12.34", "12.34"),
        ("12.3", "12.30"),
        ("12", "12.00"),
        ("-0.5", "-0.50"),
        ("+.5", "0.50"),
        ("1.5000", "1.50"),  # trailing zeros are not places the value needs
        ("1e2", "100.00"),
        ("1234e-2", "12.34"),
        ("-0", "0.00"),
        ("00099999999.99", "99999999.99"),
        (12.34, 12.34),  # a number is checked and kept: its text is what the sink reads
        (7, 7),
        (99999999.99, 99999999.99),
    ],
)
def test_decimals_in_range_pass_and_strings_become_exact_fixed_point(
    given: object, stored: object
) -> None:
    out = typed(price=given)["price"]
    assert out == stored and type(out) is type(stored)


def test_decimal_strings_stay_exact_beyond_float_precision() -> None:
    schema = Schema("d", (FieldSpec("v", "decimal(38,10)"),))
    text = "1234567890123456789012345678.0123456789"
    assert validate(orjson.dumps({"v": text}), schema)["v"] == text


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("12.345", "3 decimal places; the scale is 2"),
        (12.345, "3 decimal places; the scale is 2"),
        (0.1 + 0.2, "17 decimal places"),  # 0.30000000000000004: the sink refuses it too
        ("123456789", "9 integer digits; decimal(10,2) holds 8"),
        (123456789, "more than 8 integer digits"),
        (1e20, "21 integer digits"),
        ("abc", "not a decimal number"),
        (" 1.5", "not a decimal number"),
        ("NaN", "not a decimal number"),
        ("1_000", "not a decimal number"),
        (".", "not a decimal number"),
        (True, "a JSON number or a numeric string"),
        ([1], "a JSON number or a numeric string"),
    ],
)
def test_decimals_out_of_precision_or_scale_are_refused(value: object, detail: str) -> None:
    reason = typed_failure(price=value)
    assert reason.startswith("field 'price': expected decimal(10,2), got"), reason
    assert detail in reason


def test_list_items_pass_their_type_and_errors_name_the_index() -> None:
    assert typed(tags=["a", None, "b"])["tags"] == ["a", None, "b"]
    assert typed_failure(tags=["a", "b", 5]) == "field 'tags[2]': expected string, got 5"
    assert typed_failure(tags="a").startswith("field 'tags': expected list<string>, got 'a'")


def test_nested_timestamps_are_normalized_and_the_input_is_not_modified() -> None:
    validator = Validator(TYPED)
    event = {"times": ["2026-11-29T08:00:00.000000Z", 0], "device": {"seen": 1000, "x": 1}}
    out = validator(event)
    assert out["times"] == ["2026-11-29T08:00:00.000000Z", "1970-01-01T00:00:00.000000Z"]
    assert out["device"] == {"seen": "1970-01-01T00:00:01.000000Z", "x": 1}  # extra key kept
    assert event["times"][1] == 0 and event["device"]["seen"] == 1000
    unchanged = {"times": ["2026-11-29T08:00:00.000000Z"], "device": {"os": "ios"}}
    assert validator(unchanged) is unchanged


def test_struct_errors_name_the_field_path() -> None:
    assert typed_failure(device={"os": 5}) == "field 'device.os': expected string, got 5"
    assert typed_failure(device={"size": [1, "2"]}) == (
        "field 'device.size[1]': expected int, got '2'"
    )
    assert typed_failure(device=[1]).startswith("field 'device': expected struct<os:string,")
    assert typed(device={"os": None})["device"] == {"os": None}


def test_map_values_pass_their_type_and_keys_convert_to_the_key_type() -> None:
    assert typed(counts={"a": 1, "b": None})["counts"] == {"a": 1, "b": None}
    assert typed_failure(counts={"a": 1, "b": "2"}) == (
        "field 'counts[\"b\"]': expected int, got '2'"
    )
    # Int keys are rewritten canonically; decimal values as fixed-point text.
    assert typed(by_id={"007": "1.5", "-3": 2})["by_id"] == {"7": "1.5", "-3": 2}
    reason = typed_failure(by_id={"x": 1})
    assert reason.startswith("field 'by_id key': expected int, got 'x'"), reason
    reason = typed_failure(by_id={"7": 1, "007": 2})
    assert "the same key as '7'" in reason
    assert typed_failure(by_id={"1": 1.25}).startswith(
        "field 'by_id[\"1\"]': expected decimal(4,1)"
    )
    assert typed_failure(counts=[1]).startswith("field 'counts': expected map<string,int>")


@pytest.mark.parametrize(
    ("key_type", "key", "canonical"),
    [
        ("float", "1.50", "1.5"),
        ("bool", "true", "true"),
        ("date", "20261129", "2026-11-29"),
        ("timestamp", "2026-11-29T08:00:00Z", "2026-11-29T08:00:00.000000Z"),
    ],
)
def test_map_keys_of_every_scalar_type(key_type: str, key: str, canonical: str) -> None:
    schema = Schema("m", (FieldSpec("m", f"map<{key_type},int>"),))
    assert validate(orjson.dumps({"m": {key: 1}}), schema)["m"] == {canonical: 1}


@pytest.mark.parametrize(
    ("key_type", "key"),
    [("float", "nan"), ("float", "1e999"), ("bool", "True"), ("int", "1.0"), ("int", "9" * 20)],
)
def test_map_keys_that_do_not_convert_are_refused(key_type: str, key: str) -> None:
    schema = Schema("m", (FieldSpec("m", f"map<{key_type},int>"),))
    with pytest.raises(ValidationError, match="field 'm key'"):
        validate(orjson.dumps({"m": {key: 1}}), schema)


def test_required_container_fields_and_scalar_fast_path_still_apply() -> None:
    schema = Schema("r", (FieldSpec("tags", "list<string>", True), FieldSpec("s", "string")))
    with pytest.raises(ValidationError, match="required, is missing"):
        validate(b'{"s": "x"}', schema)
    event = {"tags": [], "s": "x"}
    assert Validator(schema)(event) is event


# ------------------------------------------------------------------ validator ⇒ sink agree
# Whatever the validator accepts (and normalizes) must convert in the sink to the declared
# Arrow type and to the value that was meant: generated column types, nested freely, with
# values in every accepted form (offsets, epoch ms, week dates, decimal text and numbers).

_UTC_SPAN = (datetime(1900, 1, 1), datetime(2200, 1, 1))
_NAMES = st.sampled_from(["a", "b", "c", "d"])


def _scalar_types() -> st.SearchStrategy[FieldType]:
    plain = st.sampled_from(["string", "int", "float", "bool", "timestamp", "date"]).map(FieldType)
    decimals = st.integers(1, 38).flatmap(
        lambda p: st.integers(0, p).map(lambda s: FieldType("decimal", (p, s)))
    )
    return plain | decimals


def _types() -> st.SearchStrategy[FieldType]:
    def containers(inner: st.SearchStrategy[FieldType]) -> st.SearchStrategy[FieldType]:
        lists = inner.map(lambda t: FieldType("list", items=(t,)))
        structs = st.lists(
            st.tuples(_NAMES, inner), min_size=1, max_size=3, unique_by=lambda x: x[0]
        )
        keys = st.sampled_from(["string", "int", "float", "bool", "timestamp", "date"])
        maps = st.tuples(keys, inner).map(
            lambda kv: FieldType("map", items=(FieldType(kv[0]), kv[1]))
        )
        return (
            lists
            | structs.map(
                lambda fs: FieldType(
                    "struct", items=tuple(t for _, t in fs), names=tuple(n for n, _ in fs)
                )
            )
            | maps
        )

    return st.recursive(_scalar_types(), containers, max_leaves=4)


@st.composite
def _timestamp(draw: st.DrawFn) -> tuple[object, datetime]:
    moment = draw(st.datetimes(*_UTC_SPAN)).replace(tzinfo=UTC)
    form = draw(st.sampled_from(["canonical", "offset", "epoch_ms", "seconds"]))
    if form == "epoch_ms":
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        return int(moment.timestamp() * 1000 // 1), moment
    if form == "seconds":
        moment = moment.replace(microsecond=0)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ"), moment
    if form == "offset":
        offset = timedelta(minutes=draw(st.integers(-12 * 60, 14 * 60)))
        return moment.astimezone(timezone(offset)).isoformat(), moment
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), moment


@st.composite
def _date(draw: st.DrawFn) -> tuple[object, date]:
    day = draw(st.dates(date(1, 1, 1), date(9999, 12, 31)))
    form = draw(st.sampled_from(["iso", "basic", "week"]))
    if form == "basic":
        return day.strftime("%Y%m%d") if day.year >= 1000 else day.isoformat(), day
    if form == "week":
        year, week, weekday = day.isocalendar()
        if 1 <= year <= 9999:
            return f"{year:04d}-W{week:02d}-{weekday}", day
    return day.isoformat(), day


@st.composite
def _decimal(draw: st.DrawFn, precision: int, scale: int) -> tuple[object, Decimal]:
    units = draw(st.integers(-(10**precision) + 1, 10**precision - 1))
    exact = Decimal(f"{units}e-{scale}")  # the constructor is exact; scaleb rounds to 28
    form = draw(st.sampled_from(["fixed", "exponent", "number"]))
    if form == "number" and precision <= 15:
        # Up to 15 significant digits a float's shortest repr is these digits.
        return (float(exact) if scale else units), exact
    if form == "exponent":
        return f"{units}e-{scale}", exact
    return str(exact), exact


def _key_text(kind: str, value: object) -> str:
    if kind == "bool":
        return "true" if value else "false"
    if kind == "timestamp":
        return value.isoformat()  # type: ignore[attr-defined]
    if kind == "date":
        return value.isoformat()  # type: ignore[attr-defined]
    return repr(value) if kind == "float" else str(value)


def _keys(kind: str) -> st.SearchStrategy[object]:
    return {
        "string": st.text(max_size=5),
        "int": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(allow_nan=False, allow_infinity=False),
        "bool": st.booleans(),
        "timestamp": st.datetimes(*_UTC_SPAN).map(lambda d: d.replace(tzinfo=UTC)),
        "date": st.dates(),
    }[kind]


def _values(kind: FieldType) -> st.SearchStrategy[tuple[object, object]]:
    """(JSON value, what the sink should store) pairs of a column type."""
    same = lambda s: s.map(lambda v: (v, v))  # noqa: E731
    scalar: dict[str, st.SearchStrategy[tuple[object, object]]] = {
        "string": same(st.text(max_size=8)),
        "int": same(st.integers(-(2**63), 2**63 - 1)),
        "float": same(st.floats(allow_nan=False, allow_infinity=False)),
        "bool": same(st.booleans()),
        "timestamp": _timestamp(),
        "date": _date(),
    }
    if kind.kind in scalar:
        return scalar[kind.kind]
    if kind.kind == "decimal":
        return _decimal(*kind.params)
    nullable = _values_or_null
    if kind.kind == "list":
        return st.lists(nullable(kind.items[0]), max_size=3).map(
            lambda pairs: ([j for j, _ in pairs], [e for _, e in pairs])
        )
    if kind.kind == "struct":
        members = {n: nullable(t) for n, t in zip(kind.names, kind.items, strict=True)}
        return st.fixed_dictionaries(members).map(
            lambda d: ({n: j for n, (j, _) in d.items()}, {n: e for n, (_, e) in d.items()})
        )
    key_kind, value_kind = kind.items
    return st.dictionaries(_keys(key_kind.kind), nullable(value_kind), max_size=3).map(
        lambda d: (
            {_key_text(key_kind.kind, k): j for k, (j, _) in d.items()},
            [(k, e) for k, (_, e) in d.items()],
        )
    )


def _values_or_null(kind: FieldType) -> st.SearchStrategy[tuple[object, object]]:
    return st.just((None, None)) | _values(kind)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=_types())
def test_what_the_validator_accepts_the_sink_converts_to_the_declared_type(
    data: st.DataObject, kind: FieldType
) -> None:
    schema = Schema("p", (FieldSpec("id", "string", True), FieldSpec("v", str(kind))))
    json_value, expected = data.draw(_values(kind))
    checked = validate(orjson.dumps({"id": "e", "v": json_value}), schema)
    result = convert([orjson.dumps(checked)], [0], schema)
    assert result.bad == (), result.bad
    assert result.table.schema.field("v").type == arrow_type(kind)
    assert result.table.column("v").to_pylist() == [expected]

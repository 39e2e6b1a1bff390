"""Unit tests: event validation, timestamp normalization and DLQ records."""

from __future__ import annotations

import base64

import orjson
import pytest

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

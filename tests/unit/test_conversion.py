"""Unit tests of sinks.conversion (through sinks.parquet.convert): every column type,
OpenX-style key mapping, unknown fields dropped or kept, and errors isolated per line."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import orjson
import pyarrow as pa
import pytest

from firelake.config import FieldSpec, Schema, SinkConfig
from firelake.grammars.field_types import parse_field_type
from sinks.conversion import ConversionSpec, arrow_type, spec_for
from sinks.parquet import convert

ALL_TYPES = Schema(
    "all",
    (
        FieldSpec("id", "string"),
        FieldSpec("n", "int"),
        FieldSpec("x", "float"),
        FieldSpec("ok", "bool"),
        FieldSpec("at", "timestamp"),
        FieldSpec("day", "date"),
        FieldSpec("price", "decimal(10,2)"),
        FieldSpec("tags", "list<string>"),
        FieldSpec("pos", "struct<lat:float,days:list<date>>"),
        FieldSpec("attrs", "map<string,int>"),
    ),
    "at",
)
GOOD = {
    "id": "a",
    "n": 7,
    "x": 0.5,
    "ok": True,
    "at": "2026-11-29T10:15:00.123456+02:00",
    "day": "2026-11-29",
    "price": "12.34",
    "tags": ["x", "y"],
    "pos": {"lat": 60.2, "days": ["2026-01-02"]},
    "attrs": {"k": 1, "j": 2},
}


def lines(*events: object) -> bytes:
    return b"\n".join(e if isinstance(e, bytes) else orjson.dumps(e) for e in events)


def test_every_type_has_an_arrow_type() -> None:
    assert arrow_type(parse_field_type("decimal(10,2)")) == pa.decimal128(10, 2)
    assert arrow_type(parse_field_type("map<string,list<int>>")) == pa.map_(
        pa.string(), pa.list_(pa.int64())
    )
    assert arrow_type(parse_field_type("struct<a:date>"), for_reading=True) == pa.struct(
        [("a", pa.string())]
    )


def test_every_type_converts_from_json() -> None:
    result = convert([lines(GOOD)], [0], ALL_TYPES)
    assert result.bad == ()
    (row,) = result.table.to_pylist()
    assert row == {
        "id": "a",
        "n": 7,
        "x": 0.5,
        "ok": True,
        "at": datetime(2026, 11, 29, 8, 15, 0, 123456, tzinfo=UTC),
        "day": date(2026, 11, 29),
        "price": Decimal("12.34"),
        "tags": ["x", "y"],
        "pos": {"lat": 60.2, "days": [date(2026, 1, 2)]},
        "attrs": [("k", 1), ("j", 2)],
    }
    assert result.table.schema.field("at").type == pa.timestamp("us", tz="UTC")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("day", "29.11.2026", "29.11.2026"),
        ("price", "abc", "abc"),
        ("tags", "not-a-list", "tags"),
        ("attrs", {"k": "text"}, "attrs"),
        ("pos", {"days": ["never"]}, "never"),
    ],
)
def test_a_value_of_the_wrong_type_fails_only_its_line(
    field: str, value: object, reason: str
) -> None:
    bad = {**GOOD, "id": "bad", field: value}
    result = convert([lines(GOOD, bad, {**GOOD, "id": "b"})], [3], ALL_TYPES)
    assert result.table.column("id").to_pylist() == ["a", "b"]
    assert [(b.offset, b.index) for b in result.bad] == [(3, 1)]
    assert reason in result.bad[0].reason


SMALL = Schema("s", (FieldSpec("user_id", "string"), FieldSpec("n", "int")), "")


def test_keys_map_like_the_openx_serde() -> None:
    spec = ConversionSpec(
        SMALL,
        case_insensitive=True,
        dots_to_underscores=True,
        column_to_json_key=(("n", "Count"),),
    )
    events = [{"User.ID": "a", "Count": 1}, {"USER_ID": "b", "count": 2}]
    result = convert([lines(*events)], [0], spec)
    assert result.table.to_pylist() == [{"user_id": "a", "n": 1}, {"user_id": "b", "n": 2}]
    exact = convert([lines(*events)], [0], SMALL)  # no mapping: nothing matches
    assert exact.table.to_pylist() == []  # two events with no column of the table...
    assert len(exact.bad) == 2  # ...are reported, not written as empty rows


def test_unknown_fields_are_dropped_or_kept_in_one_json_column() -> None:
    event = {"user_id": "a", "n": 1, "extra": {"deep": [1]}, "other": "x"}
    dropped = convert([lines(event)], [0], SMALL)
    assert dropped.table.column_names == ["user_id", "n"]
    kept = convert([lines(event, {"user_id": "b"})], [0], ConversionSpec(SMALL, "keep", "_rest"))
    assert kept.table.column_names == ["user_id", "n", "_rest"]
    rest = kept.table.column("_rest").to_pylist()
    assert orjson.loads(rest[0]) == {"extra": {"deep": [1]}, "other": "x"}
    assert rest[1] is None


def test_the_python_pass_reports_non_objects_and_bad_json_per_line() -> None:
    spec = ConversionSpec(SMALL, unknown_fields="keep")
    result = convert([lines({"user_id": "a"}, b"null", b"{oops", b"", b"[1]")], [9], spec)
    assert result.table.column("user_id").to_pylist() == ["a"]
    assert [(b.index, b.reason[:8]) for b in result.bad] == [
        (1, "event is"),
        (2, "not JSON"),
        (4, "event is"),
    ]


def test_a_sink_config_becomes_a_conversion_spec() -> None:
    sink = SinkConfig(unknown_fields="keep", case_insensitive=True, column_to_json_key={"n": "N"})
    spec = spec_for(sink, SMALL)
    assert spec.python_pass and spec.column_of("user_ID") == "user_id"
    assert spec.column_of("N") == "n" and spec.column_of("zzz") is None
    assert not spec_for(SinkConfig(), SMALL).python_pass


def test_without_a_schema_columns_are_inferred() -> None:
    result = convert([lines({"a": 1, "b": "x"}, {"a": 2, "c": True})], [0], None)
    assert result.table.column_names == ["a", "b", "c"]
    assert result.table.column("a").to_pylist() == [1, 2]

"""Unit tests of sinks.prefix: Firehose prefix templates, parsed, rendered and applied."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from firelake.grammars.prefix import DEFAULT_PARTITION, PrefixError, parse_prefix, render
from sinks.prefix import split_rows

WHEN = datetime(2026, 11, 29, 8, 5, 9, tzinfo=UTC)
TEMPLATE = (
    "product=!{partitionKeyFromQuery:product}/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/"
)


def test_a_template_renders_time_fields_table_and_error_type() -> None:
    prefix = parse_prefix(TEMPLATE)
    assert prefix.fields == ("product",) and prefix.uses_time
    assert render(prefix, when=WHEN, keys={"product": "areena"}) == (
        "product=areena/dt=2026-11-29/hour=08/"
    )
    errors = parse_prefix("_errors/!{table}/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/")
    assert render(errors, when=WHEN, table="t", error_type="format-conversion-failed") == (
        "_errors/t/format-conversion-failed/2026/11/29/"
    )
    assert render(parse_prefix("m=!{timestamp:mm}s=!{timestamp:ss}/"), when=WHEN) == "m=05s=09/"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("dt=!{timestamp:yyyy-MM-dd}", "ends with '/'"),
        ("/x/", "leading"),
        ("a//b/", "empty folder"),
        ("x=!{timestamp:yyyy-QQ}/", "'QQ'"),
        ("x=!{partitionKeyFromLambda:a}/", "not supported"),
        ("x=!{firehose:random-string}/", "not supported"),
        ("x=!{partitionKeyFromQuery:.a.b}/", "top-level column"),
        ("../x/", "'..'"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(PrefixError, match=reason):
        parse_prefix(text)


def test_jq_style_column_queries_are_accepted() -> None:
    assert parse_prefix("p=!{partitionKeyFromQuery:.product}/").fields == ("product",)


def test_rows_split_by_folder_in_sorted_order_keeping_input_order() -> None:
    times = [datetime(2026, 11, 29, h, tzinfo=UTC) for h in (9, 8, 9, 8, 9)]
    rows = pa.table(
        {
            "id": ["a", "b", "c", "d", "e"],
            "at": pa.array(times, pa.timestamp("us", tz="UTC")),
            "product": ["x", "y", "x", "x", None],
        }
    )
    parts = split_rows(parse_prefix(TEMPLATE), rows, time_field="at", fallback=WHEN)
    assert [(folder, t.column("id").to_pylist()) for folder, t in parts] == [
        (f"product={DEFAULT_PARTITION}/dt=2026-11-29/hour=09/", ["e"]),
        ("product=x/dt=2026-11-29/hour=08/", ["d"]),
        ("product=x/dt=2026-11-29/hour=09/", ["a", "c"]),
        ("product=y/dt=2026-11-29/hour=08/", ["b"]),
    ]


def test_key_values_never_escape_their_folder() -> None:
    rows = pa.table({"k": ["a/b", "..", "", "ok"], "n": [1, 2, 3, 4]})
    parts = split_rows(
        parse_prefix("k=!{partitionKeyFromQuery:k}/"), rows, time_field="", fallback=WHEN
    )
    assert sorted(folder for folder, _ in parts) == sorted(
        ["k=a%2Fb/", "k=%2E/", f"k={DEFAULT_PARTITION}/", "k=ok/"]
    )


def test_null_times_and_missing_time_fields_use_the_fallback() -> None:
    rows = pa.table(
        {"at": pa.array([None, WHEN], pa.timestamp("us", tz="UTC")), "b": [True, False]}
    )
    prefix = parse_prefix("b=!{partitionKeyFromQuery:b}/h=!{timestamp:HH}/")
    late = datetime(2026, 12, 1, 23, 59, tzinfo=UTC)
    parts = dict(split_rows(prefix, rows, time_field="at", fallback=late))
    assert set(parts) == {"b=true/h=23/", "b=false/h=08/"}
    parts = dict(split_rows(prefix, rows, time_field="", fallback=late))
    assert set(parts) == {"b=true/h=23/", "b=false/h=23/"}


def test_a_static_prefix_is_one_folder_without_any_kernel() -> None:
    rows = pa.table({"n": [1, 2]})
    assert split_rows(parse_prefix("all/"), rows, time_field="", fallback=WHEN) == [("all/", rows)]
    assert split_rows(parse_prefix("all/"), rows.slice(0, 0), time_field="", fallback=WHEN) == []


def test_a_list_column_is_no_key_and_goes_to_the_default_partition() -> None:
    rows = pa.table({"tags": [["a"], ["b"]]})
    prefix = parse_prefix("t=!{partitionKeyFromQuery:tags}/")
    parts = split_rows(prefix, rows, time_field="", fallback=WHEN)
    assert [(folder, t.num_rows) for folder, t in parts] == [(f"t={DEFAULT_PARTITION}/", 2)]

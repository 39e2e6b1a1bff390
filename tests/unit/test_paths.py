"""Unit tests of sinks.paths: deterministic names and bookkeeping keys."""

from __future__ import annotations

import pytest

from sinks.paths import (
    data_file_name,
    error_file_name,
    intent_key,
    manifest_key,
    parse_data_file_name,
    state_key,
)


def test_data_file_name_is_deterministic_and_zero_padded() -> None:
    name = data_file_name("playback-events", 3, 0, 41)
    assert name == "part-playback-events-p3-00000000000000000000-00000000000000000041.parquet"
    assert name == data_file_name("playback-events", 3, 0, 41)
    assert data_file_name("t", 0, 1, 2, variant=2).endswith("-00000000000000000002-s2.parquet")


def test_data_file_names_sort_in_offset_order() -> None:
    names = [data_file_name("t", 0, first, first + 9) for first in (990, 10, 100_000, 0)]
    assert sorted(names) == [data_file_name("t", 0, f, f + 9) for f in (0, 10, 990, 100_000)]


def test_data_file_names_parse_back_to_their_range() -> None:
    for variant in (0, 3):
        name = data_file_name("a-b-p7", 12, 5, 99, variant)
        assert parse_data_file_name(name) == ("a-b-p7", 12, 5, 99)
    assert parse_data_file_name("compacted-abc.parquet") is None
    assert parse_data_file_name("part-t-p0-1-2.parquet") is None


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match=r"offsets 5\.\.4"):
        data_file_name("t", 0, 5, 4)
    with pytest.raises(ValueError):
        data_file_name("a/b", 0, 0, 0)


def test_error_file_names_follow_the_data_names() -> None:
    assert error_file_name("t", 1, 2, 3).endswith(
        "-p1-00000000000000000002-00000000000000000003.jsonl"
    )


def test_progress_files_are_per_sink_topic_and_partition() -> None:
    assert state_key("s", "t", 2) == "_firelake/sinks/s/t/2.json"
    assert intent_key("s", "t", 2) == "_firelake/sinks/s/t/2.intent.json"
    assert manifest_key("playback") == "_firelake/tables/playback/manifest.json"
    with pytest.raises(ValueError):
        state_key("..", "t", 0)
    with pytest.raises(ValueError):
        manifest_key("a/b")

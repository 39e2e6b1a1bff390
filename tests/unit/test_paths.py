"""Unit tests of sinks.paths: the lake layout and deterministic names."""

from __future__ import annotations

from pathlib import Path

import pytest

from sinks.paths import (
    data_file_name,
    error_dir,
    error_file_name,
    intent_path,
    partition_dir,
    state_path,
    tmp_path,
)

LAKE = Path("/lake")


def test_partition_dir_is_hive_style_with_two_digit_hours() -> None:
    assert partition_dir(LAKE, "playback", "2026-11-29", 8) == Path(
        "/lake/playback/dt=2026-11-29/hour=08"
    )
    assert partition_dir(LAKE, "playback", "2026-12-01", 23).name == "hour=23"


@pytest.mark.parametrize(("dt", "hour"), [("2026-11-29", 24), ("2026-1-29", 1), ("x", 0)])
def test_partition_dir_refuses_bad_dates_and_hours(dt: str, hour: int) -> None:
    with pytest.raises(ValueError):
        partition_dir(LAKE, "t", dt, hour)


def test_data_file_name_is_deterministic_and_zero_padded() -> None:
    name = data_file_name("playback-events", 3, 0, 41)
    assert name == "part-playback-events-p3-00000000000000000000-00000000000000000041.parquet"
    assert name == data_file_name("playback-events", 3, 0, 41)


def test_data_file_names_sort_in_offset_order() -> None:
    names = [data_file_name("t", 0, first, first + 9) for first in (990, 10, 100_000, 0)]
    assert sorted(names) == [data_file_name("t", 0, f, f + 9) for f in (0, 10, 990, 100_000)]


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match=r"offsets 5\.\.4"):
        data_file_name("t", 0, 5, 4)
    with pytest.raises(ValueError):
        data_file_name("a/b", 0, 0, 0)


def test_error_files_live_under_the_error_prefix() -> None:
    folder = error_dir(LAKE, "page", "2026-11-29")
    assert folder == Path("/lake/_errors/page/format-conversion-failed/dt=2026-11-29")
    assert error_file_name("t", 1, 2, 3).endswith(
        "-p1-00000000000000000002-00000000000000000003.jsonl"
    )


def test_progress_files_are_per_sink_topic_and_partition() -> None:
    assert state_path(LAKE, "s", "t", 2) == Path("/lake/_firelake/sinks/s/t/2.json")
    assert intent_path(LAKE, "s", "t", 2) == Path("/lake/_firelake/sinks/s/t/2.intent.json")
    with pytest.raises(ValueError):
        state_path(LAKE, "..", "t", 0)


def test_tmp_files_are_hidden_and_never_match_a_parquet_glob() -> None:
    tmp = tmp_path(Path("/lake/t/dt=2026-11-29/hour=08/part-x.parquet"))
    assert tmp == Path("/lake/t/dt=2026-11-29/hour=08/.part-x.parquet.tmp")
    assert not tmp.match("*.parquet")

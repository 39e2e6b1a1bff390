"""``starting_position`` of sinks: the router's field type and validation, reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from firelake.config import ConfigError, FirelakeConfig, starting_timestamp_ms
from firelake.testing import example_config


def sink_config(tmp_path: Path, **sink: str) -> FirelakeConfig:
    sinks = {"playback": {"stream": "playback-events", "table": "playback", **sink}}
    return example_config("127.0.0.1:1", tmp_path, "t", sinks=sinks)


def test_a_sink_starts_at_the_trim_horizon_unless_told(tmp_path: Path) -> None:
    config = sink_config(tmp_path)
    assert config.sinks["playback-t"].starting_position == "TRIM_HORIZON"
    spec = sink_config(tmp_path, starting_position="LATEST").sinks["playback-t"]
    assert spec.starting_position == "LATEST"


def test_at_timestamp_needs_an_iso_time_and_an_unknown_position_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"sinks\.playback-t\.starting_timestamp: AT_TIMESTAMP"):
        sink_config(tmp_path, starting_position="AT_TIMESTAMP")
    with pytest.raises(ConfigError, match=r"sinks\.playback-t\.starting_position: must be one of"):
        sink_config(tmp_path, starting_position="EARLIEST")
    spec = sink_config(
        tmp_path, starting_position="AT_TIMESTAMP", starting_timestamp="2026-12-01T10:00:00"
    ).sinks["playback-t"]
    assert spec.starting_timestamp == "2026-12-01T10:00:00"


def test_a_timestamp_without_a_zone_is_utc() -> None:
    assert starting_timestamp_ms("1970-01-01T00:00:01") == 1000
    assert starting_timestamp_ms("1970-01-01T02:00:01+02:00") == 1000

"""Replay positions."""

from __future__ import annotations

import pytest

from streams.replay import Position, ReplayError, parse_position


def test_positions() -> None:
    assert parse_position("42") == Position("offset", 42)
    assert parse_position("@1764403200000") == Position("time", 1764403200000)
    assert parse_position("2025-11-29T08:00:00Z") == Position("time", 1764403200000)
    assert parse_position("2025-11-29T08:00:00") == Position("time", 1764403200000)
    assert parse_position("earliest") == Position("earliest")
    with pytest.raises(ReplayError, match="not a position"):
        parse_position("yesterday")

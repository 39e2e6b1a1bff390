"""The Yle load shape: a day compressed into a run, prime time and bursts."""

from __future__ import annotations

import pytest

from streams.loadshape import YleShape, shape_for


def test_night_is_quiet_prime_time_peaks_and_bursts_reach_the_record() -> None:
    shape = YleShape(duration=240.0, burst_seconds=10.0)
    night = shape.rate_at(0.0)  # 04:00
    assert night == pytest.approx(1_000.0)
    rates = [shape.rate_at(t / 10) for t in range(2400)]
    assert max(rates) == 42_000.0
    base = [shape.base_rate(t / 10) for t in range(2400)]
    assert max(base) == pytest.approx(10_000.0, rel=0.01)
    # The peak of the curve is at 21:00 of the simulated day.
    peak_t = base.index(max(base)) / 10
    assert shape.hour_of_day(peak_t) == pytest.approx(21.0, abs=0.2)


def test_bursts_last_their_length_on_prime_time() -> None:
    shape = YleShape(duration=600.0, burst_seconds=30.0, bursts=2)
    windows = shape.burst_windows()
    assert len(windows) == 2
    for start, end in windows:
        assert end - start == pytest.approx(30.0)
        assert 19.0 <= shape.hour_of_day(start) and shape.hour_of_day(end) <= 23.0
        assert shape.rate_at((start + end) / 2) == 42_000.0
    assert windows[0][1] <= windows[1][0]


def test_scale_and_bounds() -> None:
    shape = YleShape(duration=100.0, burst_seconds=5.0, scale=0.1)
    assert max(shape.rate_at(t / 10) for t in range(1000)) == pytest.approx(4_200.0)
    assert shape.rate_at(100.0) == 0.0 and shape.rate_at(-1.0) == 0.0
    total = shape.expected_events()
    assert 0 < total < 4_200 * 100


def test_refusals_name_the_problem() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        YleShape(duration=10.0, burst_seconds=30.0)
    with pytest.raises(ValueError, match="duration"):
        YleShape(duration=0.0)
    with pytest.raises(ValueError, match="unknown load profile 'flat'"):
        shape_for("flat", 60.0)
    assert shape_for("yle", 80.0).burst_seconds == 10.0

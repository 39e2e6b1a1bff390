"""Load shapes over time: the target rate of a load run at each moment.

Yle's pipeline (chapter 6 of the book) sees a diurnal curve — quiet nights, a morning rise,
prime time in the evening at about 10 000 events/s — and bursts to about 42 000 events/s
when something big happens (a live final, breaking news) that last tens of seconds. The
``yle`` shape compresses one day into a run of ``duration`` seconds and puts the bursts on
prime time at full length (a burst of 30 s stays 30 s: its height against the service's
capacity is what a run tests). Pure: no clock, no I/O, so the shape is unit tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PROFILES", "YleShape", "shape_for"]


@dataclass(frozen=True, slots=True)
class YleShape:
    """Target events/s at ``t`` seconds into a run of ``duration`` seconds.

    The day: ``night_share`` of prime time at 04:00, rising through the day to
    ``prime_rate`` around 21:00 (a raised cosine of the time of day, skewed so the evening
    is the peak), and ``bursts`` bursts of ``burst_rate`` for ``burst_seconds`` each, spread
    over the prime-time hours. ``scale`` multiplies every rate (a smaller machine, a demo).
    """

    duration: float
    prime_rate: float = 10_000.0
    burst_rate: float = 42_000.0
    burst_seconds: float = 30.0
    bursts: int = 2
    night_share: float = 0.1
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise ValueError(f"duration must be a positive number of seconds, got {self.duration}")
        if not self.prime_rate > 0 or not self.burst_rate > 0 or not self.scale > 0:
            raise ValueError("prime_rate, burst_rate and scale must be positive")
        if self.bursts < 0 or self.burst_seconds < 0:
            raise ValueError("bursts and burst_seconds must not be negative")
        if self.bursts * self.burst_seconds > self.duration / 2:
            raise ValueError(
                f"{self.bursts} bursts of {self.burst_seconds:g} s do not fit a "
                f"{self.duration:g} s run (at most half of it)"
            )

    def hour_of_day(self, t: float) -> float:
        """The simulated time of day (0-24) at ``t`` seconds; the run starts at 04:00."""
        return (4.0 + 24.0 * (t / self.duration)) % 24.0

    def burst_windows(self) -> list[tuple[float, float]]:
        """(start, end) seconds of each burst: centred on prime time, evenly spread."""
        if not self.bursts or not self.burst_seconds:
            return []
        # Prime time is 19:00-23:00 of the simulated day: 15/24 to 19/24 of the run.
        first = self.duration * 15 / 24
        span = self.duration * 4 / 24
        step = span / self.bursts
        windows = []
        for i in range(self.bursts):
            middle = first + step * (i + 0.5)
            start = max(0.0, middle - self.burst_seconds / 2)
            windows.append((start, min(self.duration, start + self.burst_seconds)))
        return windows

    def base_rate(self, t: float) -> float:
        """The diurnal curve alone (no bursts), events/s."""
        hour = self.hour_of_day(t)
        # Trough at 04:00, peak at 21:00: a cosine over the 17 h rise and 7 h fall.
        if 4.0 <= hour < 21.0:
            phase = (hour - 4.0) / 17.0
        else:
            phase = 1.0 - ((hour - 21.0) % 24.0) / 7.0
        level = self.night_share + (1 - self.night_share) * (1 - math.cos(math.pi * phase)) / 2
        return self.prime_rate * level * self.scale

    def rate_at(self, t: float) -> float:
        """Target events/s at ``t`` seconds into the run (0 after its end)."""
        if t < 0 or t >= self.duration:
            return 0.0
        for start, end in self.burst_windows():
            if start <= t < end:
                return self.burst_rate * self.scale
        return self.base_rate(t)

    def expected_events(self, step: float = 0.1) -> int:
        """Events the whole run asks for (the integral of the rate)."""
        steps = int(self.duration / step)
        return int(sum(self.rate_at(i * step) * step for i in range(steps)))


#: Shapes ``firelake send --profile`` knows.
PROFILES = ("yle",)


def shape_for(name: str, duration: float, scale: float = 1.0) -> YleShape:
    """The named load shape over a run of ``duration`` seconds."""
    if name != "yle":
        raise ValueError(f"unknown load profile {name!r} (known: {', '.join(PROFILES)})")
    # Bursts last tens of seconds; a short run keeps them to at most a quarter of it each.
    burst = min(30.0, duration / 8)
    return YleShape(duration=duration, burst_seconds=burst, scale=scale)

"""Window arithmetic in integer microseconds: which windows hold an event time.

Times are epoch microseconds, as the lake's timestamps are, so a window agent and DuckDB
over the lake put an event on the same side of every boundary. A window is the half-open
interval ``[start, end)``:

- **tumbling** (size): ``start = floor(t / size) * size``, one window per event;
- **hopping** (size, step; size a multiple of step): the ``size / step`` windows
  ``[k*step, k*step + size)`` holding ``t``;
- **sliding** (size): one result per event at ``t`` over ``(t - size, t]`` — as an interval
  of microseconds ``[t - size + 1, t + 1)``;
- **session** (gap): events less than ``gap`` apart are one session ``[first, last + gap)``;
  an event alone is the proto-session ``[t, t + gap)``.

:func:`closes_at` is the end the watermark must reach: a window is closed once the
watermark is at or past it, and an event is late for a window already closed.
"""

from __future__ import annotations

from dataclasses import dataclass

from firelake.config import WindowConfig

__all__ = ["US", "Geometry", "geometry_of"]

#: Microseconds per second.
US = 1_000_000


@dataclass(frozen=True, slots=True)
class Geometry:
    """A window definition's sizes in microseconds."""

    type: str
    size: int
    step: int
    gap: int

    @property
    def hops(self) -> int:
        """Windows per event: size / step for hopping, else 1."""
        return self.size // self.step if self.type == "hopping" else 1

    def starts(self, t: int) -> list[int]:
        """Starts of the tumbling or hopping windows holding ``t``, oldest first."""
        if self.type == "tumbling":
            return [t - t % self.size]
        last = t - t % self.step
        return [last - j * self.step for j in range(self.hops - 1, -1, -1)]

    def closes_at(self, t: int) -> int:
        """For sliding results and sessions: the end of the event's own (proto-)window
        that decides whether it is late (``t + 1``: late once the watermark passed t)."""
        return t + 1


def geometry_of(spec: WindowConfig) -> Geometry:
    """The microsecond geometry of a window definition."""
    size = round(spec.size_seconds * US)
    step = round(spec.step_seconds * US) if spec.type == "hopping" else size
    gap = round(spec.gap_seconds * US) if spec.type == "session" else 0
    return Geometry(spec.type, size, step, gap)

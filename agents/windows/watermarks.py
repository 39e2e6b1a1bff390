"""Event-time progress: a watermark per source partition and the window's watermark.

A partition's watermark is the largest event time seen on it minus the grace period; the
window's watermark is the minimum over its partitions, so a window closes only when every
partition has moved past its end (plus grace). Two things keep that honest:

- **Lateness is decided per partition**, in the partition's order: an event is late for a
  window when the window's end is at or before its partition's watermark *before* the
  event (or before the watermark windows were already closed at). Kafka keeps a
  partition's order, so the same events are late on every run — after a crash, a restore
  or a rebalance — and a window never closes while an event that is not late could still
  count in it (the window's watermark never passes a partition's).
- **Idle partitions**: a partition without events holds the minimum back forever. One
  silent for ``idle_timeout_seconds`` (by the injected clock) is left out of the minimum
  until it speaks again; when every partition is idle the largest watermark counts, so a
  stream that stopped still closes every window ending before its latest event time minus
  grace (the window holding that event waits for event time to pass its end, as on KDA).
  This trades determinism for progress: an event that arrives on a partition after it was
  idle may find its window closed and go to the late stream (0 turns the exclusion off).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

__all__ = ["NO_TIME", "Watermarks"]

#: A watermark before any event (far below every real time).
NO_TIME = -(2**62)


class Watermarks:
    """Largest event time per partition, their idleness, and the window's watermark."""

    def __init__(
        self,
        partitions: Iterable[int],
        grace_us: int,
        idle_timeout_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.grace_us = grace_us
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        now = clock()
        #: Largest event time seen per partition (NO_TIME before the first).
        self.max_time: dict[int, int] = {p: NO_TIME for p in partitions}
        #: Clock of each partition's last event (or of the start).
        self.last_seen: dict[int, float] = dict.fromkeys(self.max_time, now)
        #: The watermark windows have been closed up to (never goes back).
        self.closed = NO_TIME

    def partition_watermark(self, partition: int) -> int:
        """A partition's watermark: its largest event time minus grace."""
        top = self.max_time.get(partition, NO_TIME)
        return top - self.grace_us if top != NO_TIME else NO_TIME

    def observe(self, partition: int, max_time: int | None) -> None:
        """A batch of ``partition`` was read whose largest event time is ``max_time``."""
        self.last_seen[partition] = self.clock()
        if max_time is not None and max_time > self.max_time.get(partition, NO_TIME):
            self.max_time[partition] = max_time
        self.max_time.setdefault(partition, NO_TIME)

    def current(self) -> int:
        """The window's watermark now (never below what windows were closed at)."""
        if not self.max_time:
            return self.closed
        now = self.clock()
        timeout = self.idle_timeout_s
        active = [
            self.partition_watermark(p)
            for p in self.max_time
            if timeout <= 0 or now - self.last_seen[p] < timeout
        ]
        if active:
            mark = min(active)
        else:
            mark = max(self.partition_watermark(p) for p in self.max_time)
        return max(mark, self.closed)

    def snapshot(self) -> dict[str, object]:
        """What a restore needs (the clock is not kept: a restored partition is fresh)."""
        return {"max": {str(p): t for p, t in self.max_time.items()}, "closed": self.closed}

    def restore(self, data: Mapping[str, object]) -> None:
        """Back to a :meth:`snapshot`."""
        raw = data.get("max", {})
        assert isinstance(raw, dict)
        now = self.clock()
        for key, value in raw.items():
            partition = int(key)
            self.max_time[partition] = int(value)
            self.last_seen[partition] = now
        closed = data.get("closed", NO_TIME)
        self.closed = int(closed) if isinstance(closed, int) else NO_TIME

"""Idempotency window: a duplicate delivery of an event id within the window is routed once.

Producers retry (the Kinesis PutRecords contract invites it), so the same event can reach
the raw stream twice. The router remembers the ids it routed for ``window_s`` seconds and
skips repeats, like Lambda Powertools' idempotency utility. Ids are kept per source
partition: an event's key fixes its partition, so repeats of one event meet the same worker,
and a partition handed to another worker takes its ids along (:meth:`drop_partition` on
revoke; the new owner starts empty — the window is best effort across rebalances, while
exactly-once of routed output across crashes comes from Kafka transactions).

Memory is bounded by ``max_entries`` per partition: the oldest ids are forgotten first.
Pure: the clock is passed in.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["DedupWindow"]


class DedupWindow:
    """Event ids seen per partition in the last ``window_s`` seconds (0 disables)."""

    def __init__(
        self,
        window_s: float,
        max_entries: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {window_s}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.window_s = window_s
        self.max_entries = max_entries
        self.clock = clock
        self._seen: dict[tuple[str, int], OrderedDict[str, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    def _expire(self, ids: OrderedDict[str, float], now: float) -> None:
        horizon = now - self.window_s
        while ids:
            oldest, seen_at = next(iter(ids.items()))
            if seen_at > horizon and len(ids) <= self.max_entries:
                break
            del ids[oldest]

    def check(self, topic: str, partition: int, event_id: str) -> bool:
        """True when ``event_id`` is new (and remembers it); False for a duplicate."""
        if not self.enabled:
            return True
        ids = self._seen.setdefault((topic, partition), OrderedDict())
        now = self.clock()
        if event_id in ids:
            if now - ids[event_id] <= self.window_s:
                return False
            del ids[event_id]
        ids[event_id] = now
        self._expire(ids, now)
        return True

    def drop_partition(self, topic: str, partition: int) -> None:
        """Forget a partition this worker no longer owns."""
        self._seen.pop((topic, partition), None)

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._seen.values())

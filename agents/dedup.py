"""Idempotency window: a duplicate delivery of an event id within the window is routed once.

Producers retry (the Kinesis PutRecords contract invites it), so the same event can reach
the raw stream twice. The router remembers the ids it routed for ``window_s`` seconds and
skips repeats, like Lambda Powertools' idempotency utility. Ids are kept per source
partition: an event's key fixes its partition, so repeats of one event meet the same worker.

Durable across restarts and rebalances (transactional engine): the ids a batch routed are
:meth:`unsaved` until the router writes them to its dedup log topic *in the batch's own
transaction* (``agents.dedup_log``) and calls :meth:`saved`; the next owner of a
partition reads back (:meth:`remember`) the logged ids of the last ``window_s`` seconds
before it routes. So the window holds exactly the ids of committed output — an aborted
batch's ids are forgotten with it, and a repeat that arrives after a crash, a restart or a
failover is still dropped.

Memory is bounded by ``max_entries`` per partition: the oldest ids are forgotten first.
Times are wall-clock seconds (they are logged and read back by other processes). Pure: the
clock is passed in.
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {window_s}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.window_s = window_s
        self.max_entries = max_entries
        self.clock = clock
        self._seen: dict[tuple[str, int], OrderedDict[str, float]] = {}
        #: When True, new ids are also kept in :meth:`unsaved` until :meth:`saved`.
        self.track_unsaved = False
        self._unsaved: dict[tuple[str, int], list[str]] = {}
        #: When the oldest id of each partition was seen (no later than the truth).
        self._oldest: dict[tuple[str, int], float] = {}

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
        if not self.window_s > 0:
            return True
        # The router's per-event path: no new OrderedDict per call, and the oldest id is
        # looked at only when it can be due (the window passed, or the bound is reached).
        slot = (topic, partition)
        ids = self._seen.get(slot)
        if ids is None:
            ids = self._seen[slot] = OrderedDict()
        now = self.clock()
        seen_at = ids.get(event_id)
        if seen_at is not None:
            if now - seen_at <= self.window_s:
                return False
            del ids[event_id]
        ids[event_id] = now
        if len(ids) > self.max_entries or now - self._oldest.get(slot, now) > self.window_s:
            self._expire(ids, now)
            self._oldest[slot] = next(iter(ids.values()), now)
        elif slot not in self._oldest:
            self._oldest[slot] = now
        if self.track_unsaved:
            self._unsaved.setdefault((topic, partition), []).append(event_id)
        return True

    def remember(self, topic: str, partition: int, event_id: str, seen_at: float) -> None:
        """Take in an id routed earlier (at wall-clock ``seen_at``), e.g. read from the log."""
        if not self.enabled or self.clock() - seen_at > self.window_s:
            return
        slot = (topic, partition)
        ids = self._seen.setdefault(slot, OrderedDict())
        ids[event_id] = max(seen_at, ids.get(event_id, seen_at))
        ids.move_to_end(event_id)
        self._expire(ids, self.clock())
        # Read-back ids expire by time too: check() looks at them only once the oldest
        # is due, so the oldest must not be later than theirs.
        self._oldest[slot] = min(self._oldest.get(slot, seen_at), seen_at)

    def unsaved(self, topic: str, partition: int) -> list[str]:
        """Ids accepted since the last :meth:`saved`, oldest first (``track_unsaved``)."""
        return list(self._unsaved.get((topic, partition), ()))

    def saved(self, topic: str, partition: int, count: int) -> None:
        """The first ``count`` :meth:`unsaved` ids are durable now."""
        pending = self._unsaved.get((topic, partition))
        if pending:
            del pending[:count]

    def drop_partition(self, topic: str, partition: int) -> None:
        """Forget a partition this worker no longer owns (its ids, saved or not)."""
        self._seen.pop((topic, partition), None)
        self._oldest.pop((topic, partition), None)
        self._unsaved.pop((topic, partition), None)

    def clear(self) -> None:
        """Forget everything: after a lost connection, only the log is to be believed."""
        self._seen.clear()
        self._oldest.clear()
        self._unsaved.clear()

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._seen.values())

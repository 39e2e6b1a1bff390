"""Open windows and what is known of them: merged partial aggregates, closed at the watermark.

Three shapes, one interface (:class:`WindowState`):

- :class:`FixedState` (tumbling, hopping): one entry per (window start, key);
- :class:`SessionState`: per key, its open sessions ``[first, last]``; a group that comes
  within ``gap`` of one or more sessions merges with all of them (so a late-arriving event
  can join two sessions into one) — the result is the same in any merge order;
- :class:`SlidingState`: per key, the events of the last ``size`` (each as a one-event
  partial) and the results not yet final; a result at ``t`` aggregates the events in
  ``(t - size, t]``.

``close(watermark)`` returns the results of every window whose end is at or before the
watermark and **evicts** them, so state holds open windows only (plus, for sliding
windows, the events open results still need). Each entry has a changelog id; the processor
writes the entries a batch changed (or a tombstone for those it evicted).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.windows import codec
from agents.windows.aggregates import AggregateSpec, finalize, merge_partial
from agents.windows.assign import Geometry
from agents.windows.batch import Group

__all__ = [
    "FixedState",
    "Result",
    "SessionState",
    "SlidingState",
    "WindowState",
    "state_for",
]

EntryId = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Result:
    """A window's aggregate values now: ``values`` aligned with the aggregates."""

    key: tuple[Any, ...]
    start: int
    end: int
    count: int
    values: tuple[Any, ...]
    final: bool


def _merge_into(aggs: Sequence[AggregateSpec], entry: list[Any], count: int, partials: list[Any]):
    entry[0] += count
    for index, spec in enumerate(aggs):
        entry[index + 1] = merge_partial(spec, entry[index + 1], partials[index])


def _copy(value: Any) -> Any:
    if isinstance(value, set):
        return set(value)
    if isinstance(value, list):
        return list(value)
    return value


def _values(aggs: Sequence[AggregateSpec], entry: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(finalize(spec, entry[index + 1]) for index, spec in enumerate(aggs))


class WindowState:
    """The interface the processor uses (see the module docstring)."""

    def __init__(self, aggs: Sequence[AggregateSpec], geometry: Geometry) -> None:
        self.aggs = list(aggs)
        self.geometry = geometry
        # Partials that are plain values (no sets or [sum, count] pairs) need no copies.
        self._plain = all(a.kind not in ("avg", "count_distinct") for a in self.aggs)

    def add(self, groups: Iterable[Group]) -> set[EntryId]:
        raise NotImplementedError

    def current(self, ids: Iterable[EntryId]) -> list[Result]:
        raise NotImplementedError

    def close(self, watermark: int) -> tuple[list[Result], set[EntryId]]:
        raise NotImplementedError

    def open_results(self) -> list[Result]:
        """Every open window's current values (``windows show``)."""
        raise NotImplementedError

    def size(self) -> int:
        raise NotImplementedError

    def earliest_end(self) -> int | None:
        raise NotImplementedError

    def record(self, entry_id: EntryId) -> tuple[bytes, bytes | None]:
        raise NotImplementedError

    def load(self, key: list[Any], value: Any) -> None:
        raise NotImplementedError

    def _entry(self, count: int, partials: list[Any]) -> list[Any]:
        if self._plain:
            return [count, *partials]
        return [count, *(_copy(p) for p in partials)]


class FixedState(WindowState):
    """Tumbling and hopping windows: window start -> key -> [count, partials...]."""

    def __init__(self, aggs: Sequence[AggregateSpec], geometry: Geometry) -> None:
        super().__init__(aggs, geometry)
        self.windows: dict[int, dict[tuple[Any, ...], list[Any]]] = {}
        self.entries = 0

    def add(self, groups: Iterable[Group]) -> set[EntryId]:
        dirty: set[EntryId] = set()
        for group in groups:
            keys = self.windows.setdefault(group.start, {})
            entry = keys.get(group.key)
            if entry is None:
                keys[group.key] = self._entry(group.count, group.partials)
                self.entries += 1
            else:
                _merge_into(self.aggs, entry, group.count, group.partials)
            dirty.add((group.start, group.key))
        return dirty

    def current(self, ids: Iterable[EntryId]) -> list[Result]:
        out = []
        size = self.geometry.size
        for start, key in sorted(ids, key=repr):
            entry = self.windows.get(start, {}).get(key)
            if entry is not None:
                out.append(
                    Result(key, start, start + size, entry[0], _values(self.aggs, entry), False)
                )
        return out

    def close(self, watermark: int) -> tuple[list[Result], set[EntryId]]:
        size = self.geometry.size
        results: list[Result] = []
        closed: set[EntryId] = set()
        for start in sorted(s for s in self.windows if s + size <= watermark):
            keys = self.windows.pop(start)
            self.entries -= len(keys)
            for key, entry in sorted(keys.items(), key=lambda item: repr(item[0])):
                results.append(
                    Result(key, start, start + size, entry[0], _values(self.aggs, entry), True)
                )
                closed.add((start, key))
        return results, closed

    def size(self) -> int:
        return self.entries

    def earliest_end(self) -> int | None:
        return min(self.windows) + self.geometry.size if self.windows else None

    def open_results(self) -> list[Result]:
        return self.current((start, key) for start, keys in self.windows.items() for key in keys)

    def record(self, entry_id: EntryId) -> tuple[bytes, bytes | None]:
        start, key = entry_id
        name = codec.dumps(["w", start, *key])
        entry = self.windows.get(start, {}).get(key)
        return name, codec.dumps(entry) if entry is not None else None

    def load(self, key: list[Any], value: Any) -> None:
        start, parts = key[1], tuple(key[2:])
        keys = self.windows.setdefault(start, {})
        if parts not in keys:
            self.entries += 1
        keys[parts] = value


class SessionState(WindowState):
    """Sessions: key -> sorted [first, last, count, partials...] lists."""

    def __init__(self, aggs: Sequence[AggregateSpec], geometry: Geometry) -> None:
        super().__init__(aggs, geometry)
        self.sessions: dict[tuple[Any, ...], list[list[Any]]] = {}
        self.heap: list[tuple[int, Any]] = []  # (end, key), lazily checked
        self.entries = 0

    def add(self, groups: Iterable[Group]) -> set[EntryId]:
        gap = self.geometry.gap
        dirty: set[EntryId] = set()
        for group in groups:
            sessions = self.sessions.setdefault(group.key, [])
            merged = [group.start, group.end, *self._entry(group.count, group.partials)]
            keep = []
            for session in sessions:
                if session[0] < merged[1] + gap and merged[0] < session[1] + gap:
                    merged[0] = min(merged[0], session[0])
                    merged[1] = max(merged[1], session[1])
                    entry = merged[2:]
                    _merge_into(self.aggs, entry, session[2], session[3:])
                    merged[2:] = entry
                    self.entries -= 1
                else:
                    keep.append(session)
            keep.append(merged)
            keep.sort(key=lambda s: s[0])
            self.entries += 1
            self.sessions[group.key] = keep
            heapq.heappush(self.heap, (merged[1] + gap, _heap_key(group.key)))
            dirty.add(group.key)
        return dirty

    def current(self, ids: Iterable[EntryId]) -> list[Result]:
        gap = self.geometry.gap
        return [
            Result(key, s[0], s[1] + gap, s[2], _values(self.aggs, s[2:]), False)
            for key in sorted(ids, key=repr)
            for s in self.sessions.get(key, ())
        ]

    def close(self, watermark: int) -> tuple[list[Result], set[EntryId]]:
        gap = self.geometry.gap
        results: list[Result] = []
        closed: set[EntryId] = set()
        while self.heap and self.heap[0][0] <= watermark:
            _, heap_key = heapq.heappop(self.heap)
            key = heap_key[1]
            sessions = self.sessions.get(key)
            if not sessions:
                continue
            keep = []
            for s in sessions:
                if s[1] + gap <= watermark:
                    values = _values(self.aggs, s[2:])
                    results.append(Result(key, s[0], s[1] + gap, s[2], values, True))
                    self.entries -= 1
                else:
                    keep.append(s)
            if keep:
                self.sessions[key] = keep
            else:
                del self.sessions[key]
            closed.add(key)
        results.sort(key=lambda r: (r.end, repr(r.key)))
        return results, closed

    def size(self) -> int:
        return self.entries

    def earliest_end(self) -> int | None:
        ends = [s[1] + self.geometry.gap for ss in self.sessions.values() for s in ss]
        return min(ends) if ends else None

    def open_results(self) -> list[Result]:
        return self.current(self.sessions)

    def record(self, entry_id: EntryId) -> tuple[bytes, bytes | None]:
        sessions = self.sessions.get(entry_id)
        return codec.dumps(["s", *entry_id]), codec.dumps(sessions) if sessions else None

    def load(self, key: list[Any], value: Any) -> None:
        parts = tuple(key[1:])
        old = self.sessions.get(parts, [])
        self.entries += len(value) - len(old)
        self.sessions[parts] = value
        for s in value:
            heapq.heappush(self.heap, (s[1] + self.geometry.gap, _heap_key(parts)))


def _heap_key(key: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    # Keys may mix types (None, numbers, strings): the heap orders by their repr first.
    return (repr(key), key)


class SlidingState(WindowState):
    """Sliding results: key -> events [(t, seq, count, partials...)] and open results."""

    def __init__(self, aggs: Sequence[AggregateSpec], geometry: Geometry) -> None:
        super().__init__(aggs, geometry)
        self.events: dict[tuple[Any, ...], list[list[Any]]] = {}
        #: key -> {(t, seq): values last emitted (update mode) or None}
        self.open: dict[tuple[Any, ...], dict[tuple[int, tuple[int, ...]], Any]] = {}
        self.entries = 0

    def add(self, groups: Iterable[Group]) -> set[EntryId]:
        dirty: set[EntryId] = set()
        for group in groups:
            rows = self.events.setdefault(group.key, [])
            row = [group.start, list(group.seq), *self._entry(group.count, group.partials)]
            bisect.insort(rows, row, key=lambda r: (r[0], r[1]))
            self.open.setdefault(group.key, {})[(group.start, tuple(group.seq))] = None
            self.entries += 1
            dirty.add(group.key)
        return dirty

    def _result(self, key: tuple[Any, ...], t: int, final: bool) -> Result:
        size = self.geometry.size
        rows = self.events.get(key, [])
        low = bisect.bisect_right(rows, t - size, key=lambda r: r[0])
        high = bisect.bisect_right(rows, t, key=lambda r: r[0])
        entry = [0, *(_copy(p) for p in _empties(self.aggs))]
        for row in rows[low:high]:
            _merge_into(self.aggs, entry, row[2], row[3:])
        return Result(key, t - size, t, entry[0], _values(self.aggs, entry), final)

    def current(self, ids: Iterable[EntryId]) -> list[Result]:
        """Open results whose values changed since they were last emitted."""
        out = []
        for key in sorted(ids, key=repr):
            pending = self.open.get(key, {})
            for (t, seq), last in sorted(pending.items()):
                result = self._result(key, t, False)
                shown = (result.count, result.values)
                if shown != last:
                    pending[(t, seq)] = shown
                    out.append(result)
        return out

    def close(self, watermark: int) -> tuple[list[Result], set[EntryId]]:
        size = self.geometry.size
        results: list[Result] = []
        closed: set[EntryId] = set()
        for key in list(self.open):
            pending = self.open[key]
            done = sorted(k for k in pending if k[0] + 1 <= watermark)
            if not done:
                continue
            for t, seq in done:
                results.append(self._result(key, t, True))
                del pending[(t, seq)]
            closed.add(key)
            if not pending:
                del self.open[key]
        for key in list(self.events):
            rows = self.events[key]
            first_open = min((t for t, _ in self.open.get(key, {})), default=None)
            horizon = watermark - size if first_open is None else min(watermark, first_open) - size
            cut = bisect.bisect_right(rows, horizon, key=lambda r: r[0])
            if cut:
                self.entries -= cut
                del rows[:cut]
                closed.add(key)
            if not rows:
                del self.events[key]
        results.sort(key=lambda r: (r.end, repr(r.key)))
        return results, closed

    def size(self) -> int:
        return self.entries

    def earliest_end(self) -> int | None:
        ends = [t + 1 for pending in self.open.values() for t, _ in pending]
        return min(ends) if ends else None

    def open_results(self) -> list[Result]:
        return [
            self._result(key, t, False)
            for key in sorted(self.open, key=repr)
            for t, _ in sorted(self.open[key])
        ]

    def record(self, entry_id: EntryId) -> tuple[bytes, bytes | None]:
        rows = self.events.get(entry_id)
        pending = self.open.get(entry_id, {})
        value = None
        if rows or pending:
            value = codec.dumps(
                {"rows": rows or [], "open": [[t, list(seq), v] for (t, seq), v in pending.items()]}
            )
        return codec.dumps(["r", *entry_id]), value

    def load(self, key: list[Any], value: Any) -> None:
        parts = tuple(key[1:])
        self.entries += len(value["rows"]) - len(self.events.get(parts, []))
        self.events[parts] = value["rows"]
        self.open[parts] = {
            (t, tuple(seq)): (tuple([v[0], tuple(v[1])]) if v is not None else None)
            for t, seq, v in value["open"]
        }


def _empties(aggs: Sequence[AggregateSpec]) -> list[Any]:
    from agents.windows.aggregates import empty_partial

    return [empty_partial(spec) for spec in aggs]


def state_for(aggs: Sequence[AggregateSpec], geometry: Geometry) -> WindowState:
    """The state shape of a window type."""
    if geometry.type == "session":
        return SessionState(aggs, geometry)
    if geometry.type == "sliding":
        return SlidingState(aggs, geometry)
    return FixedState(aggs, geometry)

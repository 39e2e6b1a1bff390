"""Open windows and what is known of them: merged partial aggregates, closed at the watermark.

Three shapes, one interface (:class:`WindowState`):

- :class:`FixedState` (tumbling, hopping): a DuckDB table, one row per (window start, key),
  merged with a batch's partials by one group-by (no Python per group); its changelog holds
  one record per (window, key bucket) — at most 64 per window — not one per key;
- :class:`SessionState`: per key, its open sessions ``[first, last]``; a group that comes
  within ``gap`` of one or more sessions merges with all of them (so a late-arriving event
  can join two sessions into one) — the result is the same in any merge order;
- :class:`SlidingState`: per key, the events of the last ``size`` (each as a one-event
  partial) and the results not yet final; a result at ``t`` aggregates the events in
  ``(t - size, t]``.

``close(watermark)`` returns the results of every window whose end is at or before the
watermark and **evicts** them, so state holds open windows only (plus, for sliding
windows, the events open results still need). Each entry (a bucket of keys, for fixed
windows) has a changelog id; the processor writes the entries a batch changed (or a
tombstone for those it evicted).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

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

    def add_table(self, table: str) -> set[EntryId]:
        """Merge a batch's partials left in a DuckDB table (fixed windows only)."""
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

    def records(self, ids: Iterable[EntryId]) -> list[tuple[bytes, bytes | None]]:
        """The changelog records of ``ids`` (changed or evicted entries)."""
        return [self.record(i) for i in ids]

    def load(self, key: list[Any], value: Any) -> None:
        raise NotImplementedError

    def _entry(self, count: int, partials: list[Any]) -> list[Any]:
        if self._plain:
            return [count, *partials]
        return [count, *(_copy(p) for p in partials)]


class FixedState(WindowState):
    """Tumbling and hopping windows, columnar: one DuckDB table holds every open window's
    rows, one per (window start, key) — ``__s`` (start), ``__k0…`` (key columns), ``__b``
    (changelog bucket), ``__c`` (events) and ``__a0…`` (the partial columns, avg as two).
    A batch's partials (a table the :class:`~agents.windows.batch.BatchReader` leaves on
    the same connection) merge into the windows they touch with one group-by, whatever the
    number of windows and keys, so no (window, key) pair costs Python work; the changelog
    holds one record per (window, bucket) the batch changed.

    Merges are exact: counts and sums add (two values per group: the same sum as Python's),
    min and max compare, avg keeps sum and count, count(DISTINCT) keeps the values' list.
    """

    def __init__(
        self,
        aggs: Sequence[AggregateSpec],
        geometry: Geometry,
        con: duckdb.DuckDBPyConnection | None = None,
        keys: int = 0,
    ) -> None:
        super().__init__(aggs, geometry)
        self.con = con if con is not None else duckdb.connect(config={"threads": "1"})
        self.nk = keys
        self.table = "__fixed_state"
        #: Rows per open window start.
        self.counts: dict[int, int] = {}
        #: Restored bucket records not yet in the table: start -> bucket -> columns.
        self._restored: dict[int, dict[int, list[list[Any]]]] = {}
        #: Per-(window, key) changelog keys of an older version, tombstoned at close.
        self._legacy: dict[int, list[bytes]] = {}
        self._key_columns = [f"__k{j}" for j in range(keys)]
        self._merge = self._merge_columns()
        self._columns = ", ".join([*self._key_columns, "__c", *self._partial_names()])
        #: Restored windows, written whole (every bucket) at their next change.
        self._rewrite: set[int] = set()
        #: The partials table of the last merged batch (update mode reads its keys).
        self._last_batch = ""

    def _merge_columns(self) -> str:
        columns = ["CAST(sum(__c) AS BIGINT) AS __c"]
        position = 0
        for spec in self.aggs:
            name = f"__a{position}"
            if spec.kind in ("count_star", "count"):
                columns.append(f"CAST(sum({name}) AS BIGINT) AS {name}")
            elif spec.kind == "sum":
                columns.append(f"sum({name}) AS {name}")
            elif spec.kind in ("min", "max"):
                columns.append(f"{spec.kind}({name}) AS {name}")
            elif spec.kind == "avg":
                second = f"__a{position + 1}"
                columns.append(f"sum({name}) AS {name}")
                columns.append(f"CAST(sum({second}) AS BIGINT) AS {second}")
                position += 1
            else:  # count_distinct: the union of the value lists
                columns.append(f"list_distinct(flatten(list({name}))) AS {name}")
            position += 1
        self._width = position
        return ", ".join(columns)

    def _partial_names(self) -> list[str]:
        return [f"__a{i}" for i in range(self._width)]

    # ------------------------------------------------------------------ merging

    def add(self, groups: Iterable[Group]) -> set[EntryId]:
        raise TypeError("fixed windows merge a batch's partials table (add_table)")

    def add_table(self, table: str) -> set[EntryId]:
        """Merge the partials in DuckDB table ``table``; the (window, bucket) ids changed."""
        self._load_restored()
        con, state = self.con, self.table
        keys = ", ".join(self._key_columns)
        touched = f"SELECT DISTINCT __s FROM {table}"
        rows = f"SELECT __s, {self._columns}, 1 AS __d FROM {table}"
        if self.counts:
            rows = (
                f"SELECT __s, {self._columns}, 0 AS __d FROM {state} WHERE __s IN ({touched}) "
                f"UNION ALL BY NAME {rows}"
            )
        # __d marks the rows this batch changed; the bucket is computed on the merged
        # (type-unified) key, so a key's bucket and its record always agree.
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __merged AS SELECT __s, {keys + ', ' if keys else ''}"
            f"{bucket_sql(self.nk)} AS __b, max(__d) AS __d, {self._merge} "
            f"FROM ({rows}) GROUP BY __s{', ' + keys if keys else ''}"
        )
        if self.counts:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {state} AS SELECT * FROM {state} "
                f"WHERE __s NOT IN ({touched}) "
                "UNION ALL BY NAME SELECT * EXCLUDE (__d) FROM __merged"
            )
        else:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {state} AS SELECT * EXCLUDE (__d) FROM __merged"
            )
        dirty: set[EntryId] = set()
        for start, count, changed in con.execute(
            "SELECT __s, count(*), list(DISTINCT __b) FILTER (WHERE __d = 1) "
            "FROM __merged GROUP BY __s"
        ).fetchall():
            self.counts[start] = count
            if start in self._rewrite:
                self._rewrite.discard(start)
                changed = range(BUCKETS)
            dirty.update((start, bucket) for bucket in changed or ())
        self._last_batch = table
        return dirty

    def _select(self, where: str) -> list[tuple[Any, ...]]:
        """``(start, keys..., count, partials...)`` rows of the state matching ``where``."""
        if not self.counts:
            return []
        return self.con.execute(
            f"SELECT __s, {self._columns} FROM {self.table} WHERE {where}"
        ).fetchall()

    def _result(self, row: tuple[Any, ...], final: bool) -> Result:
        nk = self.nk
        start = row[0]
        entry = [row[nk + 1], *self._partials(row[nk + 2 :])]
        return Result(
            tuple(row[1 : nk + 1]),
            start,
            start + self.geometry.size,
            entry[0],
            _values(self.aggs, entry),
            final,
        )

    def _partials(self, values: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        position = 0
        for spec in self.aggs:
            if spec.kind == "avg":
                out.append([values[position], values[position + 1] or 0])
                position += 2
                continue
            value = values[position]
            if spec.kind == "count_distinct":
                value = set(value or ())
            elif spec.kind in ("count_star", "count"):
                value = value or 0
            out.append(value)
            position += 1
        return out

    @staticmethod
    def _ordered(results: Iterable[Result]) -> list[Result]:
        return sorted(results, key=lambda r: repr((r.start, r.key)))

    def current(self, ids: Iterable[EntryId]) -> list[Result]:
        """The windows and keys of the last merged batch (update mode); ``ids`` name the
        (window, bucket) pairs it changed."""
        self._load_restored()
        starts = sorted({start for start, _ in ids if start in self.counts})
        if not starts or not self._last_batch:
            return []
        on = " AND ".join(f"w.{k} IS NOT DISTINCT FROM p.{k}" for k in ["__s", *self._key_columns])
        columns = ", ".join(f"w.{c}" for c in ["__s", *self._columns.split(", ")])
        listed = ", ".join(str(s) for s in starts)
        rows = self.con.execute(
            f"SELECT {columns} FROM {self.table} w SEMI JOIN {self._last_batch} p ON {on} "
            f"WHERE w.__s IN ({listed})"
        ).fetchall()
        return self._ordered(self._result(row, False) for row in rows)

    def close(self, watermark: int) -> tuple[list[Result], set[EntryId]]:
        self._load_restored()
        size = self.geometry.size
        done = sorted(s for s in self.counts if s + size <= watermark)
        if not done:
            return [], set()
        last = done[-1]
        results = self._ordered(self._result(row, True) for row in self._select(f"__s <= {last}"))
        self.con.execute(f"DELETE FROM {self.table} WHERE __s <= {last}")
        closed: set[EntryId] = set()
        for start in done:
            del self.counts[start]
            closed.update((start, bucket) for bucket in range(BUCKETS))
            closed.update(("legacy", key) for key in self._legacy.pop(start, ()))
        return results, closed

    def size(self) -> int:
        self._load_restored()
        return sum(self.counts.values())

    def earliest_end(self) -> int | None:
        self._load_restored()
        return min(self.counts) + self.geometry.size if self.counts else None

    def open_results(self) -> list[Result]:
        self._load_restored()
        return self._ordered(self._result(row, False) for row in self._select("TRUE"))

    def open_table(self, keys: Sequence[str], columns: Sequence[str], limit: int) -> pa.Table:
        """Every open window's current values as an Arrow table, computed by DuckDB (the
        open-windows snapshot): ``window_start``/``window_end`` (µs), the key columns named
        ``keys``, the aggregates named ``columns``, ``event_count``; the ``limit`` windows
        that end last."""
        self._load_restored()
        if not self.counts:
            return pa.table({})
        size = self.geometry.size
        values = ["__s AS window_start", f"__s + {size} AS window_end"]
        values += [f"__k{j} AS {_quote(k)}" for j, k in enumerate(keys)]
        position = 0
        for spec, column in zip(self.aggs, columns, strict=True):
            a = f"__a{position}"
            if spec.kind == "avg":
                b = f"__a{position + 1}"
                value = f"CASE WHEN {b} > 0 THEN CAST({a} AS DOUBLE) / {b} END"
                position += 1
            elif spec.kind == "count_distinct":
                value = f"CAST(coalesce(len({a}), 0) AS BIGINT)"
            elif spec.kind in ("count_star", "count"):
                value = f"CAST(coalesce({a}, 0) AS BIGINT)"
            else:
                value = a
            values.append(f"{value} AS {_quote(column)}")
            position += 1
        values.append("__c AS event_count")
        query = f"SELECT {', '.join(values)} FROM {self.table} ORDER BY __s DESC LIMIT {int(limit)}"
        return self.con.sql(query).to_arrow_table()

    # ------------------------------------------------------------------ changelog

    def record(self, entry_id: EntryId) -> tuple[bytes, bytes | None]:
        return self.records([entry_id])[0]

    def records(self, ids: Iterable[EntryId]) -> list[tuple[bytes, bytes | None]]:
        """One record per (window, bucket): the bucket's rows as columns, or a tombstone."""
        self._load_restored()
        wanted: set[tuple[int, int]] = set()
        out: list[tuple[bytes, bytes | None]] = []
        for start, bucket in ids:
            if start == "legacy":
                out.append((bucket, None))
            else:
                wanted.add((start, bucket))
        starts = sorted({start for start, _ in wanted if start in self.counts})
        found: dict[tuple[int, int], bytes] = {}
        if starts:
            lists = ", ".join(f"list({c})" for c in self._columns.split(", "))
            listed = ", ".join(str(s) for s in starts)
            query = (
                f"SELECT __s, __b, {lists} FROM {self.table} WHERE __s IN ({listed}) "
                "GROUP BY __s, __b"
            )
            for start, bucket, *values in self.con.execute(query).fetchall():
                if (start, bucket) in wanted:
                    found[(start, bucket)] = codec.dumps(values)
        for start, bucket in sorted(wanted):
            out.append((codec.dumps(["b", start, bucket]), found.get((start, bucket))))
        return out

    def load(self, key: list[Any], value: Any) -> None:
        if key[0] == "b":
            start, bucket = key[1], key[2]
            self._restored.setdefault(start, {})[bucket] = value
            return
        # An older version's record: one (window, key) entry [count, partials...].
        start, parts = key[1], list(key[2:])
        row = [[p] for p in parts] + [[value[0]]]
        row += [[_flat(v)] for v in _widened(self.aggs, value[1:])]
        legacy = self._legacy.setdefault(start, [])
        self._restored.setdefault(start, {})[-1 - len(legacy)] = row
        legacy.append(codec.dumps(key))

    def _load_restored(self) -> None:
        """Turn restored bucket records into the state table (once, before first use)."""
        if not self._restored:
            return
        restored, self._restored = self._restored, {}
        names = ["__s", *self._columns.split(", ")]
        columns: list[list[Any]] = [[] for _ in names]
        for start, buckets in restored.items():
            rows = 0
            for values in buckets.values():
                for column, part in zip(columns[1:], values, strict=True):
                    column.extend(part)
                rows += len(values[0]) if values else 0
            columns[0].extend([start] * rows)
            self.counts[start] = self.counts.get(start, 0) + rows
            self._rewrite.add(start)
        table = pa.table([pa.array(c) for c in columns], names=names)
        keys = "".join(f"{k}, " for k in self._key_columns)
        self.con.register("__restored", table)
        try:
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {self.table} AS SELECT __s, {keys}"
                f"{bucket_sql(self.nk)} AS __b, {', '.join(names[self.nk + 1 :])} "
                "FROM __restored"
            )
        finally:
            self.con.unregister("__restored")


#: Changelog buckets per fixed window: a window's state is written as this many records
#: at most (by key), so the changelog costs per bucket, not per (window, key).
BUCKETS = 64


def bucket_sql(keys: int) -> str:
    """The changelog bucket of a row's key columns ``__k0…`` (DuckDB's hash). A window's
    records are always written under one hash function: a window restored from records
    another version may have bucketed differently is rewritten whole at its next change."""
    if not keys:
        return "0"
    columns = ", ".join(f"__k{j}" for j in range(keys))
    return f"CAST(hash({columns}) % {BUCKETS} AS INTEGER)"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _widened(aggs: Sequence[AggregateSpec], partials: Sequence[Any]) -> list[Any]:
    """Partials as table columns: avg's [sum, count] as two."""
    out: list[Any] = []
    for spec, partial in zip(aggs, partials, strict=True):
        if spec.kind == "avg":
            out.extend(partial)
        else:
            out.append(partial)
    return out


def _flat(value: Any) -> Any:
    return sorted(value, key=repr) if isinstance(value, set) else value


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


def state_for(
    aggs: Sequence[AggregateSpec],
    geometry: Geometry,
    con: duckdb.DuckDBPyConnection | None = None,
    keys: int = 0,
) -> WindowState:
    """The state shape of a window type (fixed windows merge on ``con``, the batch
    reader's connection, with ``keys`` key columns)."""
    if geometry.type == "session":
        return SessionState(aggs, geometry)
    if geometry.type == "sliding":
        return SlidingState(aggs, geometry)
    return FixedState(aggs, geometry, con, keys)

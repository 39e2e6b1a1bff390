"""A window definition at work, batch by batch: what to send, what to remember.

:class:`WindowProcessor` is the whole window agent without Kafka: :meth:`~WindowProcessor.process`
takes a batch of source messages and returns an :class:`Emission` — result and late-event
envelopes for the output and late streams, and the changelog records that make the new state
durable. The engine sends all three and the batch's source offsets in one transaction;
:meth:`~WindowProcessor.restore` rebuilds the state from the changelog after a crash or a
rebalance, and the same input then gives the same output.

Per batch: the batch's partials (:mod:`agents.windows.batch`) merge into the state; the
watermark advances (:mod:`agents.windows.watermarks`); every window whose end it reached is
emitted ``is_final = true`` and evicted. With ``emit = "update"`` every window the batch
changed is also emitted with its current values (``is_final = false``) — no retractions: the
latest row of a (window, key) is its current value, and the final row, when it comes, is the
last. :meth:`~WindowProcessor.tick` advances by the clock alone (idle partitions).

``max_open_windows`` bounds the state: beyond it the windows that end first are closed early
(emitted as final), and the watermark windows are closed at moves to their end, so events
for them later go to the late stream rather than reopening them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from agents.packing import MAX_ENVELOPE_BYTES, MAX_ENVELOPE_EVENTS, EnvelopePacker, Outgoing
from agents.validation import format_timestamp
from agents.windows import codec
from agents.windows.aggregates import parse_aggregate
from agents.windows.assign import US, geometry_of
from agents.windows.batch import BatchPartials, BatchReader, SourceMessage
from agents.windows.state import EntryId, Result, state_for
from agents.windows.watermarks import NO_TIME, Watermarks
from firelake.config import FirelakeConfig, WindowConfig
from streams.partitioning import cached_partition_for_key

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MAX_ENVELOPE_EVENTS",
    "META_KEY",
    "Emission",
    "WindowProcessor",
    "WindowStats",
    "format_us",
    "json_value",
]

#: The changelog key of the watermarks.
META_KEY = codec.dumps(["m"])

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=8192)
def format_us(us: int) -> str:
    """Canonical UTC text of epoch microseconds (the router's timestamp form)."""
    return format_timestamp(_EPOCH + timedelta(microseconds=us))


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return format_us((moment - _EPOCH) // timedelta(microseconds=1))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


@dataclass
class Emission:
    """What a batch (or a tick) produced: messages to send, changelog records to write."""

    messages: list[Outgoing] = field(default_factory=list)
    changelog: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    late: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class WindowStats:
    """Counters since the processor was built."""

    batches: int = 0
    events: int = 0
    late: int = 0
    unreadable: int = 0
    results: int = 0
    finals: int = 0


class WindowProcessor:
    """One window definition's state and logic (see the module docstring)."""

    def __init__(
        self,
        config: FirelakeConfig,
        name: str,
        partitions: Iterable[int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        spec = config.windows.get(name)
        if spec is None:
            known = ", ".join(sorted(config.windows)) or "none"
            raise ValueError(f"{config.source}: no window named {name!r} (declared: {known})")
        self.spec: WindowConfig = spec
        self.name = name
        self.clock = clock
        self.columns = list(spec.aggregates)
        self.aggregates = [parse_aggregate(text) for text in spec.aggregates.values()]
        self.geometry = geometry_of(spec)
        self.reader = BatchReader(
            spec, config.schema_of(spec.source), self.aggregates, self.geometry
        )
        self.state = state_for(self.aggregates, self.geometry, self.reader.con, len(spec.key))
        self.watermarks = Watermarks(
            partitions, round(spec.grace_seconds * US), spec.idle_timeout_seconds, clock
        )
        self.output_partitions = config.streams[spec.output].partitions
        self._single = {
            name: config.streams[name].envelope == "single" for name in (spec.output, spec.late)
        }
        self.late_partitions = config.streams[spec.late].partitions
        self.stats = WindowStats()

    def close(self) -> None:
        self.reader.close()

    # ------------------------------------------------------------------ batches

    def process(self, messages: Sequence[SourceMessage]) -> Emission:
        """Merge a batch into the state; the results, late events and changelog it makes."""
        marks = self.watermarks
        prior = {p: t for p, t in marks.max_time.items() if t != NO_TIME}
        partials = self.reader.read(messages, prior, marks.closed)
        for partition in {m.partition for m in messages}:
            marks.observe(partition, partials.max_time.get(partition))
        self.stats.batches += 1
        self.stats.events += partials.events
        if partials.partials_table is not None:
            dirty = self.state.add_table(partials.partials_table)
        else:
            dirty = self.state.add(partials.groups)
        emission = Emission()
        self._late(partials, emission)
        self._advance(dirty, emission)
        return emission

    def tick(self) -> Emission:
        """Close what the watermark allows now (idle partitions age by the clock)."""
        emission = Emission()
        self._advance(set(), emission)
        if not emission.results:
            emission.changelog.clear()
        return emission

    def messages_for(self, rows: list[dict[str, Any]]) -> list[Outgoing]:
        """Result rows as envelopes for the output stream (backfill)."""
        emission = Emission()
        self._pack(self.spec.output, rows, emission)
        return emission.messages

    def open_rows(self) -> list[dict[str, Any]]:
        """Every open window's current values as result rows (``is_final`` false)."""
        now = format_us(round(self.clock() * US))
        return [self._row(r, now) for r in self.state.open_results()]

    def watermark(self) -> int:
        """The window's watermark now (µs)."""
        return self.watermarks.current()

    def _advance(self, dirty: set[EntryId], emission: Emission) -> None:
        marks = self.watermarks
        mark = marks.current()
        finals, closed = self.state.close(mark)
        while self.state.size() > self.spec.max_open_windows:
            end = self.state.earliest_end()
            if end is None:
                break
            mark = max(mark, end)
            more, gone = self.state.close(mark)
            finals.extend(more)
            closed |= gone
        marks.closed = max(marks.closed, mark)
        updates = self.state.current(dirty) if self.spec.emit == "update" else []
        now = format_us(round(self.clock() * US))
        rows = [self._row(r, now) for r in (*updates, *finals)]
        self.stats.results += len(rows)
        self.stats.finals += len(finals)
        emission.results.extend(rows)
        self._pack(self.spec.output, rows, emission)
        emission.changelog.extend(self.state.records(dirty | closed))
        emission.changelog.append((META_KEY, codec.dumps(marks.snapshot())))

    # ------------------------------------------------------------------ records

    def _row(self, result: Result, now: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "window_start": format_us(result.start),
            "window_end": format_us(result.end),
        }
        for name, value in zip(self.spec.key, result.key, strict=True):
            row[name] = json_value(value)
        for name, value in zip(self.columns, result.values, strict=True):
            row[name] = json_value(value)
        row["event_count"] = result.count
        row["emit_time"] = now
        row["is_final"] = result.final
        return row

    def _key_text(self, row: dict[str, Any]) -> str:
        return "|".join(str(row.get(k)) for k in self.spec.key)

    def _late(self, partials: BatchPartials, emission: Emission) -> None:
        records: list[tuple[int, dict[str, Any]]] = []
        parsed: dict[int, dict[str, Any]] = {}

        def event_of(row: int) -> dict[str, Any]:
            if row not in parsed:
                line = partials.rows[row][3]
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    event = None
                if not isinstance(event, dict):
                    event = {"late_raw": line.decode("utf-8", "replace")}
                parsed[row] = event
            return dict(parsed[row])

        def source_of(row: int, event: dict[str, Any]) -> None:
            partition, offset, index, _ = partials.rows[row]
            event["late_window"] = self.name
            event["source_partition"] = partition
            event["source_offset"] = offset
            event["source_index"] = index

        for pair in partials.late:
            event = event_of(pair.row)
            event["late_reason"] = "window_closed"
            event["late_window_start"] = format_us(pair.start)
            event["late_window_end"] = format_us(pair.end)
            event["late_watermark"] = format_us(pair.watermark)
            source_of(pair.row, event)
            records.append((partials.rows[pair.row][0], event))
        for bad in partials.unreadable:
            event = event_of(bad.row)
            event["late_reason"] = bad.reason
            source_of(bad.row, event)
            records.append((partials.rows[bad.row][0], event))
        self.stats.late += len(partials.late)
        self.stats.unreadable += len(partials.unreadable)
        emission.late.extend(e for _, e in records)
        packer = EnvelopePacker(MAX_ENVELOPE_EVENTS, MAX_ENVELOPE_BYTES, keyed=False)
        late = self.spec.late
        for partition, event in records:
            data = orjson.dumps(event)
            target = partition % self.late_partitions
            if self._single[late]:
                packer.single(late, target, data, None, ())
            else:
                packer.add(late, target, data, None, None)
        emission.messages.extend(packer.finish())

    def _pack(self, stream: str, rows: list[dict[str, Any]], emission: Emission) -> None:
        packer = EnvelopePacker(MAX_ENVELOPE_EVENTS, MAX_ENVELOPE_BYTES, keyed=True)
        single = self._single[stream]
        for row in rows:
            key = self._key_text(row)
            partition = cached_partition_for_key(key, self.output_partitions)
            if single:
                packer.single(stream, partition, orjson.dumps(row), key, ())
            else:
                packer.add(stream, partition, orjson.dumps(row), key, None, row["window_end"])
        emission.messages.extend(packer.finish())

    # ------------------------------------------------------------------ restore

    def restore(self, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Rebuild the state from changelog records in log order (last one per key wins);
        returns the number of open entries restored (``state.size()``: (window, key) pairs
        for fixed windows, whose records hold a bucket of keys each)."""
        latest: dict[bytes, bytes | None] = {}
        for key, value in records:
            latest[key] = value
        loaded = 0
        for key, value in latest.items():
            if value is None:
                continue
            if key == META_KEY:
                self.watermarks.restore(codec.loads(value))
                continue
            self.state.load(codec.loads(key), codec.loads(value))
            loaded += 1
        return self.state.size() if loaded else 0

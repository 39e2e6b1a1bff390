"""Per-partition buffers of envelope values: Firehose's buffering hints.

A sink keeps one :class:`PartitionBuffer` per source partition it owns. Each holds whole
Kafka message values (envelopes of NDJSON events, never single events) with their offsets,
and knows how many events and bytes it holds and when its first message arrived. It asks to
be flushed when ``max_events``, ``max_bytes`` or ``max_seconds`` (since its first message)
is reached, whichever comes first; the sink checks the time bound even when no messages
arrive, so an idle buffer still flushes on time.

Besides the raw counts that drive the hints, a buffer holds what the sink converted from
its messages (``add_rows``): Arrow tables, each with its rows' output folders (cut into
files only at flush time: thousands of tiny slices per poll would cost more memory in
metadata than the rows themselves), the lines that failed, and their exact memory size,
which ``sinks.memory`` bounds across all buffers. It keeps the raw message values only
when asked (the raw archive needs them), and then each one's key, headers and Kafka
timestamp too (an archive entry keeps where and when its event was).

Time comes from an injectable clock (``time.monotonic`` by default); tests pass a
:class:`FixedClock` and move it by hand, so the time bound is tested without sleeping.
Nothing here parses events: counts come from the envelope's ``fl-count`` header.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from streams.envelope import HEADER_COUNT, HEADER_FORMAT

__all__ = [
    "Batch",
    "BufferLimits",
    "Clock",
    "FixedClock",
    "MessageMeta",
    "PartitionBuffer",
    "PartitionBuffers",
    "message_event_count",
]

#: A source of monotonic time in seconds.
Clock = Callable[[], float]


class FixedClock:
    """A clock that only moves when told to, for deterministic tests of time bounds."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self.now += seconds


@dataclass(frozen=True, slots=True)
class BufferLimits:
    """When a partition buffer must be flushed: the first bound reached wins."""

    max_events: int
    max_bytes: int
    max_seconds: float

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_bytes < 1 or self.max_seconds < 0:
            raise ValueError(
                f"buffer limits must be positive: max_events={self.max_events}, "
                f"max_bytes={self.max_bytes}, max_seconds={self.max_seconds}"
            )


def message_event_count(value: bytes | None, headers: Iterable[tuple[str, bytes]] | None) -> int:
    """How many events a Kafka message carries, without parsing them.

    An envelope says so in ``fl-count``; a message without ``fl-format`` is one event; an
    empty value (a tombstone) is none. A malformed count falls back to counting lines,
    which is a C-level scan of the value, not a parse.
    """
    if not value:
        return 0
    fmt = count = None
    for key, raw in headers or ():
        if key == HEADER_FORMAT:
            fmt = raw
        elif key == HEADER_COUNT:
            count = raw
    if fmt is None:
        return 1
    if count is not None:
        try:
            parsed = int(count)
        except ValueError:
            parsed = -1
        if parsed >= 0:
            return parsed
    return value.count(b"\n") + 1


#: A kept message's Kafka timestamp, key and headers.
MessageMeta = tuple[int, bytes | None, tuple[tuple[str, bytes], ...]]


@dataclass(frozen=True, slots=True)
class Batch:
    """The contents of one partition buffer handed to a flush.

    ``values``, ``offsets`` and ``meta`` (each message's timestamp, key and headers, for
    the raw archive) are parallel (messages with an empty value are not in them);
    ``first_offset``..``last_offset`` covers every message consumed, empty or not, and is
    the range the flush commits. ``max_timestamp_ms`` is the latest Kafka timestamp
    seen, used to place events that carry no event time. ``chunks`` are the converted rows
    as (table, folders) pairs — folders one string or one per row — ``bad`` the lines that
    failed, ``memory`` their size in bytes.
    """

    topic: str
    partition: int
    values: tuple[bytes, ...]
    offsets: tuple[int, ...]
    first_offset: int
    last_offset: int
    events: int
    nbytes: int
    max_timestamp_ms: int
    chunks: tuple[tuple[Any, Any], ...] = ()
    meta: tuple[MessageMeta, ...] = ()
    bad: tuple[Any, ...] = ()
    memory: int = 0


class PartitionBuffer:
    """The buffered messages of one source partition, with its flush bounds."""

    __slots__ = (
        "_bad",
        "_chunks",
        "_clock",
        "_folders",
        "_meta",
        "_offsets",
        "_values",
        "events",
        "first_offset",
        "last_offset",
        "limits",
        "max_timestamp_ms",
        "memory",
        "messages",
        "nbytes",
        "next_offset",
        "partition",
        "started_at",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        limits: BufferLimits,
        clock: Clock = time.monotonic,
        next_offset: int = 0,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.limits = limits
        self._clock = clock
        #: Lowest offset still to be accepted: offsets below it were flushed already or lie
        #: before the position the sink resumed at (stale prefetched records).
        self.next_offset = next_offset
        self._reset()

    def _reset(self) -> None:
        self._values: list[bytes] = []
        self._offsets: list[int] = []
        self._meta: list[MessageMeta] = []
        self.first_offset = -1
        self.last_offset = -1
        self.messages = 0
        self.events = 0
        self.nbytes = 0
        self.max_timestamp_ms = 0
        self.started_at: float | None = None
        self._chunks: list[tuple[Any, Any]] = []
        self._folders: set[str] = set()
        self._bad: list[Any] = []
        self.memory = 0

    def __len__(self) -> int:
        """Number of messages buffered (including empty ones)."""
        return self.messages

    @property
    def empty(self) -> bool:
        """True when no message has been appended since the last take."""
        return self.first_offset < 0

    def append(
        self,
        offset: int,
        value: bytes | None,
        events: int,
        timestamp_ms: int,
        keep: bool = True,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> bool:
        """Add one message; False (and nothing changes) if its offset was seen already.

        ``keep=False`` counts the value without holding it (its rows come via ``add_rows``);
        a kept value is held with its timestamp, ``key`` and ``headers``.
        """
        if offset < self.next_offset:
            return False
        if self.first_offset < 0:
            self.first_offset = offset
            self.started_at = self._clock()
        self.last_offset = offset
        self.next_offset = offset + 1
        self.messages += 1
        if value:
            if keep:
                kept = tuple(headers or ())
                self._values.append(value)
                self._offsets.append(offset)
                self._meta.append((timestamp_ms, key, kept))
                self.memory += len(value) + len(key or b"") + sum(len(v) for _, v in kept)
            self.events += events
            self.nbytes += len(value)
        if timestamp_ms > self.max_timestamp_ms:
            self.max_timestamp_ms = timestamp_ms
        return True

    def add_rows(
        self,
        chunks: Sequence[tuple[Any, Any]],
        folders: Iterable[str],
        bad: Sequence[Any],
        memory: int,
    ) -> None:
        """Hold converted rows with their folders, failed lines, and their size in bytes."""
        self._chunks.extend(chunks)
        self._folders.update(folders)
        self._bad.extend(bad)
        self.memory += memory

    @property
    def folders(self) -> frozenset[str]:
        """The output folders the buffered rows go to (its open partitions)."""
        return frozenset(self._folders)

    def deadline(self) -> float | None:
        """Clock time at which the time bound flushes this buffer, None when empty."""
        if self.started_at is None:
            return None
        return self.started_at + self.limits.max_seconds

    def is_full(self) -> bool:
        """True when the count or size bound is reached (checked after every message)."""
        return self.events >= self.limits.max_events or self.nbytes >= self.limits.max_bytes

    def flush_reason(self, now: float | None = None) -> str | None:
        """Which bound is reached ('events', 'bytes' or 'seconds'), or None."""
        if self.first_offset < 0:
            return None
        if self.events >= self.limits.max_events:
            return "events"
        if self.nbytes >= self.limits.max_bytes:
            return "bytes"
        now = self._clock() if now is None else now
        assert self.started_at is not None
        if now - self.started_at >= self.limits.max_seconds:
            return "seconds"
        return None

    def should_flush(self, now: float | None = None) -> bool:
        """True when any bound is reached."""
        return self.flush_reason(now) is not None

    def take(self) -> Batch:
        """Hand the buffered messages to a flush and start empty (offsets keep going)."""
        if self.first_offset < 0:
            raise ValueError(f"partition {self.partition} buffer is empty; nothing to take")
        batch = Batch(
            topic=self.topic,
            partition=self.partition,
            values=tuple(self._values),
            offsets=tuple(self._offsets),
            first_offset=self.first_offset,
            last_offset=self.last_offset,
            events=self.events,
            nbytes=self.nbytes,
            max_timestamp_ms=self.max_timestamp_ms,
            chunks=tuple(self._chunks),
            bad=tuple(self._bad),
            memory=self.memory,
            meta=tuple(self._meta),
        )
        self._reset()
        return batch


class PartitionBuffers:
    """The buffers of every partition a sink owns, created on first use."""

    def __init__(self, topic: str, limits: BufferLimits, clock: Clock = time.monotonic) -> None:
        self.topic = topic
        self.limits = limits
        self.clock = clock
        self._buffers: dict[int, PartitionBuffer] = {}

    def __iter__(self) -> Iterator[PartitionBuffer]:
        return iter(self._buffers.values())

    def get(self, partition: int) -> PartitionBuffer:
        """The buffer of a partition (a new empty one the first time)."""
        buffer = self._buffers.get(partition)
        if buffer is None:
            buffer = self._buffers[partition] = PartitionBuffer(
                self.topic, partition, self.limits, self.clock
            )
        return buffer

    def reset(self, partition: int, next_offset: int = 0) -> None:
        """Drop a partition's buffered messages and accept offsets from ``next_offset`` on."""
        self._buffers[partition] = PartitionBuffer(
            self.topic, partition, self.limits, self.clock, next_offset
        )

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions the sink no longer owns (their messages are re-read by the owner)."""
        for partition in partitions:
            self._buffers.pop(partition, None)

    def due(self, now: float | None = None) -> list[int]:
        """Partitions whose buffer should flush now, in partition order."""
        now = self.clock() if now is None else now
        return sorted(p for p, b in self._buffers.items() if b.should_flush(now))

    def pending(self) -> list[int]:
        """Partitions holding any message, in partition order."""
        return sorted(p for p, b in self._buffers.items() if not b.empty)

    def next_deadline(self) -> float | None:
        """The earliest time bound of any non-empty buffer, None when all are empty."""
        deadlines = [d for b in self._buffers.values() if (d := b.deadline()) is not None]
        return min(deadlines) if deadlines else None

    def take(self, partition: int) -> Batch:
        """Take a partition's batch for flushing."""
        return self._buffers[partition].take()

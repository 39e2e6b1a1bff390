"""Unit tests of sinks.buffer: the count, bytes and seconds bounds, with a fixed clock."""

from __future__ import annotations

import pytest

from sinks.buffer import (
    BufferLimits,
    FixedClock,
    PartitionBuffer,
    PartitionBuffers,
    message_event_count,
)
from streams.envelope import encode

LIMITS = BufferLimits(max_events=10, max_bytes=1_000, max_seconds=5.0)


def envelope(n: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    return encode([b'{"i":%d}' % i for i in range(n)])


def test_event_count_comes_from_the_envelope_header() -> None:
    value, headers = envelope(7)
    assert message_event_count(value, headers) == 7


def test_a_message_without_envelope_headers_is_one_event() -> None:
    assert message_event_count(b'{"a":1}\n{"b":2}', None) == 1
    assert message_event_count(b'{"a":1}', [("other", b"x")]) == 1


def test_an_empty_message_holds_no_event() -> None:
    assert message_event_count(None, None) == 0
    assert message_event_count(b"", [("fl-format", b"ndjson/1")]) == 0


def test_a_malformed_count_header_falls_back_to_counting_lines() -> None:
    headers = [("fl-format", b"ndjson/1"), ("fl-count", b"many")]
    assert message_event_count(b"{}\n{}\n{}", headers) == 3


def test_buffer_flushes_at_max_events() -> None:
    clock = FixedClock()
    buffer = PartitionBuffer("t", 0, LIMITS, clock)
    value, headers = envelope(4)
    buffer.append(0, value, message_event_count(value, headers), 1)
    buffer.append(1, value, 4, 1)
    assert not buffer.should_flush()
    buffer.append(2, value, 4, 1)
    assert buffer.flush_reason() == "events"
    assert buffer.events == 12
    assert len(buffer) == 3


def test_is_full_ignores_time_and_says_when_a_bound_is_reached() -> None:
    clock = FixedClock()
    buffer = PartitionBuffer("t", 0, LIMITS, clock)
    buffer.append(0, b"x", 9, 1)
    clock.advance(60)
    assert not buffer.is_full()
    buffer.append(1, b"x", 1, 1)
    assert buffer.is_full()


def test_buffer_flushes_at_max_bytes() -> None:
    buffer = PartitionBuffer("t", 0, LIMITS, FixedClock())
    buffer.append(0, b"x" * 999, 1, 1)
    assert not buffer.should_flush()
    buffer.append(1, b"x", 1, 1)
    assert buffer.flush_reason() == "bytes"
    assert buffer.nbytes == 1_000


def test_buffer_flushes_max_seconds_after_its_first_message() -> None:
    clock = FixedClock(100.0)
    buffer = PartitionBuffer("t", 0, LIMITS, clock)
    buffer.append(0, b"{}", 1, 1)
    clock.advance(3.0)
    buffer.append(1, b"{}", 1, 1)  # a later message does not restart the clock
    clock.advance(1.9)
    assert not buffer.should_flush()
    assert buffer.deadline() == 105.0
    clock.advance(0.1)
    assert buffer.flush_reason() == "seconds"


def test_an_empty_buffer_never_flushes_and_has_no_deadline() -> None:
    clock = FixedClock()
    buffer = PartitionBuffer("t", 0, LIMITS, clock)
    clock.advance(1_000)
    assert buffer.empty
    assert not buffer.should_flush()
    assert buffer.deadline() is None


def test_an_idle_buffer_is_due_when_its_time_is_up() -> None:
    clock = FixedClock()
    buffers = PartitionBuffers("t", LIMITS, clock)
    buffers.get(2).append(0, b"{}", 1, 1)
    clock.advance(2)
    buffers.get(0).append(0, b"{}", 1, 1)
    assert buffers.due() == []
    assert buffers.next_deadline() == 5.0
    clock.advance(3)  # no message arrives: time alone makes partition 2 due
    assert buffers.due() == [2]
    clock.advance(2)
    assert buffers.due() == [0, 2]


def test_max_seconds_zero_flushes_at_once() -> None:
    buffer = PartitionBuffer("t", 0, BufferLimits(10, 1000, 0), FixedClock())
    buffer.append(0, b"{}", 1, 1)
    assert buffer.flush_reason() == "seconds"


def test_take_hands_over_the_batch_and_starts_empty() -> None:
    clock = FixedClock()
    buffer = PartitionBuffer("topic-a", 3, LIMITS, clock)
    buffer.append(5, b"a", 1, 1_000)
    buffer.append(6, None, 0, 3_000)  # a tombstone: covered by the range, holds no event
    buffer.append(7, b"bb", 2, 2_000)
    batch = buffer.take()
    assert batch.topic == "topic-a"
    assert batch.partition == 3
    assert batch.values == (b"a", b"bb")
    assert batch.offsets == (5, 7)
    assert (batch.first_offset, batch.last_offset) == (5, 7)
    assert (batch.events, batch.nbytes, batch.max_timestamp_ms) == (3, 3, 3_000)
    assert buffer.empty and buffer.events == 0 and buffer.nbytes == 0
    with pytest.raises(ValueError, match="empty"):
        buffer.take()


def test_offsets_already_seen_are_ignored() -> None:
    buffer = PartitionBuffer("t", 0, LIMITS, FixedClock())
    assert buffer.append(4, b"a", 1, 1)
    assert not buffer.append(4, b"a", 1, 1)
    assert not buffer.append(2, b"a", 1, 1)
    buffer.take()
    assert not buffer.append(4, b"a", 1, 1)  # flushed already
    assert buffer.append(5, b"a", 1, 1)


def test_reset_drops_the_buffer_and_sets_the_resume_offset() -> None:
    buffers = PartitionBuffers("t", LIMITS, FixedClock())
    buffers.get(1).append(0, b"a", 1, 1)
    buffers.reset(1, next_offset=10)
    assert buffers.pending() == []
    assert not buffers.get(1).append(9, b"a", 1, 1)
    assert buffers.get(1).append(10, b"a", 1, 1)
    buffers.drop([1])
    assert buffers.pending() == []


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_events=0"):
        BufferLimits(max_events=0, max_bytes=1, max_seconds=1)
    with pytest.raises(ValueError, match="max_seconds=-1"):
        BufferLimits(max_events=1, max_bytes=1, max_seconds=-1)


def test_fixed_clock_does_not_go_back() -> None:
    clock = FixedClock(5)
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert clock() == 5

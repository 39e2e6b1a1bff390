"""``firelake record``: capture a range of a live stream as a case's input file.

Every event of the range is written as one line of :mod:`cases.records` — its key,
partition, offset, place in its envelope, Kafka (ingest) timestamp, event time and headers
— envelopes unpacked, in time order (timestamp, then partition, offset and place), so a
replay gives each partition its events back in their order. ``--from`` / ``--to`` take the
positions of ``firelake replay`` (ISO time, ``@epoch-ms``, offset, ``earliest``,
``latest``; from inclusive, to exclusive; the end is fixed when recording starts). The
recording stops at ``max_events`` events or ``max_bytes`` bytes written, whichever comes
first, and says so; a progress bar counts messages.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tqdm import tqdm

from cases.records import RecordedEvent, events_of_message, write_events
from streams.replay import ReplayError, offset_range, parse_position

__all__ = ["RecordReport", "record", "run_record"]

#: Default bounds of one recording.
MAX_EVENTS = 1_000_000
MAX_BYTES = 256 * 1024 * 1024


@dataclass
class RecordReport:
    """What a recording wrote."""

    stream: str
    out: Path
    events: int = 0
    messages: int = 0
    bytes: int = 0
    truncated: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        cut = f"; stopped at {self.truncated}" if self.truncated else ""
        return (
            f"recorded {self.events} events ({self.messages} messages, {self.bytes} bytes) "
            f"of {self.stream} into {self.out} in {self.seconds:.1f} s{cut}"
        )


def _ordered(per_partition: dict[int, list[RecordedEvent]]) -> Iterator[RecordedEvent]:
    def key(e: RecordedEvent) -> tuple[int, int, int, int]:
        return (e.timestamp, e.partition or 0, e.offset or 0, e.index)

    return heapq.merge(*per_partition.values(), key=key)


async def _partitions(bootstrap: str, stream: str) -> set[int]:
    # A consumer that has not assigned a topic knows no partitions of it; a producer's
    # metadata lookup does (as streams.replay finds them).
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="firelake-record")
    await producer.start()
    try:
        return set(await producer.partitions_for(stream))
    finally:
        await producer.stop()


async def record(
    bootstrap: str,
    stream: str,
    out: str | Path,
    start: str = "earliest",
    end: str | None = None,
    time_field: str = "",
    max_events: int = MAX_EVENTS,
    max_bytes: int = MAX_BYTES,
    progress: bool = True,
) -> RecordReport:
    """Record ``stream``'s events in [start, end) into ``out`` (see the module docstring)."""
    began = time.monotonic()
    out = Path(out)
    report = RecordReport(stream, out)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="firelake-record",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    per_partition: dict[int, list[RecordedEvent]] = {}
    try:
        if stream not in await consumer.topics():
            raise ReplayError(f"stream {stream!r} does not exist")
        parts = await _partitions(bootstrap, stream)
        tps = [TopicPartition(stream, p) for p in sorted(parts)]
        consumer.assign(tps)
        ranges = await offset_range(
            consumer, tps, parse_position(start), parse_position(end) if end else None
        )
        total = sum(max(0, b - a) for a, b in ranges.values())
        with tqdm(total=total, unit="msg", desc=f"record {stream}", disable=not progress) as bar:
            for tp in tps:
                # Each partition up to the bounds; the time-ordered merge below cuts the
                # whole recording at them, so it keeps the range's earliest events.
                first, stop = ranges[tp]
                events = per_partition.setdefault(tp.partition, [])
                size = 0
                if first < stop:
                    consumer.seek(tp, first)
                while first < stop and await consumer.position(tp) < stop:
                    if len(events) >= max_events or size >= max_bytes:
                        break
                    batch = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
                    for message in batch:
                        if message.offset >= stop:
                            break
                        report.messages += 1
                        bar.update(1)
                        found = events_of_message(
                            message.value,
                            message.headers,
                            message.key,
                            tp.partition,
                            message.offset,
                            message.timestamp,
                            time_field,
                        )
                        events.extend(found)
                        size += sum(len(e.value) for e in found)
    finally:
        await consumer.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as file:
        for line in write_events(_ordered(per_partition)):
            if report.events >= max_events:
                report.truncated = f"--max-events {max_events}"
                break
            if report.bytes + len(line) > max_bytes:
                report.truncated = f"--max-bytes {max_bytes}"
                break
            file.write(line)
            report.bytes += len(line)
            report.events += 1
    report.seconds = time.monotonic() - began
    return report


def run_record(bootstrap: str, stream: str, out: str | Path, **options: object) -> RecordReport:
    """:func:`record` from synchronous code (the CLI)."""
    return asyncio.run(record(bootstrap, stream, out, **options))  # type: ignore[arg-type]

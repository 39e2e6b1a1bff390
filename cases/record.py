"""``firelake record``: capture a range of a stream as a case's input file.

Every event of the range is written as one line of :mod:`cases.records` — its key,
partition, offset, place in its envelope, Kafka (ingest) timestamp, event time and headers
— envelopes unpacked, in time order (timestamp, then partition, offset and place), so a
replay gives each partition its events back in their order. ``--from`` / ``--to`` take the
positions of ``firelake replay`` (ISO time, ``@epoch-ms``, offset, ``earliest``,
``latest``; from inclusive, to exclusive; the end is fixed when recording starts). The
recording stops at ``max_events`` events or ``max_bytes`` bytes written, whichever comes
first, and says so; a progress bar counts messages.

``firelake record <stream> --from-archive <table>`` (``record(..., archive=…)``) records from
the lake's raw archive instead: its entries keep the same key, partition, offset, place,
timestamp and headers (``sinks.archive``), ``--from`` / ``--to`` select them by their own
timestamp or offset, and the file holds the same lines a recording of the live stream
over that range gives. Entries of an older archive, bare event lines, carry none of that:
they are recorded without key or place, or left out when the range is bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer, TopicPartition
from tqdm import tqdm

from cases.records import RecordedEvent, events_of_message, time_ordered, write_events
from streams.recorded import select_range
from streams.replay import (
    ReplayError,
    offset_range,
    parse_position,
    placed_order,
    range_consumer,
    read_batches,
)

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
    #: From an archive: its files, and its entries without key or place (an older
    #: archive) recorded as they are, or left out of a bounded range.
    archive_files: int | None = None
    bare: int = 0
    unplaced: int = 0

    def __str__(self) -> str:
        cut = f"; stopped at {self.truncated}" if self.truncated else ""
        where = f"{self.messages} messages"
        if self.archive_files is not None:
            where = f"{self.archive_files} archive files"
        text = (
            f"recorded {self.events} events ({where}, {self.bytes} bytes) "
            f"of {self.stream} into {self.out} in {self.seconds:.1f} s{cut}"
        )
        if self.bare:
            text += (
                f"; {self.bare} events of an archive written before entries kept their "
                "key, partition, offset and timestamp are recorded without them"
            )
        if self.unplaced:
            text += f"; {self.unplaced} such events lack a time or offset for the range: left out"
        return text


def _write(
    report: RecordReport, events: Iterable[RecordedEvent], max_events: int, max_bytes: int
) -> None:
    """Write the events' lines into the report's file, within the bounds."""
    report.out.parent.mkdir(parents=True, exist_ok=True)
    with report.out.open("wb") as file:
        for line in write_events(events):
            if report.events >= max_events:
                report.truncated = f"--max-events {max_events}"
                break
            if report.bytes + len(line) > max_bytes:
                report.truncated = f"--max-bytes {max_bytes}"
                break
            file.write(line)
            report.bytes += len(line)
            report.events += 1


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
    archive: Iterable[Iterable[RecordedEvent]] | None = None,
) -> RecordReport:
    """Record ``stream``'s events in [start, end) into ``out`` (see the module docstring);
    with ``archive`` (one iterable of events per file, ``sinks.archive.table_archive``)
    from the lake's raw archive instead of the live stream."""
    began = time.monotonic()
    out = Path(out)
    report = RecordReport(stream, out)
    if archive is not None:
        args = (start, end, time_field, max_events, max_bytes, progress)
        _record_archive(report, archive, *args)
        report.seconds = time.monotonic() - began
        return report
    consumer = range_consumer(bootstrap, "firelake-record")
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
                events = per_partition.setdefault(tp.partition, [])
                size = 0
                async for batch in read_batches(consumer, tp, *ranges[tp]):
                    for message in batch:
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
                    if len(events) >= max_events or size >= max_bytes:
                        break
    finally:
        await consumer.stop()
    _write(report, time_ordered(per_partition.values()), max_events, max_bytes)
    report.seconds = time.monotonic() - began
    return report


def _record_archive(
    report: RecordReport,
    files: Iterable[Iterable[RecordedEvent]],
    start: str,
    end: str | None,
    time_field: str,
    max_events: int,
    max_bytes: int,
    progress: bool,
) -> None:
    report.archive_files = 0

    def counted() -> Iterable[RecordedEvent]:
        desc = f"record {report.stream} (archive)"
        with tqdm(unit="file", desc=desc, disable=not progress) as bar:
            for file in files:
                yield from file
                report.archive_files = (report.archive_files or 0) + 1
                bar.update(1)

    selected, report.unplaced = select_range(
        counted(), parse_position(start), parse_position(end) if end else None, time_field
    )
    placed, bare = placed_order(selected)
    report.bare = len(bare)
    _write(report, itertools.chain(placed, bare), max_events, max_bytes)


def run_record(bootstrap: str, stream: str, out: str | Path, **options: object) -> RecordReport:
    """:func:`record` from synchronous code (the CLI)."""
    return asyncio.run(record(bootstrap, stream, out, **options))  # type: ignore[arg-type]

"""Replay: re-deliver a time or offset range of a stream, into itself or another stream.

``firelake replay <stream> --from <time|offset> [--to <time|offset>] [--into <stream>]``
calls :func:`run_replay`. A position is an ISO 8601 time (``2026-11-29T08:00:00Z``), epoch
milliseconds written ``@1764403200000``, a Kafka offset (a plain integer, the same on every
partition), or ``earliest`` / ``latest``; times become offsets with Kafka's offsets-for-times
(the first message at or after the time), so ``--from`` is inclusive and ``--to`` exclusive.

Messages are copied whole — envelopes stay envelopes, headers are kept — with a
``fl-replayed-from: <topic>/<partition>/<offset>`` header added and a fresh timestamp (an
old one would put the copy at the front of retention). They keep their partition when
the target has as many partitions; otherwise an envelope is split by its records'
partition keys so each record lands where its key belongs. The end of the range is fixed
when the replay starts, so replaying a stream into itself terminates.

``firelake replay --from-archive <table> --into <stream> [--from …] [--to …]`` calls
:func:`replay_archive` with a sink's raw archive (``sinks.archive.table_archive`` reads it;
this module never imports ``sinks``). Archive entries are recorded events
(``streams.recorded``) that keep their source key, partition, offset, place in their
envelope and ingest timestamp, so the archive gives back what the stream had:

- **Range**: ``--from`` / ``--to`` select entries by their own ingest timestamp (or
  offset), inclusive / exclusive, as a live replay's offsets-for-times does.
- **Keys, partitions, order**: each source message's events go out again as one envelope
  with their keys; into a target with the source's partition count each keeps its source
  partition, otherwise it goes to its key's partition (``streams.partitioning``, as the
  ingest places it). Entries are sent per source partition in offset order, partitions
  merged by timestamp, so every key's events keep their order.
- **Idempotent per target**: every message carries ``fl-replayed-from:
  <stream>/<partition>/<offset>`` of its source message, and holds all of that message's
  events bound for its partition (the placement is a function of the entry, so every run
  makes the same messages). A run first reads the target's headers and notes which
  (target partition, source partition, source offset) it holds; entries whose message is
  there are skipped. So a rerun — after success, after a crash half-way (the idempotent
  producer leaves no gaps or duplicates within a run), or with another range — sends
  exactly what is missing. The target itself is the record: no marker can disagree with
  it. The cost is one pass over the target's headers and a set of one entry per replayed
  source message (envelopes, not events); targets are usually fresh streams.

Entries of an archive written before entries kept all this are bare event lines: they are
sent as before — envelopes of up to ``per_message`` events, round robin, without keys, not
idempotent — are left out when ``--from`` / ``--to`` bound the range, and the report says
how many there were.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tqdm import tqdm

from streams import envelope
from streams.partitioning import partition_for_key
from streams.positions import offsets_at
from streams.ranges import Position, ReplayError, parse_position
from streams.recorded import (
    RecordedEvent,
    interleave,
    pack,
    select_range,
    target_partition,
    time_ordered,
)
from streams.topics import MAX_MESSAGE_BYTES

__all__ = [
    "HEADER_REPLAYED_FROM",
    "ArchiveReplayReport",
    "Position",
    "ReplayError",
    "ReplayReport",
    "offset_range",
    "parse_position",
    "placed_order",
    "range_consumer",
    "read_batches",
    "read_topic",
    "replay",
    "replay_archive",
    "replayed_positions",
    "run_replay",
]

#: Header naming where a replayed message came from.
HEADER_REPLAYED_FROM = "fl-replayed-from"
#: Sends queued before their acks are awaited (bounds memory, keeps batches full).
WINDOW = 2000


@dataclass
class ReplayReport:
    """What a replay copied."""

    source: str
    target: str
    messages: int = 0
    events: int = 0
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"replayed {self.messages} messages ({self.events} events) from {self.source} "
            f"into {self.target} in {self.seconds:.1f} s"
        )


async def _offsets(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    position: Position,
    begin: dict[TopicPartition, int],
    end: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    if position.kind == "earliest":
        return dict(begin)
    if position.kind == "latest":
        return dict(end)
    if position.kind == "offset":
        return {tp: max(begin[tp], min(position.value, end[tp])) for tp in tps}
    return await offsets_at(consumer, tps, position.value, end)


def replay_producer(bootstrap: str, client_id: str = "firelake-replay") -> AIOKafkaProducer:
    """The producer every replay writes with: acks from all replicas, idempotent (a retry
    after a lost ack duplicates nothing), messages up to the topics' size limit."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        max_request_size=MAX_MESSAGE_BYTES,
        linger_ms=5,
    )


async def offset_range(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    start: Position,
    end: Position | None = None,
) -> dict[TopicPartition, tuple[int, int]]:
    """Each partition's [first, stop) offsets for a range (``end`` None: the end now)."""
    begin = await consumer.beginning_offsets(tps)
    last = await consumer.end_offsets(tps)
    first = await _offsets(consumer, tps, start, begin, last)
    stop = await _offsets(consumer, tps, end or Position("latest"), begin, last)
    return {tp: (first[tp], stop[tp]) for tp in tps}


def _split(
    message: Any, partitions: int
) -> list[tuple[int, bytes, list[tuple[str, bytes]], bytes | None]]:
    """An envelope re-split by its keys' partitions in a target of another size."""
    headers = list(message.headers or ())
    try:
        env = envelope.decode(message.value, headers, message.key)
    except envelope.EnvelopeError:
        env = None
    if env is None or not env.batched or env.keys is None:
        key = message.key.decode("utf-8", "replace") if message.key is not None else ""
        partition = partition_for_key(key, partitions) if key else message.partition % partitions
        return [(partition, message.value or b"", headers, message.key)]
    groups: dict[int, tuple[list[bytes], list[str]]] = {}
    for line, key in zip(env.lines, env.keys, strict=True):
        lines, keys = groups.setdefault(partition_for_key(key, partitions), ([], []))
        lines.append(line)
        keys.append(key)
    extra = [(k, v) for k, v in headers if not k.startswith("fl-")]
    out = []
    for partition, (lines, keys) in groups.items():
        value, env_headers = envelope.encode(lines, keys, env.time_min, env.time_max)
        out.append((partition, value, env_headers + extra, keys[0].encode("utf-8")))
    return out


def _event_count(headers: Sequence[tuple[str, bytes]] | None) -> int:
    value = envelope.header(headers, envelope.HEADER_COUNT)
    if value is None:
        return 1
    try:
        return int(value)
    except ValueError:
        return 1


async def replay(
    bootstrap: str,
    stream: str,
    start: Position,
    end: Position | None = None,
    into: str | None = None,
    progress: bool = True,
    timeout_s: float = 3600.0,
) -> ReplayReport:
    """Copy ``stream``'s messages in [start, end) into ``into`` (default: itself)."""
    target = into or stream
    report = ReplayReport(stream, target)
    began = time.monotonic()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, client_id="firelake-replay", enable_auto_commit=False
    )
    producer = replay_producer(bootstrap)
    await consumer.start()
    try:
        await producer.start()
        try:
            existing = await consumer.topics()
            for name, role in ((stream, "stream"), (target, "target stream")):
                if name not in existing:
                    raise ReplayError(f"{role} {name!r} does not exist")
            # The topics exist, so the producer's metadata lookups answer at once.
            source_parts = await producer.partitions_for(stream)
            target_parts = await producer.partitions_for(target)
            same = len(target_parts) == len(source_parts)
            tps = [TopicPartition(stream, p) for p in sorted(source_parts)]
            consumer.assign(tps)
            ranges = await offset_range(consumer, tps, start, end)
            first = {tp: bounds[0] for tp, bounds in ranges.items()}
            stop = {tp: bounds[1] for tp, bounds in ranges.items()}
            report.ranges = {tp.partition: ranges[tp] for tp in tps}
            total = sum(max(0, stop[tp] - first[tp]) for tp in tps)
            bar = tqdm(total=total, unit="msg", desc=f"replay {stream}", disable=not progress)
            pending: list[asyncio.Future[Any]] = []
            try:
                async with asyncio.timeout(timeout_s):
                    for tp in tps:
                        if first[tp] >= stop[tp]:
                            continue
                        consumer.seek(tp, first[tp])
                        done = False
                        while not done:
                            batch = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
                            for message in batch:
                                if message.offset >= stop[tp]:
                                    done = True
                                    break
                                origin = f"{stream}/{tp.partition}/{message.offset}".encode()
                                if same:
                                    parts = [
                                        (
                                            tp.partition,
                                            message.value or b"",
                                            list(message.headers or ()),
                                            message.key,
                                        )
                                    ]
                                else:
                                    parts = _split(message, len(target_parts))
                                for partition, value, headers, key in parts:
                                    pending.append(
                                        await producer.send(
                                            target,
                                            value,
                                            key=key,
                                            partition=partition,
                                            headers=[*headers, (HEADER_REPLAYED_FROM, origin)],
                                        )
                                    )
                                report.messages += 1
                                report.events += _event_count(message.headers)
                                bar.update(1)
                                if message.offset + 1 >= stop[tp]:
                                    done = True
                            if len(pending) >= WINDOW:
                                await asyncio.gather(*pending)
                                pending.clear()
                            if not batch and await consumer.position(tp) >= stop[tp]:
                                done = True
                    await asyncio.gather(*pending)
            finally:
                bar.close()
        finally:
            await producer.stop()
    finally:
        await consumer.stop()
    report.seconds = time.monotonic() - began
    return report


def run_replay(
    bootstrap: str,
    stream: str,
    start: str,
    end: str | None = None,
    into: str | None = None,
    progress: bool = True,
) -> ReplayReport:
    """The CLI's entry: parse the positions, replay, return the report."""
    return asyncio.run(
        replay(
            bootstrap,
            stream,
            parse_position(start),
            parse_position(end) if end else None,
            into,
            progress,
        )
    )


@dataclass
class ArchiveReplayReport:
    """What a replay from a sink's raw archive sent, skipped and could not place."""

    files: int
    events: int = 0
    messages: int = 0
    #: Entries an earlier run replayed into the target already.
    skipped: int = 0
    #: Entries without key or place (an older archive), sent round robin.
    round_robin: int = 0
    #: Such entries left out because --from / --to need a time or offset they lack.
    unplaced: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        text = (
            f"replayed {self.events} events from {self.files} archive files "
            f"in {self.messages} messages"
        )
        if self.skipped:
            text += f"; {self.skipped} events were replayed into the target before: skipped"
        if self.round_robin:
            text += (
                f"; {self.round_robin} events of an archive written before entries kept "
                "their key, partition and offset were sent round robin, without keys "
                "(a rerun sends them again)"
            )
        if self.unplaced:
            text += (
                f"; {self.unplaced} such events have no time or offset for --from/--to: left out"
            )
        return text


def placed_order(
    events: Iterable[RecordedEvent],
) -> tuple[list[RecordedEvent], list[RecordedEvent]]:
    """Placed events (with a source partition and offset) in replay order — each source
    partition's by offset and place, partitions merged by timestamp — and the events
    without a place (an older archive's bare lines) in their order."""
    per_partition: dict[int, list[RecordedEvent]] = {}
    bare: list[RecordedEvent] = []
    for event in events:
        if event.partition is None or event.offset is None:
            bare.append(event)
        else:
            per_partition.setdefault(event.partition, []).append(event)
    for events_of in per_partition.values():
        events_of.sort(key=lambda e: (e.offset or 0, e.index))
    return list(time_ordered(per_partition[p] for p in sorted(per_partition))), bare


async def read_batches(
    consumer: AIOKafkaConsumer, tp: TopicPartition, first: int, stop: int
) -> AsyncIterator[list[Any]]:
    """The messages of one assigned partition in [first, stop), batch by batch."""
    if first >= stop:
        return
    consumer.seek(tp, first)
    while await consumer.position(tp) < stop:
        batch = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
        yield [m for m in batch if m.offset < stop]


def range_consumer(bootstrap: str, client_id: str) -> AIOKafkaConsumer:
    """A consumer that reads assigned ranges: no group commits, committed messages only."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )


async def read_topic(
    bootstrap: str, topic: str, partitions: Iterable[int]
) -> AsyncIterator[tuple[int, Any]]:
    """Every committed message of a topic's partitions up to their end now, partition by
    partition, each's in order: (partition, message)."""
    consumer = range_consumer(bootstrap, "firelake-replay")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ranges = await offset_range(consumer, tps, Position("earliest"))
        for tp in tps:
            async for batch in read_batches(consumer, tp, *ranges[tp]):
                for message in batch:
                    yield tp.partition, message
    finally:
        await consumer.stop()


def _origin(value: bytes) -> tuple[str, int, int] | None:
    stream, _, rest = value.decode("utf-8", "replace").rpartition("/")
    stream, _, partition = stream.rpartition("/")
    if not (stream and partition.isdigit() and rest.isdigit()):
        return None
    return stream, int(partition), int(rest)


async def replayed_positions(
    bootstrap: str, target: str, source: str, partitions: Iterable[int]
) -> set[tuple[int, int, int]]:
    """The (target partition, source partition, source offset) of every message replayed
    from ``source`` into ``target``, from the target's ``fl-replayed-from`` headers."""
    done: set[tuple[int, int, int]] = set()
    async for partition, message in read_topic(bootstrap, target, partitions):
        raw = envelope.header(message.headers, HEADER_REPLAYED_FROM)
        origin = _origin(raw) if raw is not None else None
        if origin is not None and origin[0] == source:
            done.add((partition, origin[1], origin[2]))
    return done


async def replay_archive(
    bootstrap: str,
    files: Sequence[Iterable[RecordedEvent]],
    into: str,
    partitions: int,
    source: str,
    source_partitions: int | None = None,
    start: Position | None = None,
    end: Position | None = None,
    batched: bool = True,
    per_message: int = 500,
    progress: bool = False,
) -> ArchiveReplayReport:
    """Send archived events of stream ``source`` in [start, end) into ``into`` (of
    ``partitions``); see the module docstring. ``files`` holds one iterable of events per
    archive file, in key order; ``batched``: the target takes envelopes."""
    began = time.monotonic()
    report = ArchiveReplayReport(len(files))
    selected, report.unplaced = select_range(
        itertools.chain.from_iterable(files), start or Position("earliest"), end
    )
    ordered, bare = placed_order(selected)
    same = source_partitions == partitions
    done = await replayed_positions(bootstrap, into, source, range(partitions))
    kept = []
    for number, event in enumerate(ordered):
        place = target_partition(event, number, partitions, same)
        if (place, event.partition, event.offset) in done:
            report.skipped += 1
        else:
            kept.append(event)
    producer = replay_producer(bootstrap)
    pending: list[asyncio.Future[Any]] = []
    bar = tqdm(total=len(kept) + len(bare), unit="ev", desc=f"replay {into}", disable=not progress)

    async def send(value: bytes, headers: list[tuple[str, bytes]], **where: Any) -> None:
        pending.append(await producer.send(into, value, headers=headers, **where))
        report.messages += 1
        if len(pending) >= WINDOW:
            await asyncio.gather(*pending)
            pending.clear()

    await producer.start()
    try:
        for message in interleave(pack(kept, partitions, batched, same_partitions=same)):
            first = kept[message.order]
            origin = f"{source}/{first.partition}/{first.offset}".encode()
            headers = [*message.headers, (HEADER_REPLAYED_FROM, origin)]
            await send(message.value, headers, key=message.key, partition=message.partition)
            report.events += message.events
            bar.update(message.events)
        for at in range(0, len(bare), per_message):
            chunk = bare[at : at + per_message]
            value, headers = envelope.encode([_one_line(e.value) for e in chunk])
            await send(value, headers, partition=report.messages % partitions)
            report.events += len(chunk)
            report.round_robin += len(chunk)
            bar.update(len(chunk))
        # A failed send raises here instead of being counted as replayed.
        await asyncio.gather(*pending)
    finally:
        bar.close()
        await producer.stop()
    report.seconds = time.monotonic() - began
    return report


def _one_line(value: bytes) -> bytes:
    # An older archive's lines are single lines already; a line holds no newline.
    return value.replace(b"\n", b" ")

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

``firelake replay --from-archive <table> --into <stream>`` calls :func:`replay_archive`
with a sink's raw archive (``sinks.archive.table_archive`` reads it; this module never
imports ``sinks``): the archived events, in order, are sent as envelopes of up to
``per_message`` events, round robin over the target's partitions.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tqdm import tqdm

from streams import envelope
from streams.partitioning import partition_for_key
from streams.topics import MAX_MESSAGE_BYTES

__all__ = [
    "HEADER_REPLAYED_FROM",
    "ArchiveReplayReport",
    "Position",
    "ReplayError",
    "ReplayReport",
    "offset_range",
    "parse_position",
    "replay",
    "replay_archive",
    "run_replay",
]

#: Header naming where a replayed message came from.
HEADER_REPLAYED_FROM = "fl-replayed-from"
#: Sends queued before their acks are awaited (bounds memory, keeps batches full).
WINDOW = 2000


class ReplayError(ValueError):
    """A replay that cannot run: names the stream or position at fault."""


@dataclass(frozen=True)
class Position:
    """One end of a range: ``kind`` is offset, time (epoch ms), earliest or latest."""

    kind: str
    value: int = 0


def parse_position(text: str) -> Position:
    """Parse ``--from`` / ``--to``; ReplayError names what was expected."""
    text = text.strip()
    if text in ("earliest", "latest"):
        return Position(text)
    if re.fullmatch(r"\d+", text):
        return Position("offset", int(text))
    if re.fullmatch(r"@\d+", text):
        return Position("time", int(text[1:]))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(
            f"{text!r} is not a position: give an ISO time (2026-11-29T08:00:00Z), "
            "@<epoch ms>, an offset, earliest or latest"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return Position("time", int(moment.timestamp() * 1000))


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
    found = await consumer.offsets_for_times({tp: position.value for tp in tps})
    return {tp: (hit.offset if hit is not None else end[tp]) for tp, hit in found.items()}


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


@dataclass(frozen=True, slots=True)
class ArchiveReplayReport:
    """What a replay from a sink's raw archive sent."""

    files: int
    events: int
    messages: int

    def __str__(self) -> str:
        return (
            f"replayed {self.events} events from {self.files} archive files "
            f"in {self.messages} messages"
        )


async def replay_archive(
    bootstrap: str,
    files: Sequence[Iterable[bytes]],
    into: str,
    partitions: int,
    per_message: int = 500,
) -> ArchiveReplayReport:
    """Send archived events into ``into`` as envelopes (round robin over ``partitions``).

    ``files`` holds one iterable of event lines per archive file, in order; envelopes
    span file boundaries, exactly as if the lines were one sequence.
    """
    producer = replay_producer(bootstrap)
    events = messages = 0
    pending: list[asyncio.Future[Any]] = []

    async def send(chunk: list[bytes]) -> None:
        nonlocal events, messages
        value, headers = envelope.encode(chunk)
        pending.append(
            await producer.send(into, value, partition=messages % partitions, headers=headers)
        )
        events, messages = events + len(chunk), messages + 1

    await producer.start()
    try:
        chunk: list[bytes] = []
        for line in itertools.chain.from_iterable(files):
            chunk.append(line)
            if len(chunk) == per_message:
                await send(chunk)
                chunk = []
        if chunk:
            await send(chunk)
        # A failed send raises here instead of being counted as replayed.
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return ArchiveReplayReport(len(files), events, messages)

"""Replaying a case's recorded events into its streams, with their original timestamps.

Each stream's events are packed by :func:`cases.records.pack` (key → partition, runs →
envelopes) and sent in timestamp order with the Kafka timestamp they were recorded with —
so routers stamp the same ``receive_time`` and windows on ingest time see the same
times on every run. By default as fast as the broker takes them; with ``speed`` the gaps
between timestamps are kept, divided by ``speed`` (2.0: twice as fast as recorded).
Sends are idempotent (``enable_idempotence``) and awaited in windows, so memory stays
bounded and a retried send never duplicates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cases.records import OutMessage, RecordedEvent, interleave, pack
from streams.replay import replay_producer

__all__ = ["InjectReport", "StreamInput", "inject", "inject_sync"]

#: Sends in flight before their acks are awaited.
WINDOW = 1000


@dataclass(frozen=True)
class StreamInput:
    """The events to replay into one topic, and how the topic takes them."""

    topic: str
    events: Sequence[RecordedEvent]
    partitions: int
    batched: bool = True


@dataclass
class InjectReport:
    """What a replay sent."""

    events: int = 0
    messages: int = 0
    seconds: float = 0.0


async def inject(
    bootstrap: str, inputs: Sequence[StreamInput], speed: float | None = None
) -> InjectReport:
    """Send every input's events into its topic; see the module docstring."""
    report = InjectReport()
    began = time.monotonic()
    per_topic: list[tuple[str, list[list[OutMessage]]]] = [
        (i.topic, pack(i.events, i.partitions, i.batched)) for i in inputs
    ]
    # One timeline across the streams: each stream's messages by time, merged by time.
    timeline = sorted(
        (
            (m.timestamp, n, topic, m)
            for n, (topic, parts) in enumerate(per_topic)
            for m in interleave(parts)
        ),
        key=lambda item: (item[0], item[1]),
    )
    producer = replay_producer(bootstrap, client_id="firelake-test-replay")
    await producer.start()
    try:
        pending: list[asyncio.Future[object]] = []
        first = timeline[0][0] if timeline else 0
        for stamp, _, topic, message in timeline:
            if speed:
                wait = (stamp - first) / 1000 / speed - (time.monotonic() - began)
                if wait > 0:
                    await asyncio.gather(*pending)
                    pending.clear()
                    await asyncio.sleep(wait)
            pending.append(
                await producer.send(
                    topic,
                    message.value,
                    key=message.key,
                    partition=message.partition,
                    headers=message.headers,
                    timestamp_ms=message.timestamp or None,
                )
            )
            report.messages += 1
            report.events += message.events
            if len(pending) >= WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    report.seconds = time.monotonic() - began
    return report


def inject_sync(
    bootstrap: str, inputs: Sequence[StreamInput], speed: float | None = None
) -> InjectReport:
    """:func:`inject` from synchronous code."""
    return asyncio.run(inject(bootstrap, inputs, speed))

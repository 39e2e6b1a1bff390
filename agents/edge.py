"""What both router engines do at the Kafka edge, whatever client talks to Kafka.

The transactional worker (``agents/router.py``) and the Faust agent
(``agents/faust_agent.py``) differ only in how they read, send and commit. Everything else
at the edge lives here so the two cannot drift apart:

- :func:`route_records`: raw records through the pure :class:`~agents.routing.Router`,
  plus the iterator age of the partition (``EdgeStats.age_s``);
- :func:`deliver`: Lambda's retry policy around one delivery *attempt* the engine supplies
  (exponential backoff with full jitter until ``max_retry_attempts`` or
  ``max_record_age_seconds`` runs out), then the partial-batch-failure fallback: only the
  events of the envelopes Kafka refused become ``delivery_failed`` DLQ records, and one last
  attempt sends those with the rest; if even that fails, :class:`DeliveryError`;
- :func:`dead_letter_failed`: that replacement of refused envelopes by DLQ records.

An attempt reports per-message failures by raising :class:`SendFailed` (errors aligned with
the messages it was given), a whole-attempt failure by raising a Kafka or OS error, and a
lost ownership (a newer worker fenced this one) by raising :class:`Fenced`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from agents.metrics import EdgeStats
from agents.routing import Outgoing, Router
from agents.validation import DELIVERY_FAILED
from streams.envelope import HEADER_COUNT, decode

__all__ = [
    "Attempt",
    "DeliveryError",
    "Fenced",
    "Routed",
    "SendFailed",
    "SourceMessage",
    "SourceRecord",
    "app_id",
    "dead_letter_failed",
    "deliver",
    "describe",
    "event_count",
    "route_records",
    "route_records_off_loop",
]

log = logging.getLogger("firelake.router")


class SourceRecord(Protocol):
    """A raw message read from a source stream (aiokafka's ``ConsumerRecord`` is one)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int:
        """Kafka timestamp in epoch milliseconds."""
        ...

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]] | None: ...


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """A plain :class:`SourceRecord`, for clients whose records are shaped otherwise."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None


#: One delivery attempt of a list of messages (see the module docstring for its errors).
Attempt = Callable[[list[Outgoing]], Awaitable[None]]


class DeliveryError(RuntimeError):
    """Kafka did not accept a batch even after its retries and its DLQ fallback."""

    def __init__(self, topic: str, partition: int, offset: int, cause: BaseException) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.cause = cause
        super().__init__(
            f"could not deliver the envelopes routed from {topic}[{partition}]@{offset}: {cause!r}"
        )


class SendFailed(Exception):
    """Some sends of an attempt failed; ``errors`` holds each message's error or None."""

    def __init__(self, errors: list[BaseException | None]) -> None:
        self.errors = errors
        first = next(e for e in errors if e is not None)
        super().__init__(f"{sum(e is not None for e in errors)} sends failed, first: {first!r}")


class Fenced(Exception):
    """Another worker owns the input now: drop the batch; the new owner routes it again."""


@dataclass
class Routed:
    """One raw message and what the router made of it."""

    record: SourceRecord
    outgoing: list[Outgoing]


def app_id(router_name: str) -> str:
    """The consumer group of a router (and the prefix of its transactional ids)."""
    return f"firelake-router-{router_name}"


def describe(error: BaseException | None) -> str:
    """``Type: message`` of an error (the first per-message one of a :class:`SendFailed`)."""
    if isinstance(error, SendFailed):
        error = next(e for e in error.errors if e is not None)
    return f"{type(error).__name__}: {error}"


def event_count(headers: Sequence[tuple[str, bytes]] | None) -> int:
    """Events in a raw message by its envelope count header (1 without one)."""
    for name, value in headers or ():
        if name == HEADER_COUNT:
            try:
                return max(1, int(value))
            except ValueError:
                return 1
    return 1


def route_records(router: Router, edge: EdgeStats, records: Sequence[SourceRecord]) -> list[Routed]:
    """Route raw records of one partition, in order; records that partition's iterator age."""
    route = router.route
    routed = [
        Routed(
            record,
            route(
                record.value,
                record.headers,
                record.key,
                record.topic,
                record.partition,
                record.offset,
                record.timestamp,
            ),
        )
        for record in records
    ]
    if records:
        last = records[-1]
        edge.age_s[(last.topic, last.partition)] = max(0.0, time.time() - last.timestamp / 1000.0)
    return routed


_ROUTE_LOCKS: weakref.WeakKeyDictionary[Router, asyncio.Lock] = weakref.WeakKeyDictionary()


async def route_records_off_loop(
    router: Router, edge: EdgeStats, records: Sequence[SourceRecord]
) -> list[Routed]:
    """:func:`route_records`, in a thread when the router calls a user transform.

    A transform may block for its timeout and sleep between its retries; on the event loop
    that would stall consumer heartbeats (a rebalance) and every other partition. One batch
    at a time per router, since the router's counters and dedup windows are not shared
    across threads.
    """
    if router.transform is None:
        return route_records(router, edge, records)
    lock = _ROUTE_LOCKS.setdefault(router, asyncio.Lock())
    async with lock:
        return await asyncio.to_thread(route_records, router, edge, records)


def dead_letter_failed(
    router: Router,
    routed: Sequence[Routed],
    errors: Sequence[BaseException | None],
    attempts: int,
    first_attempt: str,
) -> list[Outgoing]:
    """The batch's messages with every refused one replaced by DLQ records.

    ``errors`` is aligned with the batch's messages in order (each record's ``outgoing``).
    Kept messages are the same objects as before, so an engine may recognise the ones it
    already delivered.
    """
    keep: list[Outgoing] = []
    dead: list[Outgoing] = []
    position = 0
    now = router.dead_letters.now()
    for item in routed:
        record = item.record
        envelope = None
        records: list[dict[str, Any]] = []
        for o in item.outgoing:
            error = errors[position]
            position += 1
            if error is None:
                keep.append(o)
                continue
            if envelope is None:
                envelope = decode(record.value, record.headers, record.key)
            for index in dict.fromkeys(o.origins):
                records.append(
                    router.dead_letters.record(
                        envelope.lines[index],
                        DELIVERY_FAILED,
                        f"{o.stream}[{o.partition}] refused: {describe(error)}",
                        source_topic=record.topic,
                        source_partition=record.partition,
                        source_offset=record.offset,
                        source_index=index,
                        failed_at=now,
                        attempts=attempts,
                        first_attempt_at=first_attempt,
                        source_key=envelope.key_at(index),
                    )
                )
        router.emit_dead(records, record.partition, dead)
    return keep + dead


async def deliver(
    router: Router,
    edge: EdgeStats,
    routed: Sequence[Routed],
    attempt: Attempt,
    *,
    rng: random.Random,
    reset: Callable[[], Awaitable[None]] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """Deliver a batch with the router's retry policy, then its DLQ fallback.

    ``reset`` runs after every failed attempt (the transactional engine replaces its
    producer there). Returns False when the batch was dropped because :class:`Fenced`;
    raises :class:`DeliveryError` when even the fallback was refused.
    """
    out = [o for r in routed for o in r.outgoing]
    policy = router.policy
    first_attempt = router.dead_letters.now()
    first = routed[0].record
    retries = 0
    while True:
        try:
            await attempt(out)
            edge.batches += 1
            return True
        except Fenced:
            return False
        except (KafkaError, SendFailed, OSError) as exc:
            failure: BaseException = exc
        oldest = min((r.record.timestamp for r in routed), default=None)
        if policy.may_retry(retries) and not policy.too_old(oldest, time.time()):
            delay = policy.delay(retries, rng)
            retries += 1
            edge.retries += 1
            log.warning(
                "router %s: batch from %s[%d] failed (%s); retry %d in %.2fs",
                router.name,
                first.topic,
                first.partition,
                describe(failure),
                retries,
                delay,
            )
            if reset is not None:
                await reset()
            await sleep(delay)
            continue
        break
    # Out of budget: dead-letter only the events of the refused messages.
    edge.delivery_failures += 1
    failed = failure.errors if isinstance(failure, SendFailed) else [failure] * len(out)
    replacement = dead_letter_failed(router, routed, failed, retries + 1, first_attempt)
    if reset is not None:
        await reset()
    try:
        await attempt(replacement)
    except Fenced:
        return False
    except (KafkaError, SendFailed, OSError) as exc:
        raise DeliveryError(first.topic, first.partition, first.offset, exc) from exc
    edge.batches += 1
    return True

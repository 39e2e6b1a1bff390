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
the messages it was given), a whole-attempt failure by raising a Kafka, OS or Firelake
error, and a lost ownership (a newer worker fenced this one) by raising :class:`Fenced`.

Only transient failures are retried (:func:`failure_kind`). A record the producer refused
itself (:class:`RecordRefused`) goes to the DLQ at once; any other terminal error (an
authorization error, a producer in a fatal state) stops the worker at once with a
:class:`DeliveryError` naming it, its input uncommitted; a fenced worker drops the batch.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from agents.dlq import DeadLetterBatch, DeadLetterSource
from agents.metrics import EdgeStats
from agents.routing import Outgoing, Router
from agents.validation import DELIVERY_FAILED
from firelake.errors import FirelakeError, TerminalError
from streams.envelope import HEADER_COUNT, decode
from streams.kafka_errors import is_transient

__all__ = [
    "Attempt",
    "DeliveryError",
    "FailureKind",
    "Fenced",
    "RecordRefused",
    "Routed",
    "SendFailed",
    "SourceMessage",
    "SourceRecord",
    "app_id",
    "dead_letter_failed",
    "deliver",
    "describe",
    "event_count",
    "failure_kind",
    "refused_at_send",
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


class DeliveryError(TerminalError, RuntimeError):
    """The worker stops: Kafka did not take a batch, and retrying cannot help.

    Raised when even the DLQ fallback was refused, or at once for a terminal error (an
    authorization error, a producer in a fatal state). The batch's input stays uncommitted.
    """

    def __init__(self, topic: str, partition: int, offset: int, cause: BaseException) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.cause = cause
        super().__init__(
            f"could not deliver the envelopes routed from {topic}[{partition}]@{offset}: {cause!r}"
        )


class SendFailed(FirelakeError):
    """Some sends of an attempt failed; ``errors`` holds each message's error or None.

    ``retriable`` when every failed send is (so :func:`firelake.errors.is_retriable` works).
    """

    def __init__(self, errors: list[BaseException | None]) -> None:
        self.errors = errors
        failed = [e for e in errors if e is not None]
        self.retriable = all(failure_kind(e) is FailureKind.TRANSIENT for e in failed)
        super().__init__(f"{len(failed)} sends failed, first: {failed[0]!r}")


class Fenced(TerminalError):
    """Another worker owns the input now: drop the batch; the new owner routes it again."""


class RecordRefused(TerminalError):
    """The producer refused one record itself, before sending it: no retry can send it.

    A message above the producer's own ``max_request_size`` is one: the same bytes never
    fit. Its events go to the DLQ at once (``delivery_failed``), the batch goes on.
    """

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(describe(cause))


class FailureKind(enum.Enum):
    """What a failed send means for its batch."""

    #: May pass by itself: retried with backoff within the budget, then dead-lettered.
    TRANSIENT = "transient"
    #: The record itself cannot be sent: its events go to the DLQ at once.
    RECORD = "record"
    #: Nothing this worker can do: it stops with a DeliveryError, input uncommitted.
    FATAL = "fatal"


def failure_kind(error: BaseException) -> FailureKind:
    """How a failed send or attempt is handled, decided by the error's type.

    Transient: what :func:`streams.kafka_errors.is_transient` says (aiokafka's ``retriable``
    flag, Firelake's own, connection resets, and Kafka's timeouts). One Kafka error aiokafka
    calls terminal is retried all the same: a *broker's* MESSAGE_SIZE_TOO_LARGE is the
    destination topic's ``max.message.bytes``, a setting an operator can raise while the
    retries run (a destination "unavailable for a while"); within the budget it is
    retried, then dead-lettered. The producer's own refusal of a record arrives as
    :class:`RecordRefused` (see :func:`refused_at_send`).
    """
    if isinstance(error, RecordRefused):
        return FailureKind.RECORD
    if is_transient(error) or isinstance(error, MessageSizeTooLargeError):
        return FailureKind.TRANSIENT
    return FailureKind.FATAL


def refused_at_send(error: BaseException) -> BaseException:
    """An error raised by a producer's ``send`` itself, before the record left.

    There, MESSAGE_SIZE_TOO_LARGE is the producer's own size check (:class:`RecordRefused`);
    every other error is returned as it is.
    """
    if isinstance(error, MessageSizeTooLargeError):
        return RecordRefused(error)
    return error


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
    router: Router,
    edge: EdgeStats,
    records: Sequence[SourceRecord],
    keep: Callable[[], bool] | None = None,
) -> list[Routed] | None:
    """:func:`route_records`, in a thread when the router calls a user transform.

    A transform may block for its timeout and sleep between its retries; on the event loop
    that would stall consumer heartbeats (a rebalance) and every other partition. One batch
    at a time per router, since the router's counters and dedup windows are not shared
    across threads.

    ``keep`` is asked once this batch's turn has come (after the wait for the batches ahead
    of it): when it says False — the partition was revoked or fenced meanwhile — nothing is
    routed and the answer is None. Without ``keep`` the answer is never None.
    """
    if router.transform is None:
        if keep is not None and not keep():
            return None
        return route_records(router, edge, records)
    lock = _ROUTE_LOCKS.setdefault(router, asyncio.Lock())
    async with lock:
        if keep is not None and not keep():
            return None
        return await asyncio.to_thread(route_records, router, edge, records)


def dead_letter_failed(
    router: Router,
    routed: Sequence[Routed],
    errors: Sequence[BaseException | None],
    attempts: int,
    first_attempt: str,
) -> list[Routed]:
    """The batch with every refused message replaced by DLQ records of its events.

    ``errors`` is aligned with the batch's messages in order (each record's ``outgoing``).
    Kept messages are the same objects as before, so an engine may recognise the ones it
    already delivered. A refused message that holds no source events (a DLQ envelope) is
    kept, to be sent again: there is no DLQ for the DLQ.
    """
    now = router.dead_letters.now()
    position = 0
    replaced: list[Routed] = []
    for item in routed:
        record = item.record
        keep: list[Outgoing] = []
        dead: DeadLetterBatch | None = None
        envelope = None
        for o in item.outgoing:
            error = errors[position]
            position += 1
            if error is None or not o.origins:
                keep.append(o)
                continue
            if dead is None:
                source = DeadLetterSource(
                    record.topic, record.partition, record.offset, attempts, first_attempt
                )
                dead = DeadLetterBatch(router.dead_letters, source, failed_at=now)
                envelope = decode(record.value, record.headers, record.key)
            assert envelope is not None
            reason = f"{o.stream}[{o.partition}] refused: {describe(error)}"
            for index in dict.fromkeys(o.origins):
                dead.add(
                    envelope.lines[index], index, DELIVERY_FAILED, reason, envelope.key_at(index)
                )
        if dead is not None:
            keep += router.pack_dead(dead.records, record.partition)
        replaced.append(Routed(record, keep))
    return replaced


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

    Transient failures are retried whole until the budget runs out, then the events of the
    refused messages become DLQ records and one last attempt sends them with the rest.
    Records the producer refused go to the DLQ at once (:class:`RecordRefused`); a fatal
    error raises :class:`DeliveryError` at once. ``reset`` runs after every failed attempt
    (the transactional engine replaces its producer there). Returns False when the batch
    was dropped because :class:`Fenced`; raises :class:`DeliveryError` when even the
    fallback was refused.
    """
    policy = router.policy
    first_attempt = router.dead_letters.now()
    first = routed[0].record
    oldest = min((r.record.timestamp for r in routed), default=None)
    retries = 0
    fallback = False  # the DLQ fallback is on its way: one more failure stops the worker
    lost = False  # events went to the DLQ, or the batch was lost: one delivery failure
    try:
        while True:
            out = [o for r in routed for o in r.outgoing]
            try:
                await attempt(out)
            except Fenced:
                return False
            except (KafkaError, FirelakeError, OSError) as exc:
                failure: BaseException = exc
            else:
                edge.batches += 1
                return True
            errors = failure.errors if isinstance(failure, SendFailed) else [failure] * len(out)
            kinds = [None if e is None else failure_kind(e) for e in errors]
            # A refused DLQ envelope (no source events) cannot be dead-lettered in turn.
            fatal = fallback or any(
                kind is FailureKind.FATAL or (kind is FailureKind.RECORD and not o.origins)
                for kind, o in zip(kinds, out, strict=True)
            )
            if fatal:
                lost = True
                raise DeliveryError(
                    first.topic, first.partition, first.offset, failure
                ) from failure
            refused = [
                e if k is FailureKind.RECORD else None for e, k in zip(errors, kinds, strict=True)
            ]
            transient = FailureKind.TRANSIENT in kinds
            if transient and policy.may_retry(retries) and not policy.too_old(oldest, time.time()):
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
                if any(refused):
                    lost = True
                    routed = dead_letter_failed(router, routed, refused, retries, first_attempt)
                if reset is not None:
                    await reset()
                await sleep(delay)
                continue
            # Out of budget (or nothing to wait for): dead-letter only the refused messages.
            fallback = transient
            lost = True
            routed = dead_letter_failed(router, routed, errors, retries + 1, first_attempt)
            if reset is not None:
                await reset()
    finally:
        if lost:
            edge.delivery_failures += 1

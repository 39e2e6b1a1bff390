"""Unit tests: the edge logic both router engines share (retries, DLQ fallback, counters).

``deliver`` is driven by attempt functions that stand for an engine's send step (the
real engines send to Kafka; these decide the outcome), with waits of zero seconds.
"""

from __future__ import annotations

import asyncio
import copy
import random
from typing import Any

import orjson
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    ProducerFenced,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from agents.edge import (
    DeliveryError,
    FailureKind,
    Fenced,
    RecordRefused,
    SendFailed,
    SourceMessage,
    dead_letter_failed,
    deliver,
    describe,
    event_count,
    failure_kind,
    refused_at_send,
    route_records,
    route_records_off_loop,
)
from agents.metrics import EdgeStats
from agents.routing import Outgoing, Router
from agents.transform import TransformRunner
from firelake.config import parse_config
from firelake.errors import TerminalError, is_retriable
from firelake.testing import example_data, sample_event
from streams.envelope import decode, encode


def make_router(**settings: Any) -> Router:
    data = copy.deepcopy(example_data())
    data["routers"]["clickstream"].update(
        {"retry_base_seconds": 0.0, "retry_max_seconds": 0.0, **settings}
    )
    return Router(parse_config(data, source="<test>", environ={}), "clickstream")


def raw_record(events: list[dict[str, Any]], offset: int = 5) -> SourceMessage:
    keys = [e["user_id"] for e in events]
    value, headers = encode([orjson.dumps(e) for e in events], keys, 0, 0)
    return SourceMessage(
        "raw-events", 1, offset, 1_700_000_000_000, keys[0].encode(), value, headers
    )


async def no_wait(_: float) -> None:
    return None


def run_deliver(router: Router, edge: EdgeStats, routed: list, attempt: Any, **kw: Any) -> bool:
    return asyncio.run(
        deliver(router, edge, routed, attempt, rng=random.Random(1), sleep=no_wait, **kw)
    )


def test_route_records_routes_in_order_and_records_the_iterator_age() -> None:
    router, edge = make_router(), EdgeStats()
    records = [raw_record([sample_event(n)], offset=n) for n in range(3)]
    routed = route_records(router, edge, records)
    assert [r.record.offset for r in routed] == [0, 1, 2]
    assert all(r.outgoing for r in routed)
    assert router.stats.messages == 3
    assert edge.age_s[("raw-events", 1)] > 0


def test_a_failing_attempt_is_retried_and_counted_then_succeeds() -> None:
    router, edge = make_router(max_retry_attempts=3), EdgeStats()
    routed = route_records(router, edge, [raw_record([sample_event(0)])])
    calls: list[list[Outgoing]] = []
    resets: list[int] = []

    async def attempt(out: list[Outgoing]) -> None:
        calls.append(out)
        if len(calls) < 3:
            raise KafkaConnectionError("down")

    async def reset() -> None:
        resets.append(1)

    assert run_deliver(router, edge, routed, attempt, reset=reset)
    assert len(calls) == 3 and calls[0] == calls[2]
    assert (edge.retries, edge.batches, edge.delivery_failures) == (2, 1, 0)
    assert len(resets) == 2


def test_out_of_retries_only_refused_envelopes_become_dlq_records() -> None:
    router, edge = make_router(max_retry_attempts=2), EdgeStats()
    events = [sample_event(0, "start"), sample_event(1, "click"), sample_event(2, "stop")]
    routed = route_records(router, edge, [raw_record(events)])
    out = routed[0].outgoing
    refused = next(i for i, o in enumerate(out) if o.stream == "page-events")
    calls: list[list[Outgoing]] = []

    async def attempt(batch: list[Outgoing]) -> None:
        calls.append(batch)
        if any(o.stream == "page-events" for o in batch):
            errors: list[BaseException | None] = [None] * len(batch)
            errors[refused] = MessageSizeTooLargeError("too big")
            raise SendFailed(errors)

    assert run_deliver(router, edge, routed, attempt)
    assert len(calls) == 4  # the first try, two retries, the fallback
    assert (edge.retries, edge.delivery_failures, edge.batches) == (2, 1, 1)
    last = calls[-1]
    # Accepted envelopes stay the same objects (an engine can skip what it delivered).
    kept = [o for o in last if o.stream != "dlq"]
    assert len(kept) == len(out) - 1
    assert all(any(k is o for o in out) for k in kept)
    (dlq,) = [o for o in last if o.stream == "dlq"]
    (record,) = [orjson.loads(line) for line in decode(dlq.value, dlq.headers, dlq.key).lines]
    assert record["error_type"] == "delivery_failed"
    assert record["attempts"] == 3
    assert record["source_index"] == 1 and record["source_offset"] == 5
    assert "page-events[" in record["reason"] and "MessageSizeTooLargeError" in record["reason"]
    assert router.stats.dead_lettered == {"delivery_failed": 1}


def test_a_refused_fallback_raises_delivery_error_naming_the_input() -> None:
    router, edge = make_router(max_retry_attempts=0), EdgeStats()
    routed = route_records(router, edge, [raw_record([sample_event(0)], offset=42)])

    async def attempt(_: list[Outgoing]) -> None:
        raise KafkaConnectionError("down")

    with pytest.raises(DeliveryError, match=r"raw-events\[1\]@42"):
        run_deliver(router, edge, routed, attempt)
    assert edge.batches == 0 and edge.delivery_failures == 1


def test_fenced_drops_the_batch_without_retrying() -> None:
    router, edge = make_router(), EdgeStats()
    routed = route_records(router, edge, [raw_record([sample_event(0)])])

    async def attempt(_: list[Outgoing]) -> None:
        raise Fenced

    assert not run_deliver(router, edge, routed, attempt)
    assert (edge.retries, edge.batches) == (0, 0)


def test_dead_letter_failed_keeps_accepted_messages_and_their_order() -> None:
    router, edge = make_router(), EdgeStats()
    routed = route_records(router, edge, [raw_record([sample_event(0, "start")])])
    out = routed[0].outgoing
    replaced = dead_letter_failed(router, routed, [None] * len(out), 1, "t")
    same = [o for item in replaced for o in item.outgoing]
    assert same == out


def test_event_count_and_describe() -> None:
    assert event_count([("fl-count", b"7")]) == 7
    assert event_count([("fl-count", b"x")]) == 1
    assert event_count(None) == 1
    error = SendFailed([None, MessageSizeTooLargeError("big")])
    assert describe(error).startswith("MessageSizeTooLargeError")


def test_a_blocking_transform_does_not_stall_the_event_loop() -> None:
    """A transform that blocks (as a slow one or a retry wait does) runs off the loop, so
    heartbeats and other partitions go on meanwhile."""
    import time as clock

    def slow(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        clock.sleep(0.3)
        return events

    data = copy.deepcopy(example_data())
    config = parse_config(data, source="<test>", environ={})
    router = Router(config, "clickstream", transform=TransformRunner(slow, timeout_s=0))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main() -> list:
        task = asyncio.create_task(ticker())
        routed = await route_records_off_loop(router, EdgeStats(), [raw_record([sample_event(1)])])
        task.cancel()
        return routed

    routed = asyncio.run(main())
    assert len(routed) == 1 and routed[0].outgoing
    assert ticks >= 10, f"the event loop ran only {ticks} ticks during a 0.3 s transform"


# ------------------------------------------------------------------ terminal vs transient


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (KafkaConnectionError("down"), FailureKind.TRANSIENT),
        (KafkaTimeoutError(), FailureKind.TRANSIENT),  # aiokafka: not retriable; a broker away
        (RequestTimedOutError(), FailureKind.TRANSIENT),
        (NotLeaderForPartitionError(), FailureKind.TRANSIENT),
        (ConnectionResetError("reset"), FailureKind.TRANSIENT),
        (MessageSizeTooLargeError(), FailureKind.TRANSIENT),  # the broker's: a topic setting
        (RecordRefused(MessageSizeTooLargeError("over max_request_size")), FailureKind.RECORD),
        (TopicAuthorizationFailedError(), FailureKind.FATAL),
        (TransactionalIdAuthorizationFailed("tx"), FailureKind.FATAL),
        (ProducerFenced(), FailureKind.FATAL),
        (PermissionError("denied"), FailureKind.FATAL),
    ],
)
def test_failures_are_classified_by_type(error: BaseException, kind: FailureKind) -> None:
    assert failure_kind(error) is kind


def test_a_record_the_producer_refuses_at_send_is_terminal_for_that_record_only() -> None:
    refused = refused_at_send(MessageSizeTooLargeError("over max_request_size"))
    assert isinstance(refused, RecordRefused) and not is_retriable(refused)
    assert "MessageSizeTooLargeError" in str(refused)
    timeout = KafkaTimeoutError()
    assert refused_at_send(timeout) is timeout


def test_firelake_errors_of_the_edge_say_whether_they_are_retriable() -> None:
    assert not is_retriable(Fenced())
    assert isinstance(DeliveryError("t", 0, 1, KafkaConnectionError()), TerminalError)
    assert is_retriable(SendFailed([None, KafkaConnectionError("down")]))
    assert not is_retriable(SendFailed([KafkaConnectionError(), TopicAuthorizationFailedError()]))
    assert not is_retriable(SendFailed([RecordRefused(MessageSizeTooLargeError())]))


def test_a_record_refused_by_the_producer_goes_to_the_dlq_at_once_without_retries() -> None:
    router, edge = make_router(max_retry_attempts=5), EdgeStats()
    events = [sample_event(0, "start"), sample_event(1, "click")]
    routed = route_records(router, edge, [raw_record(events)])
    calls: list[list[Outgoing]] = []

    async def attempt(batch: list[Outgoing]) -> None:
        calls.append(batch)
        errors: list[BaseException | None] = [None] * len(batch)
        for index, o in enumerate(batch):
            if o.stream == "page-events":
                errors[index] = RecordRefused(MessageSizeTooLargeError("over the limit"))
        if any(errors):
            raise SendFailed(errors)

    assert run_deliver(router, edge, routed, attempt)
    assert len(calls) == 2  # the try, then the replacement: no retry, no wait
    assert (edge.retries, edge.delivery_failures, edge.batches) == (0, 1, 1)
    (dlq,) = [o for o in calls[-1] if o.stream == "dlq"]
    (record,) = [orjson.loads(line) for line in decode(dlq.value, dlq.headers, dlq.key).lines]
    assert record["error_type"] == "delivery_failed" and record["attempts"] == 1
    assert record["source_index"] == 1 and "RecordRefused" in record["reason"]


def test_a_refused_record_beside_a_transient_failure_is_dead_lettered_and_the_rest_retried() -> (
    None
):
    router, edge = make_router(max_retry_attempts=3), EdgeStats()
    events = [sample_event(0, "start"), sample_event(1, "click")]
    routed = route_records(router, edge, [raw_record(events)])
    calls: list[list[Outgoing]] = []

    async def attempt(batch: list[Outgoing]) -> None:
        calls.append(batch)
        if len(calls) > 1:
            return
        errors: list[BaseException | None] = [
            RecordRefused(MessageSizeTooLargeError())
            if o.stream == "page-events"
            else KafkaConnectionError("down")
            for o in batch
        ]
        raise SendFailed(errors)

    assert run_deliver(router, edge, routed, attempt)
    assert (edge.retries, edge.delivery_failures, edge.batches) == (1, 1, 1)
    assert sorted(o.stream for o in calls[1]) == ["dlq", "playback-events"]


@pytest.mark.parametrize(
    "error", [TopicAuthorizationFailedError(), TransactionalIdAuthorizationFailed("tx")]
)
def test_a_terminal_error_stops_the_worker_at_once(error: BaseException) -> None:
    router, edge = make_router(max_retry_attempts=5), EdgeStats()
    routed = route_records(router, edge, [raw_record([sample_event(0)], offset=9)])
    calls: list[list[Outgoing]] = []

    async def attempt(batch: list[Outgoing]) -> None:
        calls.append(batch)
        raise error

    with pytest.raises(DeliveryError, match=type(error).__name__) as caught:
        run_deliver(router, edge, routed, attempt)
    assert caught.value.cause is error and r"raw-events[1]@9" in str(caught.value)
    assert len(calls) == 1 and (edge.retries, edge.batches, edge.delivery_failures) == (0, 0, 1)
    assert router.stats.dead_lettered == {}


def test_a_dlq_envelope_the_producer_refuses_stops_the_worker() -> None:
    router, edge = make_router(), EdgeStats()
    routed = route_records(router, edge, [raw_record([{"event_type": "nope", "user_id": "u"}])])
    assert [o.stream for o in routed[0].outgoing] == ["dlq"]

    async def attempt(batch: list[Outgoing]) -> None:
        raise SendFailed([RecordRefused(MessageSizeTooLargeError())] * len(batch))

    with pytest.raises(DeliveryError):
        run_deliver(router, edge, routed, attempt)


def test_the_fallback_keeps_the_routers_own_dlq_records() -> None:
    """A whole batch refused past its budget: the bad-data records are sent again, not lost."""
    router, edge = make_router(max_retry_attempts=0), EdgeStats()
    events = [sample_event(0, "start"), {"event_type": "nope", "user_id": "u"}]
    routed = route_records(router, edge, [raw_record(events)])
    calls: list[list[Outgoing]] = []

    async def attempt(batch: list[Outgoing]) -> None:
        calls.append(batch)
        if len(calls) == 1:
            raise KafkaConnectionError("down")

    assert run_deliver(router, edge, routed, attempt)
    dead = [
        orjson.loads(line)["error_type"]
        for o in calls[-1]
        if o.stream == "dlq"
        for line in decode(o.value, o.headers, o.key).lines
    ]
    assert sorted(dead) == ["delivery_failed", "no_route"]

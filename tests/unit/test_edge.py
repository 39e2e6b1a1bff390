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
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from agents.edge import (
    DeliveryError,
    Fenced,
    SendFailed,
    SourceMessage,
    dead_letter_failed,
    deliver,
    describe,
    event_count,
    route_records,
    route_records_off_loop,
)
from agents.metrics import EdgeStats
from agents.routing import Outgoing, Router
from agents.transform import TransformRunner
from firelake.config import parse_config
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
    same = dead_letter_failed(router, routed, [None] * len(out), 1, "t")
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

"""Unit tests: the router's Faust agent under Faust's own test harness (``test_context``).

Faust documents agent testing as ``async with agent.test_context() as agent: await
agent.put(...)``: no broker is contacted. The agent's deliveries go to a ``send`` function
the test holds (``build_app(send=...)``), whose futures the test confirms or fails, so
the tests see exactly when the agent acks its input.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError

from agents.edge import DeliveryError
from agents.faust_agent import agent_name, build_app, record_of
from agents.routing import Outgoing
from firelake.config import ConfigError, parse_config
from firelake.testing import example_data, sample_event
from streams.envelope import decode, encode

WAIT_SECONDS = 10.0


def make_config(**settings: Any) -> Any:
    data = copy.deepcopy(example_data())
    data["routers"]["clickstream"].update(
        {"engine": "faust", "retry_base_seconds": 0.0, "retry_max_seconds": 0.0, **settings}
    )
    return parse_config(data, source="<test>", environ={})


def raw(events: list[dict[str, Any]]) -> tuple[bytes, list[tuple[str, bytes]], bytes]:
    keys = [e["user_id"] for e in events]
    value, headers = encode([orjson.dumps(e) for e in events], keys, 0, 0)
    return value, headers, keys[0].encode()


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Broker:
    """Stands in for Kafka's acknowledgements: each send gets a future the test settles."""

    def __init__(self) -> None:
        self.sent: list[tuple[Outgoing, asyncio.Future[None]]] = []
        self.auto: Callable[[Outgoing], BaseException | None] | None = None

    async def send(self, o: Outgoing) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((o, future))
        if self.auto is not None:
            error = self.auto(o)
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
        return future


def events_sent(broker: Broker, stream: str) -> list[dict[str, Any]]:
    found = []
    for o, future in broker.sent:
        if o.stream == stream and future.done() and future.exception() is None:
            envelope = decode(o.value, o.headers, o.key)
            found.extend(orjson.loads(line) for line in envelope.lines)
    return found


def test_the_agent_acks_a_message_only_after_its_deliveries_are_confirmed(
    tmp_path: Path,
) -> None:
    config = make_config()
    broker = Broker()
    app = build_app(config, "clickstream", "127.0.0.1:1", datadir=tmp_path, send=broker.send)
    agent = app.agents[agent_name("clickstream")]
    events = [
        sample_event(0, "start"),
        sample_event(1, "click"),
        {"event_type": "bogus", "user_id": "u"},
    ]

    async def scenario() -> None:
        async with agent.test_context() as tested:
            value, headers, key = raw(events)
            event = await tested.put(value, key=key, headers=headers, partition=2)
            await until(lambda: len(broker.sent) == 3, "three envelopes: playback, page, DLQ")
            await asyncio.sleep(0.05)
            assert not event.message.acked  # sent, not yet confirmed
            for _, future in broker.sent[:2]:
                future.set_result(None)
            await asyncio.sleep(0.05)
            assert not event.message.acked  # one delivery still pending
            broker.sent[2][1].set_result(None)
            await until(lambda: event.message.acked, "the ack")

    asyncio.run(scenario())
    streams = {o.stream: o for o, _ in broker.sent}
    assert set(streams) == {"playback-events", "page-events", "dlq"}
    assert all(o.partition is not None and o.headers for o in streams.values())
    assert [e["event_id"] for e in events_sent(broker, "playback-events")] == ["evt-00000000"]
    assert events_sent(broker, "dlq")[0]["error_type"] == "no_route"
    edge = app.router_edge.edge
    assert (edge.batches, edge.retries) == (1, 0)
    assert app.router_edge.router.stats.events_in == 3


def test_a_refused_envelope_is_retried_alone_then_dead_lettered(tmp_path: Path) -> None:
    config = make_config(max_retry_attempts=2)
    broker = Broker()
    broker.auto = lambda o: KafkaConnectionError("down") if o.stream == "page-events" else None
    app = build_app(config, "clickstream", "127.0.0.1:1", datadir=tmp_path, send=broker.send)
    agent = app.agents[agent_name("clickstream")]

    async def scenario() -> None:
        async with agent.test_context() as tested:
            value, headers, key = raw([sample_event(0, "start"), sample_event(1, "click")])
            event = await tested.put(value, key=key, headers=headers)
            await until(lambda: event.message.acked, "the ack after the DLQ fallback")

    asyncio.run(scenario())
    by_stream = [o.stream for o, _ in broker.sent]
    # The confirmed playback envelope is never sent again; the page one is tried three times.
    assert by_stream.count("playback-events") == 1
    assert by_stream.count("page-events") == 3
    (dead,) = events_sent(broker, "dlq")
    assert dead["error_type"] == "delivery_failed" and dead["attempts"] == 3
    edge = app.router_edge.edge
    assert (edge.retries, edge.delivery_failures, edge.batches) == (2, 1, 1)


def test_the_agent_crashes_without_acking_when_even_the_dlq_refuses(tmp_path: Path) -> None:
    config = make_config(max_retry_attempts=0)
    broker = Broker()
    broker.auto = lambda o: KafkaConnectionError("down")
    app = build_app(config, "clickstream", "127.0.0.1:1", datadir=tmp_path, send=broker.send)
    agent = app.agents[agent_name("clickstream")]
    events: list[Any] = []

    async def scenario() -> None:
        async with agent.test_context() as tested:
            value, headers, key = raw([sample_event(0, "start")])
            events.append(await tested.put(value, key=key, headers=headers, wait=False))
            await until(lambda: tested.crash_reason is not None, "the crash")
            assert isinstance(tested.crash_reason, DeliveryError)

    asyncio.run(scenario())
    assert not events[0].message.acked


def test_record_of_converts_the_timestamp_to_milliseconds() -> None:
    class Message:
        topic, partition, offset, key, value = "t", 1, 2, b"k", b"v"
        timestamp = 1_700_000_000.123
        headers = {"fl-count": b"1"}

    record = record_of(Message())
    assert record.timestamp == 1_700_000_000_123
    assert record.headers == [("fl-count", b"1")]


def test_config_validates_the_engine() -> None:
    assert make_config().routers["clickstream"].engine == "faust"
    data = copy.deepcopy(example_data())
    assert parse_config(data, source="<t>", environ={}).routers["clickstream"].engine == (
        "transactional"
    )
    data["routers"]["clickstream"]["engine"] = "kafka"
    with pytest.raises(ConfigError, match="engine"):
        parse_config(data, source="<t>", environ={})
    data["routers"]["clickstream"].update(
        engine="faust", starting_position="AT_TIMESTAMP", starting_timestamp="2026-01-01T00:00:00"
    )
    with pytest.raises(ConfigError, match="AT_TIMESTAMP needs engine"):
        parse_config(data, source="<t>", environ={})


def test_the_router_and_window_faust_apps_share_their_settings(tmp_path) -> None:
    from agents.faust_agent import build_app
    from agents.faust_window import build_window_app
    from firelake.testing import example_config

    config = example_config("127.0.0.1:1,127.0.0.2:1", tmp_path)
    router = build_app(config, next(iter(config.routers)), datadir=tmp_path / "r")
    window = build_window_app(config, next(iter(config.windows)), datadir=tmp_path / "w")
    for app in (router, window):
        conf = app.conf
        assert [str(b) for b in conf.broker] == ["kafka://127.0.0.1:1", "kafka://127.0.0.2:1"]
        assert (conf.broker_session_timeout, conf.broker_heartbeat_interval) == (10.0, 3.0)
        assert (conf.stream_buffer_maxsize, conf.producer_acks) == (256, -1)
        assert conf.topic_allow_declare is False and conf.web_enabled is False
    assert router.conf.producer_max_request_size == 1024 * 1024
    assert window.conf.producer_max_request_size == 8 * 1024 * 1024

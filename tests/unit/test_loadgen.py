"""The load generator: realistic, reproducible events; invalid mix; pacing; accounting."""

from __future__ import annotations

import asyncio
import math
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp import web

from firelake.config import EXAMPLE_CONFIG, FirelakeConfig, load_config
from streams.loadgen import (
    INVALID_KINDS,
    PAGE_TYPES,
    PLAYBACK_TYPES,
    EventGenerator,
    TokenBucket,
    batch_sizes,
    send,
    send_shaped,
)

NOW = datetime(2026, 11, 29, 20, 0, tzinfo=UTC)


def fixed_now() -> datetime:
    return NOW


@pytest.fixture(scope="module")
def config() -> FirelakeConfig:
    """The shipped example configuration, whose schemas and routes the events target."""
    return load_config(EXAMPLE_CONFIG, environ={})


def problems(data: Any, config: FirelakeConfig) -> list[str]:
    """What keeps an event from routing into the example config's typed streams."""
    if not isinstance(data, dict):
        return [f"not an object: {type(data).__name__}"]
    router = next(iter(config.routers.values()))
    targets = router.routes.get(data.get("event_type"))
    if not targets:
        return [f"no route for event_type {data.get('event_type')!r}"]
    schema = config.schema_of(targets[0])
    assert schema is not None
    found = []
    for name in schema.required:
        if name not in data:
            found.append(f"missing {name}")
    for spec in schema.fields:
        if spec.name not in data:
            continue
        value = data[spec.name]
        ok = {
            "string": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "timestamp": isinstance(value, str) and value.endswith("Z"),
        }[spec.type]
        if not ok:
            found.append(f"{spec.name} is not {spec.type}: {value!r}")
        elif spec.type == "timestamp":
            datetime.fromisoformat(value)
    unknown = set(data) - {s.name for s in schema.fields}
    if unknown:
        found.append(f"unknown fields {sorted(unknown)}")
    return found


def test_same_seed_same_events() -> None:
    first = EventGenerator(seed=7, invalid_ratio=0.1, now=fixed_now).records(500)
    again = EventGenerator(seed=7, invalid_ratio=0.1, now=fixed_now).records(500)
    other = EventGenerator(seed=8, invalid_ratio=0.1, now=fixed_now).records(500)
    assert first == again
    assert first != other


def test_valid_events_are_well_formed_and_varied(config: FirelakeConfig) -> None:
    records = EventGenerator(seed=1, now=fixed_now).records(10_000)

    for record in records:
        assert record.invalid is None
        assert problems(record.data, config) == [], record.data
        assert record.partition_key == record.data["user_id"]
        lag = (NOW - datetime.fromisoformat(record.data["event_time"])).total_seconds()
        assert 0 <= lag <= 30
    events = [r.data for r in records]
    assert len({e["event_id"] for e in events}) == len(events)
    assert {e["event_type"] for e in events} == set(PLAYBACK_TYPES) | set(PAGE_TYPES)
    for name, at_least in (("device", 4), ("platform", 5), ("product", 3), ("language", 3)):
        assert len({e[name] for e in events}) >= at_least, name
    assert len({e["user_id"] for e in events}) > 500
    # Popular content is popular: the top content id has many plays, most ids few.
    plays = Counter(e["content_id"] for e in events if e["event_type"] == "start")
    assert plays.most_common(1)[0][1] >= 5 * (sum(plays.values()) / len(plays))


def test_sessions_follow_the_playback_state_machine() -> None:
    # One live session at a time: each user's events are one ordered session.
    records = EventGenerator(seed=3, sessions=1, now=fixed_now).records(5_000)
    state, content, position = "browsing", None, 0
    user = None
    for record in records:
        event = record.data
        if event["user_id"] != user:
            assert state == "browsing", "a session ended during playback"
            user = event["user_id"]
        kind = event["event_type"]
        if kind in PAGE_TYPES:
            assert state == "browsing", f"{kind} during {state}"
            continue
        if kind == "start" and state == "browsing":
            assert event["position_seconds"] == 0
            content, state = event["content_id"], "playing"
        elif kind == "start":
            assert state == "paused" and event["position_seconds"] == position
            state = "playing"
        elif kind == "heartbeat":
            assert state == "playing" and event["position_seconds"] == position + 30
        elif kind == "pause":
            assert state == "playing" and event["position_seconds"] == position
            state = "paused"
        elif kind == "stop":
            assert state in ("playing", "paused") and event["position_seconds"] >= position
            state = "browsing"
        assert event["content_id"] == content
        position = event["position_seconds"]


def test_invalid_ratio_is_honoured(config: FirelakeConfig) -> None:
    records = EventGenerator(seed=5, invalid_ratio=0.2, now=fixed_now).records(10_000)

    bad = [r for r in records if r.invalid]
    assert 0.18 <= len(bad) / len(records) <= 0.22
    assert {r.invalid for r in bad} == set(INVALID_KINDS)
    for record in records:
        if record.invalid:
            assert problems(record.data, config), (record.invalid, record.data)
        else:
            assert problems(record.data, config) == []
    shapes = {type(r.data).__name__ for r in bad if r.invalid == "not_object"}
    assert shapes == {"str", "list", "int"}


def test_invalid_ratio_extremes() -> None:
    assert not any(r.invalid for r in EventGenerator(seed=1).records(2_000))
    assert all(r.invalid for r in EventGenerator(seed=1, invalid_ratio=1.0).records(500))
    with pytest.raises(ValueError, match="invalid_ratio"):
        EventGenerator(invalid_ratio=1.5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_paces_and_bounds_bursts() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=10, clock=clock)

    # Starts empty: 10 tokens take 0.1 s.
    assert bucket.reserve(10) == pytest.approx(0.1)
    clock.now = 0.1
    assert bucket.reserve(10) == pytest.approx(0.1)
    # A sender that always waits as told sends exactly rate x time.
    sent = 20
    while clock.now < 10.0:
        clock.now += bucket.reserve(10)
        sent += 10
    assert sent == pytest.approx(100 * clock.now + 10, abs=10)
    # Idle for a minute: only the burst is saved up, then pacing resumes.
    clock.now += 60
    assert bucket.reserve(10) == 0.0
    assert bucket.reserve(10) == pytest.approx(0.1)
    # Asking for more than the burst goes into debt rather than blocking forever.
    clock.now += 60
    assert bucket.reserve(30) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=math.inf, burst=1)


def test_batch_sizes() -> None:
    assert batch_sizes(250, rate=1000, batch_size=500) == [100, 100, 50]
    assert batch_sizes(1200, rate=1_000_000, batch_size=500) == [500, 500, 200]
    assert batch_sizes(3, rate=0.5, batch_size=500) == [1, 1, 1]
    assert sum(batch_sizes(12_345, rate=42_000, batch_size=300)) == 12_345


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "count"),
        ({"duration": math.inf}, "duration"),
        ({"rate": 0}, "rate"),
        ({"batch_size": 501}, "batch_size"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_send_refuses_unbounded_or_bad_arguments(kwargs: dict, message: str) -> None:
    args: dict[str, Any] = {"rate": 100.0, "count": 10, "duration": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        asyncio.run(send("http://127.0.0.1:9", "raw", **args))


@asynccontextmanager
async def fake_ingest(requests: list[list[dict]]) -> AsyncIterator[str]:
    """A small HTTP service answering like the ingest: every third request is refused
    whole; records whose data is not an object fail one by one."""

    async def put(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        records = body["records"]
        requests.append(records)
        if len(requests) % 3 == 0:
            error = {"error": {"code": "Throttled", "message": "slow down"}}
            return web.json_response(error, status=503)
        results = [
            {"partition": 0, "sequence_number": str(i), "offset": i}
            if isinstance(r["data"], dict)
            else {"error_code": "NotAnObject", "error_message": "data must be an object"}
            for i, r in enumerate(records)
        ]
        failed = sum(1 for r in results if "error_code" in r)
        return web.json_response({"failed_record_count": failed, "records": results})

    app = web.Application()
    app.router.add_post("/v1/streams/{stream}/records", put)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def test_send_counts_every_outcome() -> None:
    requests: list[list[dict]] = []

    async def run() -> Any:
        async with fake_ingest(requests) as url:
            return await send(
                url, "raw-events", rate=20_000, count=1_200, duration=30,
                batch_size=100, concurrency=3, invalid_ratio=0.25, seed=11,
            )  # fmt: skip

    report = asyncio.run(run())

    assert report.requests == len(requests) == 12
    assert all(len(batch) == 100 for batch in requests)
    assert report.sent == 1_200
    refused = sum(len(b) for i, b in enumerate(requests, 1) if i % 3 == 0)
    not_objects = sum(
        1 for i, b in enumerate(requests, 1) if i % 3 for r in b if not isinstance(r["data"], dict)
    )
    assert report.rejected_requests == 4 and report.rejected_events == refused
    assert report.failed == not_objects > 0
    assert report.accepted == 1_200 - refused - not_objects
    assert report.errors["Throttled"] == refused
    assert report.errors["NotAnObject"] == not_objects
    assert 0 < report.invalid < 1_200
    for batch in requests:
        for record in batch:
            if isinstance(record["data"], dict) and "user_id" in record["data"]:
                assert record["partition_key"] == record["data"]["user_id"]
    assert "accepted" in str(report) and "Throttled" in str(report)


def test_send_stops_at_the_duration() -> None:
    requests: list[list[dict]] = []

    async def run() -> Any:
        async with fake_ingest(requests) as url:
            return await send(url, "raw", rate=200, count=100_000, duration=0.5, seed=1)

    report = asyncio.run(run())

    # 200 events/s for 0.5 s, batches of 0.1 s: never more than the paced share.
    assert 0 < report.sent <= 200 * 0.5
    assert report.sent == sum(len(b) for b in requests)


def test_send_to_nothing_reports_connection_errors() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    report = asyncio.run(
        send(f"http://127.0.0.1:{port}", "raw", rate=1000, count=300, duration=5, seed=1)
    )
    assert report.sent == report.rejected_events == 300
    assert report.rejected_requests == report.requests > 0
    assert report.accepted == 0
    assert sum(report.errors.values()) == 300
    assert report.samples


class _Steady:
    """A load shape of a steady rate (what send_shaped asks of a shape)."""

    duration = 5.0

    def rate_at(self, t: float) -> float:
        return 2_000.0

    def expected_events(self) -> int:
        return int(2_000 * self.duration)


def test_send_shaped_counts_an_answer_it_cannot_read_instead_of_ending_the_run() -> None:
    # A 200 answer without one result per record (a proxy, a bug): _post counted it as
    # BadResponse; send_shaped raised inside its task group and the whole run ended.
    answers = iter([b"not json", b'{"records": []}', b"[]"] * 10)

    async def put(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=next(answers), content_type="application/json")

    async def run() -> Any:
        app = web.Application()
        app.router.add_post("/v1/streams/{stream}/records", put)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            return await send_shaped(url, "raw", _Steady(), count=300, batch_size=100, seed=1)
        finally:
            await runner.cleanup()

    report = asyncio.run(run())
    assert report.sent == 300 and report.accepted == 0
    assert report.rejected_requests == report.requests > 0
    assert report.rejected_events == report.errors["BadResponse"] == 300

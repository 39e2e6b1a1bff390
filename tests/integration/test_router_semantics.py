"""Integration: the router's Lambda event-source-mapping semantics on the real broker.

Issue 4's proofs not covered elsewhere, each with ``python -m agents.router`` as a subprocess
and its counters read from its ``/metrics`` endpoint (``firelake status`` for the filters):

- a destination unavailable for a while (the broker refuses its messages): retried with
  backoff, then delivered once each, nothing dead-lettered — on both engines;
- idempotency: a repeated event id within ``dedup_window_seconds`` (a second raw message, or
  twice in one envelope) is routed once, and again after the window; a redriven event is not
  a duplicate of its own failed try;
- filters: EventBridge exact, prefix, numeric, exists and anything-but matchers;
- a ``module:function`` transform: Ok (changed), Dropped, ProcessingFailed, and a raise for
  one event of a batch, bisected so only that event is dead-lettered.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.dlq_tools import Selection, redrive
from agents.status import router_status
from firelake.broker import free_port
from firelake.config import FirelakeConfig
from firelake.testing import sample_event
from tests.integration.routerkit import (
    Received,
    alter_topic_config,
    metrics,
    produce,
    raw_envelopes,
    read_committed,
    router_config,
    start_router,
    tail,
    wait_for_metric,
)
from tests.integration.routerkit import running as running  # the fixture

pytestmark = pytest.mark.kafka

#: Longest wait for the router's output; every test normally finishes far sooner.
WAIT_SECONDS = 30.0
ENGINES = ("transactional", "faust")


def ids_of(received: Received, *streams: str) -> Counter[str]:
    """How often each event id arrived in the given streams."""
    return Counter(e["event_id"] for s in streams for _, e, _ in received[s])


def setup(
    tmp_path: Path, bootstrap: str, lake: Path, suffix: str, **settings: Any
) -> tuple[Path, FirelakeConfig, str, int]:
    """The example router (4 raw partitions) with ``settings`` and a metrics port; its topics
    created; (config path, config, router name, metrics port)."""
    port = free_port()
    path, config, name = router_config(
        tmp_path, bootstrap, lake, suffix, partitions=4, metrics_port=port, **settings
    )
    return path, config, name, port


def stop(proc: Any, log_path: Path) -> None:
    """SIGTERM, and the router must stop cleanly (it did not crash on the way)."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, tail(log_path)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_destination_unavailable_for_a_while_gets_every_event_once_after_retries(
    engine: str, tmp_path: Path, kafka_bootstrap: str, suffix: str, lake: Path, running: list
) -> None:
    # The budget is the record age (30 s), not a count: the outage below lasts ~4 s, and
    # retries wait at most 0.5 s each, so the first retry after the repair delivers.
    path, config, name, port = setup(
        tmp_path,
        kafka_bootstrap,
        lake,
        suffix,
        engine=engine,
        max_retry_attempts=-1,
        max_record_age_seconds=30.0,
        retry_base_seconds=0.05,
        retry_max_seconds=0.5,
    )
    spec = config.routers[name]
    playback, page = spec.routes["start"][0], spec.routes["click"][0]
    # The page stream refuses every message: an envelope is far above 128 bytes. The
    # playback stream stays up, so a batch fails only in part (ReportBatchItemFailures).
    alter_topic_config(kafka_bootstrap, page, {"max.message.bytes": "128"})
    proc, log_path = start_router(tmp_path, path, name, kafka_bootstrap)
    running.append(proc)
    assert wait_for_metric(port, bool, WAIT_SECONDS), tail(log_path)
    events = [sample_event(n) for n in range(300)]
    records = [(e["user_id"], orjson.dumps(e)) for e in events]
    asyncio.run(produce(kafka_bootstrap, spec.source, raw_envelopes(records, 4)))

    during = wait_for_metric(port, lambda m: m.get("retried", 0) >= 5, WAIT_SECONDS)
    assert during.get("retried", 0) >= 5, tail(log_path)
    time.sleep(2.0)  # the destination stays down for a while: still retrying, not giving up
    assert metrics(port).get("dead_lettered", 0) == 0, tail(log_path)
    assert proc.poll() is None, tail(log_path)
    alter_topic_config(kafka_bootstrap, page, {"max.message.bytes": None})

    topics = {playback: 4, page: 4, spec.dlq: 1}
    got = asyncio.run(
        read_committed(kafka_bootstrap, topics, len(events), time.monotonic() + WAIT_SECONDS)
    )
    seen = ids_of(got, playback, page)
    assert set(seen) == {e["event_id"] for e in events}, tail(log_path)  # none lost
    assert max(seen.values()) == 1, [i for i, c in seen.items() if c > 1][:5]  # none twice
    assert got[spec.dlq] == []
    after = metrics(port)
    assert after.get("dead_lettered", 0) == 0
    assert after["retried"] >= during["retried"]
    assert "retry" in log_path.read_text(errors="replace")
    stop(proc, log_path)


def test_a_repeated_event_id_is_routed_once_within_the_window_and_again_after_it(
    tmp_path: Path, kafka_bootstrap: str, suffix: str, lake: Path, running: list
) -> None:
    window = 2.0
    path, config, name, port = setup(
        tmp_path, kafka_bootstrap, lake, suffix, dedup_window_seconds=window
    )
    spec = config.routers[name]
    playback = spec.routes["start"][0]
    twice, once, later = (sample_event(n * 997, "start") for n in range(1, 4))  # one user
    key = twice["user_id"]
    line = orjson.dumps(twice)
    # One envelope holding `twice` twice, then a second raw message repeating it: a
    # producer's retry lands on the same key, hence the same partition.
    first = raw_envelopes([(key, line), (key, orjson.dumps(once)), (key, line)], 4)
    second = raw_envelopes([(key, line), (key, orjson.dumps(later))], 4)
    proc, log_path = start_router(tmp_path, path, name, kafka_bootstrap)
    running.append(proc)
    asyncio.run(produce(kafka_bootstrap, spec.source, first + second))
    seen = wait_for_metric(port, lambda m: m.get("routed", 0) >= 3, WAIT_SECONDS)
    assert seen.get("routed") == 3 and seen.get("duplicates") == 2, tail(log_path)

    time.sleep(window + 0.5)  # past the window: the same id is a new delivery again
    asyncio.run(produce(kafka_bootstrap, spec.source, raw_envelopes([(key, line)], 4)))
    got = asyncio.run(read_committed(kafka_bootstrap, {playback: 4}, 4, time.monotonic() + 20))
    assert ids_of(got, playback) == {
        twice["event_id"]: 2,
        once["event_id"]: 1,
        later["event_id"]: 1,
    }
    final = metrics(port)
    assert final["routed"] == 4 and final["duplicates"] == 2, final
    stop(proc, log_path)


def test_a_redriven_event_is_not_a_duplicate_of_its_failed_try(
    tmp_path: Path, kafka_bootstrap: str, suffix: str, lake: Path, running: list
) -> None:
    # The default window (300 s) spans the whole test: the retry must pass it anyway.
    path, config, name, _ = setup(tmp_path, kafka_bootstrap, lake, suffix)
    spec = config.routers[name]
    bad = {**sample_event(7, "start"), "event_time": "never"}  # fails validation every time
    proc, log_path = start_router(tmp_path, path, name, kafka_bootstrap)
    running.append(proc)
    records = [(bad["user_id"], orjson.dumps(bad))]
    asyncio.run(produce(kafka_bootstrap, spec.source, raw_envelopes(records, 4)))
    dead = asyncio.run(read_committed(kafka_bootstrap, {spec.dlq: 1}, 1, time.monotonic() + 20))
    assert len(dead[spec.dlq]) == 1, tail(log_path)

    report = redrive(config, kafka_bootstrap, spec.dlq, Selection(), show_progress=False)
    assert report.redriven == 1
    # It fails again, so it must come back with its attempts counted, not vanish as a
    # "duplicate" of the try that failed.
    again = asyncio.run(read_committed(kafka_bootstrap, {spec.dlq: 1}, 2, time.monotonic() + 20))
    records_back = [d for _, d, _ in again[spec.dlq]]
    assert [d["attempts"] for d in records_back] == [1, 2], tail(log_path)
    assert records_back[1]["payload"] == orjson.dumps(bad).decode()
    stop(proc, log_path)


#: One pattern, every field must match: exact, prefix, numeric range, exists, anything-but.
FILTER = {
    "device": ["mobile", "tv"],
    "product": [{"prefix": "are"}],
    "position_seconds": [{"numeric": [">=", 100, "<", 200]}],
    "content_id": [{"exists": True}],
    "language": [{"anything-but": ["sv", "en"]}],
}


def test_filters_route_matching_events_and_count_the_rest(
    tmp_path: Path, kafka_bootstrap: str, suffix: str, lake: Path, running: list
) -> None:
    path, config, name, _ = setup(tmp_path, kafka_bootstrap, lake, suffix, filters=[FILTER])
    spec = config.routers[name]
    playback = spec.routes["start"][0]

    def event(n: int, **fields: Any) -> dict[str, Any]:
        base = {
            **sample_event(n, "start"),
            "device": "mobile",
            "product": "areena",
            "position_seconds": 150,
            "language": "fi",
        }
        return {key: value for key, value in {**base, **fields}.items() if value is not None}

    matching = [
        event(1),
        event(2, device="tv", position_seconds=100),  # the other exact value; lower bound in
        event(3, product="arena-x", position_seconds=199, language="de"),
    ]
    # Each fails exactly one matcher, so each matcher is shown to filter.
    skipped = [
        event(10, device="desktop"),  # exact
        event(11, product="uutiset"),  # prefix
        event(12, position_seconds=200),  # numeric: upper bound excluded
        event(13, position_seconds=99),  # numeric: lower bound
        event(14, position_seconds="150"),  # numeric: a string is not a number
        event(15, content_id=None),  # exists (the schema would not even need it here)
        event(16, language="sv"),  # anything-but
        event(17, language=None),  # anything-but: a missing field does not match
    ]
    proc, log_path = start_router(tmp_path, path, name, kafka_bootstrap)
    running.append(proc)
    records = [(e["user_id"], orjson.dumps(e)) for e in matching + skipped]
    asyncio.run(produce(kafka_bootstrap, spec.source, raw_envelopes(records, 4)))
    got = asyncio.run(
        read_committed(
            kafka_bootstrap, {playback: 4, spec.dlq: 1}, len(matching), time.monotonic() + 20
        )
    )
    assert ids_of(got, playback) == Counter(e["event_id"] for e in matching), tail(log_path)
    assert got[spec.dlq] == []  # skipped, not failed
    (status,) = router_status(config, kafka_bootstrap)
    assert status.endpoints, tail(log_path)
    counters = status.counters
    assert counters["events_in"] == len(matching) + len(skipped)
    assert counters["filtered"] == len(skipped)
    assert counters["routed"] == len(matching)
    stop(proc, log_path)


TRANSFORM = '''
"""Firehose-style test transform: the event id's prefix says what to do with the event."""

from agents.transform import Dropped, Ok, ProcessingFailed


def judge(events):
    if any(e["event_id"].startswith("boom-") for e in events):
        raise ValueError("boom: cannot judge this batch")
    results = []
    for e in events:
        if e["event_id"].startswith("drop-"):
            results.append(Dropped())
        elif e["event_id"].startswith("fail-"):
            results.append(ProcessingFailed("refused " + e["event_id"]))
        else:
            results.append(Ok({**e, "device": e["device"].upper()}))
    return results
'''


def test_transform_results_are_routed_dropped_or_dead_lettered_and_a_raise_is_bisected(
    tmp_path: Path, kafka_bootstrap: str, suffix: str, lake: Path, running: list
) -> None:
    module = f"judge_{suffix}"
    # The router runs in tmp_path: `python -m` puts its working directory on sys.path.
    (tmp_path / f"{module}.py").write_text(TRANSFORM)
    path, config, name, port = setup(
        tmp_path,
        kafka_bootstrap,
        lake,
        suffix,
        transform=f"{module}:judge",
        transform_mode="batch",
        bisect_on_error=True,
        max_retry_attempts=1,
        retry_base_seconds=0.05,
    )
    spec = config.routers[name]
    playback = spec.routes["start"][0]
    kinds = ["ok", "drop", "ok", "fail", "boom", "ok", "drop", "ok", "fail", "ok"]
    events = [
        {**sample_event(n * 997, "start"), "event_id": f"{kind}-{n:02d}"}
        for n, kind in enumerate(kinds)
    ]  # one user: one envelope, so the raise hits a batch with all the others in it
    proc, log_path = start_router(tmp_path, path, name, kafka_bootstrap)
    running.append(proc)
    records = [(e["user_id"], orjson.dumps(e)) for e in events]
    (message,) = raw_envelopes(records, 4)
    asyncio.run(produce(kafka_bootstrap, spec.source, [message]))
    by_kind = {k: [e for e in events if e["event_id"].startswith(k)] for k in set(kinds)}
    want = len(by_kind["ok"]) + len(by_kind["fail"]) + len(by_kind["boom"])
    got = asyncio.run(
        read_committed(kafka_bootstrap, {playback: 4, spec.dlq: 1}, want, time.monotonic() + 20)
    )

    routed = {e["event_id"]: e for _, e, _ in got[playback]}
    assert sorted(routed) == sorted(e["event_id"] for e in by_kind["ok"]), tail(log_path)
    originals = {e["event_id"]: e for e in events}
    assert all(e["device"] == originals[i]["device"].upper() for i, e in routed.items())
    dead = {d["source_index"]: d for _, d, _ in got[spec.dlq]}
    failed = [i for i, kind in enumerate(kinds) if kind in ("fail", "boom")]
    assert sorted(dead) == failed, tail(log_path)
    for index in failed:
        record = dead[index]
        assert record["error_type"] == "processing_failed"
        assert record["payload"] == orjson.dumps(events[index]).decode()
        if kinds[index] == "fail":
            assert record["reason"] == f"refused {events[index]['event_id']}"
        else:
            assert "ValueError: boom" in record["reason"]
    counters = metrics(port)
    assert counters["dropped"] == len(by_kind["drop"])
    assert counters["dead_lettered"] == len(failed)
    stop(proc, log_path)

"""Integration: the router's idempotency window survives a SIGKILL (the dedup log).

A record whose ingest answer said "failed" (delivery unknown) may be in the raw stream
already when the client retries it. The retry must be dropped even if the router died and
restarted in between: the ids it routed are logged in each batch's transaction and read
back by the next owner of the partition.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import orjson
import pytest

from agents.dedup_log import dedup_topic
from firelake.testing import sample_event
from streams.topics import delete_topics
from tests.integration.routerkit import (
    produce,
    raw_envelopes,
    read_committed,
    start_router,
    tail,
    wait_for_metric,
)
from tests.integration.routerkit import running as running  # the fixture
from tests.integration.test_router_semantics import ids_of, setup, stop

pytestmark = pytest.mark.kafka


def test_a_repeat_after_a_router_sigkill_is_still_routed_once(
    tmp_path: Path, kafka_bootstrap: str, suffix: str, lake: Path, running: list
) -> None:
    path, config, name, port = setup(tmp_path, kafka_bootstrap, lake, suffix)
    spec = config.routers[name]
    playback = spec.routes["start"][0]
    first, other = sample_event(11, "start"), sample_event(12, "start")
    key = first["user_id"]
    proc, log_path = start_router(tmp_path, path, name, kafka_bootstrap)
    running.append(proc)
    records = [(key, orjson.dumps(first)), (other["user_id"], orjson.dumps(other))]
    asyncio.run(produce(kafka_bootstrap, spec.source, raw_envelopes(records, 4)))
    wait_for_metric(port, lambda m: m.get("routed", 0) >= 2, 30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    # The client's retry of `first` (same key and bytes), and an event never seen.
    fresh = sample_event(13, "start")
    retry = [(key, orjson.dumps(first)), (fresh["user_id"], orjson.dumps(fresh))]
    asyncio.run(produce(kafka_bootstrap, spec.source, raw_envelopes(retry, 4)))
    proc, log_path = start_router(tmp_path, path, name, kafka_bootstrap)
    running.append(proc)
    seen = wait_for_metric(port, lambda m: m.get("routed", 0) >= 1, 30)
    got = asyncio.run(read_committed(kafka_bootstrap, {playback: 4}, 3, time.monotonic() + 10))
    assert ids_of(got, playback) == {
        first["event_id"]: 1,
        other["event_id"]: 1,
        fresh["event_id"]: 1,
    }, tail(log_path)
    assert seen.get("duplicates") == 1, (seen, tail(log_path))
    assert "event ids of the last" in log_path.read_text(errors="replace")
    stop(proc, log_path)
    delete_topics(kafka_bootstrap, [dedup_topic(name)])

"""A router's ``starting_position = "AT_TIMESTAMP"`` on the real broker: a new group starts
at the first record Kafka stamped at or after the time (``streams.positions``, which the
sinks share), and routes nothing from before it."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from firelake.testing import sample_event
from tests.integration.routerkit import (
    produce,
    raw_envelopes,
    read_committed,
    router_config,
    start_router,
    tail,
)
from tests.integration.routerkit import running as running  # the fixture

pytestmark = pytest.mark.kafka

PARTITIONS = 4


def envelopes(numbers: range) -> list:
    lines = [(f"user-{n % 7}", json.dumps(sample_event(n, "start")).encode()) for n in numbers]
    return raw_envelopes(lines, PARTITIONS)


def test_at_timestamp_routes_from_the_first_record_at_or_after_the_time(
    tmp_path: Path, kafka_bootstrap: str, suffix: str, lake: Path, running: list
) -> None:
    _, config, name = router_config(tmp_path, kafka_bootstrap, lake, suffix, partitions=4)
    spec = config.routers[name]
    raw, playback = spec.source, spec.routes["start"][0]
    before, after = range(100), range(100, 160)
    asyncio.run(produce(kafka_bootstrap, raw, envelopes(before)))
    time.sleep(0.5)
    moment = datetime.now(UTC)
    time.sleep(0.5)
    asyncio.run(produce(kafka_bootstrap, raw, envelopes(after)))
    path, _, _ = router_config(
        tmp_path,
        kafka_bootstrap,
        lake,
        suffix,
        partitions=4,
        starting_position="AT_TIMESTAMP",
        starting_timestamp=moment.isoformat(),
    )
    proc, log_path = start_router(tmp_path, path, name, kafka_bootstrap)
    running.append(proc)
    got = asyncio.run(
        read_committed(kafka_bootstrap, {playback: 4}, len(after), time.monotonic() + 60)
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, tail(log_path)
    routed = sorted(event["event_id"] for _, event, _ in got[playback])
    assert routed == [sample_event(n)["event_id"] for n in after], tail(log_path)

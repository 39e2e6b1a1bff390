"""Integration at scale on the real broker: the 100 000-event poison proof and scale-out.

- 100 000 good events with 1 % poison mixed in across 6 partitions: every good event routed
  exactly once and in key order, every poison event in the DLQ with its reason, no retries
  (bad data never blocks a partition), lag 0 in ``firelake status``.
- Two workers of one router; one is SIGKILLed mid-stream: every event is routed and none
  twice in the destination streams as ``read_committed`` readers see them.
- The Faust engine's ack-after-delivery: its router is SIGKILLed mid-stream and restarted;
  every event is in the destination streams at least once (duplicates allowed), none lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.status import router_status, scrape
from firelake.broker import free_port
from firelake.testing import sample_event
from tests.integration.routerkit import (
    Received,
    end_offsets,
    produce,
    raw_envelopes,
    read_committed,
    router_config,
    start_router,
    tail,
)
from tests.integration.routerkit import running as running  # the fixture

pytestmark = pytest.mark.kafka


def assert_once_in_key_order(received: list[tuple[int, dict[str, Any], str | None]]) -> None:
    counts = Counter(e["event_id"] for _, e, _ in received)
    twice = [i for i, c in counts.items() if c > 1]
    assert not twice, f"{len(twice)} events routed twice, e.g. {twice[:3]}"
    per_key: dict[str, list[str]] = {}
    for _, event, key in received:
        per_key.setdefault(str(key), []).append(event["event_id"])
    for key, ids in per_key.items():
        assert ids == sorted(ids), f"order of key {key}"


def produce_round(bootstrap: str, topic: str, first: int, count: int) -> None:
    """Sample events ``first .. first+count-1`` into a 6-partition raw stream, in
    ingest-sized envelopes of 200 records."""
    events = [sample_event(n) for n in range(first, first + count)]
    records = [(e["user_id"], orjson.dumps(e)) for e in events]
    messages = []
    for start in range(0, len(records), 200):
        messages.extend(raw_envelopes(records[start : start + 200], 6))
    asyncio.run(produce(bootstrap, topic, messages))


POISON = (
    (b"{broken", "invalid_json"),
    (b'"a string"', "not_an_object"),
    ({"event_type": "bogus"}, "no_route"),
    ({"event_time": "never"}, "wrong_type"),
)


def poison(n: int) -> tuple[bytes, str]:
    """The n-th poison event; JSON ones get their own id (a shared id is a duplicate)."""
    line, error_type = POISON[n % len(POISON)]
    if isinstance(line, dict):
        line = orjson.dumps({**sample_event(n, "start"), **line, "event_id": f"poison-{n}"})
    return line, error_type


def test_100k_events_with_1_percent_poison_across_6_partitions(
    tmp_path: Path, kafka_bootstrap: str, suffix: str, lake: Path, running: list
) -> None:
    port = free_port()
    path, config, name = router_config(
        tmp_path, kafka_bootstrap, lake, suffix, metrics_port=port, workers=1
    )
    spec = config.routers[name]
    good = 100_000
    records: list[tuple[str, bytes]] = []
    expected_dead: Counter[str] = Counter()
    for n in range(good):
        event = sample_event(n)
        records.append((event["user_id"], orjson.dumps(event)))
        if n % 99 == 50:  # 1 % poison, spread over every key and partition
            line, error_type = poison(n)
            records.append((f"user-{n % 997}", line))
            expected_dead[error_type] += 1
    # Ingest-sized envelopes: 500 records a request, one envelope per partition.
    messages = []
    for start in range(0, len(records), 500):
        messages.extend(raw_envelopes(records[start : start + 500], 6))
    asyncio.run(produce(kafka_bootstrap, spec.source, messages))

    proc, log_path = start_router(tmp_path, path, name, kafka_bootstrap)
    running.append(proc)
    playback, page = spec.routes["start"][0], spec.routes["click"][0]
    topics = {playback: 4, page: 4, spec.dlq: 1}
    want = good + sum(expected_dead.values())
    got = asyncio.run(read_committed(kafka_bootstrap, topics, want, time.monotonic() + 110))
    assert proc.poll() is None, tail(log_path)

    routed = got[playback] + got[page]
    assert len({e["event_id"] for _, e, _ in routed}) == good, tail(log_path)
    assert_once_in_key_order(got[playback])
    assert_once_in_key_order(got[page])
    dead = Counter(d["error_type"] for _, d, _ in got[spec.dlq])
    assert dead == expected_dead
    assert all(d["reason"] and d["source_index"] >= 0 for _, d, _ in got[spec.dlq])

    metrics = scrape(f"http://127.0.0.1:{port}/metrics")
    assert metrics["events_in"] == want
    assert metrics["retried"] == 0  # poison never blocked a partition: no batch retried
    assert metrics["dead_lettered"] == sum(expected_dead.values())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        (status,) = router_status(config, kafka_bootstrap)
        if sum(status.lag.values()) == 0:
            break
        time.sleep(0.5)
    assert sum(status.lag.values()) == 0 and len(status.lag) == 6
    assert status.counters["routed"] == good
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, tail(log_path)


def test_two_workers_one_sigkilled_mid_stream_route_every_event_once(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    kafka_bootstrap: str,
    suffix: str,
    lake: Path,
    running: list,
) -> None:
    path, config, name = router_config(
        tmp_path, kafka_bootstrap, lake, suffix, batch_size=500, batch_window_seconds=0.05
    )
    spec = config.routers[name]
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")  # the victim's log must survive SIGKILL
    workers = []
    for index in range(2):
        worker_dir = tmp_path / f"w{index}"
        worker_dir.mkdir()
        proc, log_path = start_router(worker_dir, path, name, kafka_bootstrap)
        running.append(proc)
        workers.append((proc, log_path))
    total, rounds = 24_000, 12
    per_round = total // rounds
    victim, survivor = workers
    for round_ in range(rounds):
        produce_round(kafka_bootstrap, spec.source, round_ * per_round, per_round)
        if round_ == rounds // 2:
            # Both workers must hold partitions (the group has settled) before the kill.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(
                "assigned [(" in log.read_text() for _, log in workers
            ):
                time.sleep(0.2)
            # Mid-stream, while it holds partitions and open transactions.
            os.kill(victim[0].pid, signal.SIGKILL)
            victim[0].wait(timeout=10)
        time.sleep(0.3)
    playback, page = spec.routes["start"][0], spec.routes["click"][0]
    got = asyncio.run(
        read_committed(kafka_bootstrap, {playback: 4, page: 4}, total, time.monotonic() + 90)
    )
    assert survivor[0].poll() is None, tail(survivor[1])
    routed = got[playback] + got[page]
    assert_once_in_key_order(got[playback])
    assert_once_in_key_order(got[page])
    assert len(routed) == total, f"{len(routed)} of {total}:\n{tail(survivor[1])}"
    assert "assigned [(" in victim[1].read_text(), "the victim never held a partition"
    taken_over = survivor[1].read_text().count("assigned [(")
    assert taken_over >= 2, "the survivor never took the victim's partitions over"


def test_faust_router_sigkilled_mid_stream_loses_no_event_after_a_restart(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    kafka_bootstrap: str,
    suffix: str,
    lake: Path,
    running: list,
) -> None:
    path, config, name = router_config(tmp_path, kafka_bootstrap, lake, suffix, engine="faust")
    spec = config.routers[name]
    playback, page = spec.routes["start"][0], spec.routes["click"][0]
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")  # the victim's log must survive SIGKILL
    victim_dir, successor_dir = tmp_path / "victim", tmp_path / "successor"
    victim_dir.mkdir()
    successor_dir.mkdir()
    victim = start_router(victim_dir, path, name, kafka_bootstrap)
    running.append(victim[0])
    successor = None
    total, rounds = 12_000, 12
    per_round = total // rounds
    for round_ in range(rounds):
        produce_round(kafka_bootstrap, spec.source, round_ * per_round, per_round)
        if round_ == rounds // 2:
            # Mid-stream: only once the victim has delivered output, with input still unread.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not sum(
                end_offsets(kafka_bootstrap, playback, 4).values()
            ):
                time.sleep(0.2)
            assert sum(end_offsets(kafka_bootstrap, playback, 4).values()), tail(victim[1])
            os.kill(victim[0].pid, signal.SIGKILL)
            victim[0].wait(timeout=10)
            successor = start_router(successor_dir, path, name, kafka_bootstrap)
            running.append(successor[0])
        time.sleep(0.3)
    assert successor is not None
    want = {sample_event(n)["event_id"] for n in range(total)}

    def ids(got: Received) -> Counter[str]:
        return Counter(e["event_id"] for received in got.values() for _, e, _ in received)

    got = asyncio.run(
        read_committed(
            kafka_bootstrap,
            {playback: 4, page: 4},
            total,
            time.monotonic() + 90,
            # Duplicates are allowed, so a count of events says nothing: wait for every id.
            enough=lambda got: want <= ids(got).keys(),
        )
    )
    seen = ids(got)
    assert successor[0].poll() is None, tail(successor[1])
    missing = want - seen.keys()
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:3]}"
    assert seen.keys() == want  # nothing but the events sent (duplicates are allowed)
    assert "(faust): reading" in victim[1].read_text(), "the victim was not a Faust agent"

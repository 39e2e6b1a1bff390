"""A worker joins while the only worker is inside a slow transform (the CDU scorer's bug).

The whole input is on two partitions before any worker starts, so the first worker's first
fetch holds every record and its flush is many slow chunks long. Its first transform blocks
until a release file exists; a second worker starts then, and the release comes once the
second worker holds partitions (or after a bound longer than aiokafka's default 10 s
rebalance timeout, after which the broker would evict the first worker). Every event must be
in the destination streams exactly once for ``read_committed`` readers, and the group's
committed offsets must reach the end of the input, with the dedup window off and on.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from firelake.testing import sample_event
from streams.partitioning import partition_for_key
from tests.integration.routerkit import (
    committed_offsets,
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

EVENTS = 40
PARTITIONS = 2
#: Longest the first worker's first transform waits for the release file.
GATE_SECONDS = 60
#: Longest the test waits for the second worker's assignment before it releases the gate.
ASSIGN_BOUND_SECONDS = 20

GATE = """
import os
import time
from pathlib import Path

RELEASE = Path({release!r})
CALLS = Path({calls!r})


def score(events):
    with CALLS.open("a") as calls:
        calls.write(f"{{os.getpid()}} {{' '.join(e['event_id'] for e in events)}}\\n")
    deadline = time.monotonic() + {gate}
    while not RELEASE.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # every batch is slow: the other worker is busy while this one commits
    return events
"""


def assigned(log_path: Path) -> bool:
    return "assigned [(" in log_path.read_text(errors="replace")


@pytest.mark.parametrize("dedup", [False, True], ids=["dedup-off", "dedup-on"])
def test_worker_joining_mid_slow_batch_routes_every_event_once(
    dedup: bool, tmp_path: Path, kafka_bootstrap: str, suffix: str, lake: Path, running: list
) -> None:
    module = f"gate_{suffix.replace('-', '_')}"
    release, calls = tmp_path / "release", tmp_path / "calls.log"
    source = GATE.format(release=str(release), calls=str(calls), gate=GATE_SECONDS)
    path, config, name = router_config(
        tmp_path,
        kafka_bootstrap,
        lake,
        suffix,
        partitions=PARTITIONS,
        dedup_window_seconds=300 if dedup else 0,
        batch_size=2,
        batch_window_seconds=0.05,
        transform=f"{module}:score",
        transform_mode="batch",
        transform_timeout_seconds=GATE_SECONDS + 30,
    )
    spec = config.routers[name]
    events = [sample_event(n) for n in range(EVENTS)]
    per_partition = Counter(partition_for_key(e["user_id"], PARTITIONS) for e in events)
    assert min(per_partition.values()) >= EVENTS // 4, per_partition
    # One event per raw message, all of it in the topic before any worker starts.
    records = [(e["user_id"], orjson.dumps(e)) for e in events]
    messages = [m for record in records for m in raw_envelopes([record], PARTITIONS)]
    asyncio.run(produce(kafka_bootstrap, spec.source, messages))
    ends = end_offsets(kafka_bootstrap, spec.source, PARTITIONS)

    workers: list[tuple[subprocess.Popen[bytes], Path]] = []
    for index in range(2):
        worker_dir = tmp_path / f"w{index + 1}"
        worker_dir.mkdir()
        (worker_dir / f"{module}.py").write_text(source)
    first = start_router(tmp_path / "w1", path, name, kafka_bootstrap)
    running.append(first[0])
    workers.append(first)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (calls.exists() and calls.read_text().strip()):
        assert first[0].poll() is None, tail(first[1])
        time.sleep(0.05)
    assert calls.read_text().strip(), f"worker 1 never called its transform:\n{tail(first[1])}"

    second = start_router(tmp_path / "w2", path, name, kafka_bootstrap)
    running.append(second[0])
    workers.append(second)
    deadline = time.monotonic() + ASSIGN_BOUND_SECONDS
    while time.monotonic() < deadline and not assigned(second[1]):
        time.sleep(0.1)
    release.touch()

    # Both workers route until the group's committed offsets reach the end and stay there.
    group = f"firelake-router-{name}"
    deadline = time.monotonic() + 150
    steady_since: float | None = None
    committed: dict[int, int] = {}
    while time.monotonic() < deadline:
        committed = committed_offsets(kafka_bootstrap, group, spec.source)
        if committed == ends:
            steady_since = steady_since or time.monotonic()
            if time.monotonic() - steady_since >= 2:
                break
        else:
            steady_since = None
        time.sleep(0.3)
    logs = "\n".join(f"--- worker {i + 1}\n{tail(log)}" for i, (_, log) in enumerate(workers))

    destinations = {s: config.streams[s].partitions for t in spec.routes.values() for s in t}
    destinations[spec.dlq] = config.streams[spec.dlq].partitions
    got = asyncio.run(read_committed(kafka_bootstrap, destinations, EVENTS, time.monotonic() + 20))
    ids = [e["event_id"] for items in got.values() for _, e, _ in items]
    twice = sorted(i for i, c in Counter(ids).items() if c > 1)
    lost = sorted({e["event_id"] for e in events} - set(ids))
    assert (len(ids), len(set(ids))) == (EVENTS, EVENTS), (
        f"{len(ids)} routed, {len(set(ids))} distinct of {EVENTS}; twice {twice}; "
        f"lost {lost}\n{logs}"
    )
    assert not got[spec.dlq], got[spec.dlq]
    assert committed == ends, f"committed {committed}, end {ends}\n{logs}"
    assert assigned(second[1]), f"worker 2 never held a partition\n{logs}"

    for proc, _ in workers:
        proc.send_signal(signal.SIGTERM)
    for proc, log_path in workers:
        assert proc.wait(timeout=60) == 0, tail(log_path)

"""Integration: fix the cause of a class of failures, redrive it, interrupt and rerun.

Events with an unknown event type land in the DLQ (no_route). The route is then added to
the configuration and the router restarted; ``firelake dlq redrive --reason no_route`` at a
low rate is interrupted (SIGINT) and run again: every redriven event arrives in its typed
stream exactly once, and events of other reasons stay in the DLQ.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from firelake.config import load_config
from firelake.testing import example_dict, sample_event, write_config
from streams.topics import ensure_topics
from tests.integration.routerkit import (
    REPO,
    produce,
    raw_envelopes,
    read_committed,
    start_router,
    tail,
)
from tests.integration.routerkit import running as running  # the fixture

pytestmark = pytest.mark.kafka


def firelake(config: Path, bootstrap: str, *args: str) -> subprocess.Popen[bytes]:
    env = {"PYTHONPATH": str(REPO), "FIRELAKE_KAFKA_BOOTSTRAP": bootstrap, "PATH": "/usr/bin:/bin"}
    return subprocess.Popen(
        [sys.executable, "-m", "firelake.cli", "dlq", *args, "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_redrive_after_the_fix_delivers_each_event_once_across_an_interrupt(
    tmp_path: Path,
    kafka_bootstrap: str,
    suffix: str,
    lake: Path,
    running: list,
) -> None:
    path = tmp_path / "firelake.toml"
    data = example_dict(kafka_bootstrap, lake, suffix)
    write_config(path, data)
    config = load_config(path, environ={})
    ensure_topics(config, kafka_bootstrap)
    name = next(iter(config.routers))
    spec = config.routers[name]
    orphans = [{**sample_event(n, "start"), "event_type": "rewind"} for n in range(30)]
    broken = [{**sample_event(100 + n, "start"), "event_time": "never"} for n in range(3)]
    records = [(e["user_id"], orjson.dumps(e)) for e in orphans + broken]
    asyncio.run(produce(kafka_bootstrap, spec.source, raw_envelopes(records, 4)))
    proc, log_path = start_router(tmp_path, path, name, kafka_bootstrap)
    running.append(proc)
    dead = asyncio.run(read_committed(kafka_bootstrap, {spec.dlq: 1}, 33, time.monotonic() + 60))
    assert len(dead[spec.dlq]) == 33, tail(log_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0

    # The fix: a route for "rewind"; the router restarts with it.
    data["routers"][name]["routes"]["rewind"] = [spec.routes["start"][0]]
    write_config(path, data)
    proc, log_path = start_router(tmp_path, path, name, kafka_bootstrap)
    running.append(proc)

    listing = firelake(path, kafka_bootstrap, "ls").communicate(timeout=60)[0].decode()
    assert "30  no_route" in listing and "3  wrong_type" in listing, listing
    first = firelake(path, kafka_bootstrap, "redrive", "--reason", "no_route", "--rate", "8")
    time.sleep(2.5)
    first.send_signal(signal.SIGINT)
    first.wait(timeout=30)
    second = firelake(path, kafka_bootstrap, "redrive", "--reason", "no_route", "--quiet")
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err.decode()
    text = out.decode()
    redriven_now = int(text.split("redriven ")[1].split(";")[0])
    already = int(text.split("already redriven before ")[1].split(";")[0])
    assert 0 < already < 30 and redriven_now == 30 - already, text  # the interrupt was real

    playback = spec.routes["start"][0]
    got = asyncio.run(read_committed(kafka_bootstrap, {playback: 4}, 30, time.monotonic() + 60))
    ids = sorted(e["event_id"] for _, e, _ in got[playback])
    assert ids == sorted(e["event_id"] for e in orphans), tail(log_path)
    third = firelake(path, kafka_bootstrap, "redrive", "--quiet").communicate(timeout=60)[0]
    assert b"redriven 3;" in third  # only the wrong_type ones were left: they fail again
    again = asyncio.run(read_committed(kafka_bootstrap, {spec.dlq: 1}, 36, time.monotonic() + 60))
    retried = [d for _, d, _ in again[spec.dlq] if d["attempts"] == 2]
    assert len(retried) == 3 and all(d["error_type"] == "wrong_type" for d in retried)
    assert all(d["first_attempt_at"] < d["last_attempt_at"] for d in retried)

"""Chaos on a real broker: Firelake survives its broker and its own services dying.

``firelake up`` runs the Yle pipeline on a broker of its own (this test's — never the
shared one: the test SIGKILLs and SIGSTOPs it). A client sends steady, bounded load and
retries every record the ingest did not accept (a per-record failure, a refused request, a
refused connection), with the same event id and partition key, as a Kinesis client does.
Meanwhile the test

1. SIGKILLs the broker — ``up`` restarts it;
2. SIGSTOPs the broker for 20 s, then resumes it;
3. SIGKILLs the sinks process, the router and the ingest — ``up`` restarts each.

Then it checks the issue's promises: every request that reached the ingest was answered
within the answer deadline; the lake holds exactly one row per accepted record, the
failed-then-retried ones included; the restarts show in ``firelake status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from firelake.broker import LocalBroker, free_port
from firelake.config import load_config
from firelake.supervisor import read_state
from firelake.testing import example_data, example_dict, start_up, wait_healthy, write_config
from tests.integration.loadkit import (
    Load,
    assert_lake_exactly_once,
    lake_ids,
    send_load,
    wait_progress,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(480)]

#: The ingest's answer deadline in this test, and the slack allowed on top (scheduling on
#: a loaded 2-core box, the HTTP round trip).
DEADLINE_S = 5.0
SLACK_S = 3.0
STALL_S = 20.0


def _pid(state_file: Path, service: str) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = read_state(state_file) or {}
        entry = state.get("services", {}).get(service, {})
        if entry.get("state") == "running" and entry.get("pid"):
            return int(entry["pid"])
        time.sleep(0.5)
    raise AssertionError(f"{service} is not running: {read_state(state_file)}")


def test_the_pipeline_survives_broker_and_service_deaths(tmp_path: Path, suffix: str) -> None:
    data = example_data()
    data["windows"] = {}
    data["streams"] = {
        k: v
        for k, v in data["streams"].items()
        if k in ("raw-events", "playback-events", "page-events", "dlq")
    }
    data["sinks"] = {
        k: {**v, "max_seconds": 1}
        for k, v in data["sinks"].items()
        if k in ("playback", "page", "dlq")
    }
    ingest_port, health_port = free_port(), free_port()
    raw = example_dict(
        "",
        tmp_path / "lake",
        suffix,
        data,
        kafka={"port": free_port(), "data_dir": str(tmp_path / "kafka")},
        ingest={"port": ingest_port, "answer_deadline_seconds": DEADLINE_S},
    )
    path = write_config(tmp_path / "firelake.toml", raw)
    config = load_config(path, environ={})
    broker = LocalBroker(data_dir=config.kafka_data_dir, port=config.kafka.port)
    state_file = config.kafka_data_dir.parent / "up.json"
    tables = [config.sinks[s].table for s in config.sinks]
    raw_stream = next(iter(config.routers.values())).source
    url = f"http://127.0.0.1:{ingest_port}/v1/streams/{raw_stream}/records"
    env = {k: v for k, v in os.environ.items() if k != "FIRELAKE_KAFKA_BOOTSTRAP"}
    log_path = tmp_path / "up.log"
    load = Load(prefix=f"chaos-{suffix}", deadline_s=DEADLINE_S, slack_s=SLACK_S)
    sender: threading.Thread | None = None
    with log_path.open("w") as log:
        up = start_up(path, log, "--health-port", str(health_port), "--max-restarts", "10", env=env)
        try:
            assert wait_healthy(f"http://127.0.0.1:{ingest_port}", up, 240), log_path.read_text()
            sender = threading.Thread(target=lambda: asyncio.run(send_load(url, load)), daemon=True)
            sender.start()
            wait_progress(load, 60, "the start")
            # Every service up and the lake written before the first blow.
            deadline = time.monotonic() + 90
            while not lake_ids(config.lake_root, tables) and time.monotonic() < deadline:
                time.sleep(1)
            assert lake_ids(config.lake_root, tables), log_path.read_text()[-3000:]

            # 1. The broker dies; up restarts it.
            os.kill(_pid(state_file, "kafka"), signal.SIGKILL)
            time.sleep(3)
            wait_progress(load, 150, "the broker's SIGKILL")

            # 2. The broker stalls for 20 s.
            stalled = _pid(state_file, "kafka")
            os.kill(stalled, signal.SIGSTOP)
            try:
                time.sleep(STALL_S)
            finally:
                os.kill(stalled, signal.SIGCONT)
            wait_progress(load, 120, "the broker's stall")

            # 3. Each service dies once; up restarts each.
            for service in ("sinks", f"router:{next(iter(config.routers))}", "ingest"):
                os.kill(_pid(state_file, service), signal.SIGKILL)
                time.sleep(2)
                wait_progress(load, 120, f"the SIGKILL of {service}")

            # Drain: no new records; retry until every record was accepted.
            with load.lock:
                load.new_records = False
            deadline = time.monotonic() + 120
            while not load.settled and time.monotonic() < deadline:
                time.sleep(0.5)
            assert load.settled, f"records never accepted: {len(load.retry)}"
            load.stop = True
            sender.join(60)

            # The lake: exactly one row per accepted record, retried ones included.
            assert_lake_exactly_once(load, config.lake_root, tables)
            assert load.failed_then_retried & load.accepted, dict(load.answers)

            # Every request that reached the ingest was answered within the deadline.
            assert not load.late, (sorted(load.late)[-5:], dict(load.answers))

            # The restarts are visible: up's state and firelake status.
            state = read_state(state_file)
            assert state is not None and state["healthy"], state
            restarts = {name: s["restarts"] for name, s in state["services"].items()}
            # Each restarted once, for the one SIGKILL it got: none of them died of the
            # broker's death or stall — they rode them out.
            router = f"router:{next(iter(config.routers))}"
            assert [restarts[s] for s in ("kafka", "sinks", "ingest", router)] == [1] * 4, (
                restarts,
                log_path.read_text()[-3000:],
            )
            status = subprocess.run(
                [sys.executable, "-m", "firelake.cli", "status", "--config", str(path)],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                check=False,
            )
            assert "firelake up: healthy" in status.stdout, status.stdout + status.stderr
            print(
                f"chaos: {len(load.accepted)} records accepted, "
                f"{len(load.failed_then_retried & load.accepted)} after a failure; "
                f"answers {dict(load.answers)}; slowest {load.slowest:.1f}s; {restarts}"
            )
        finally:
            load.stop = True
            if sender is not None:
                sender.join(30)
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=90)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait(timeout=10)
            with contextlib.suppress(Exception):
                broker.stop()  # this test's own broker, if up left it behind

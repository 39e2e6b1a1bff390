"""`firelake up` giving up on a service, end to end on the real broker.

With a restart budget of 0, one SIGKILL of the sinks process exhausts it. Without
``--exit-on-failure`` ``up`` runs on, loud and unhealthy: its log says GIVING UP, its
``/health`` answers 503, its state file and ``firelake status`` (exit code 1) name the
service, and the ingest still answers. With ``--exit-on-failure`` ``up`` stops everything
and exits non-zero.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from firelake.broker import free_port
from firelake.config import load_config
from firelake.supervisor import read_state
from firelake.testing import example_data, example_dict, start_up, wait_healthy, write_config
from streams.topics import delete_topics

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

WAIT_S = 90.0


def _health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def _sinks_pid(state_file: Path) -> int:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        entry = (read_state(state_file) or {}).get("services", {}).get("sinks", {})
        if entry.get("state") == "running" and entry.get("pid"):
            return int(entry["pid"])
        time.sleep(0.3)
    raise AssertionError(f"the sinks process is not running: {read_state(state_file)}")


def _start_up(
    tmp_path: Path, kafka_bootstrap: str, suffix: str, *extra: str
) -> tuple[subprocess.Popen[bytes], Path, Path, int, int]:
    data = example_data()
    data["windows"] = {}
    data["routers"] = {}
    data["streams"] = {k: v for k, v in data["streams"].items() if k in ("raw-events", "dlq")}
    data["sinks"] = {"dlq": data["sinks"]["dlq"]}
    ingest_port, health_port = free_port(), free_port()
    raw = example_dict(
        kafka_bootstrap, tmp_path / "lake", suffix, data, ingest={"port": ingest_port}
    )
    path = write_config(tmp_path / "firelake.toml", raw)
    log_path = tmp_path / "up.log"
    env = {k: v for k, v in os.environ.items() if k != "FIRELAKE_KAFKA_BOOTSTRAP"}
    with log_path.open("w") as log:
        up = start_up(
            path, log, "--health-port", str(health_port), "--max-restarts", "0", *extra, env=env
        )
    assert wait_healthy(f"http://127.0.0.1:{ingest_port}", up, WAIT_S), log_path.read_text()
    return up, path, log_path, ingest_port, health_port


def _stop(up: subprocess.Popen[bytes], path: Path, kafka_bootstrap: str) -> None:
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(10)
    delete_topics(kafka_bootstrap, load_config(path, environ={}).streams)


def test_giving_up_is_loud_unhealthy_and_named_by_status(
    tmp_path: Path, kafka_bootstrap: str, suffix: str
) -> None:
    up, path, log_path, ingest_port, health_port = _start_up(tmp_path, kafka_bootstrap, suffix)
    try:
        config = load_config(path, environ={})
        state_file = config.kafka_data_dir.parent / "up.json"
        assert _health(health_port)[0] == 200
        os.kill(_sinks_pid(state_file), signal.SIGKILL)

        deadline = time.monotonic() + WAIT_S
        while _health(health_port)[0] != 503:
            assert up.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        code, body = _health(health_port)
        assert code == 503 and body["healthy"] is False and body["failed"] == ["sinks"], body
        assert "GIVING UP on sinks" in log_path.read_text()
        state = read_state(state_file)
        assert state is not None and state["failed"] == ["sinks"], state

        status = subprocess.run(
            [sys.executable, "-m", "firelake.cli", "status", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 1, status.stdout + status.stderr
        assert "UNHEALTHY, gave up on sinks" in status.stdout, status.stdout
        # The rest runs on: the ingest still answers, up is still there.
        with urllib.request.urlopen(f"http://127.0.0.1:{ingest_port}/health", timeout=5) as r:
            assert r.status == 200
        assert up.poll() is None
    finally:
        _stop(up, path, kafka_bootstrap)


def test_exit_on_failure_stops_everything_non_zero(
    tmp_path: Path, kafka_bootstrap: str, suffix: str
) -> None:
    up, path, log_path, ingest_port, _ = _start_up(
        tmp_path, kafka_bootstrap, suffix, "--exit-on-failure"
    )
    try:
        config = load_config(path, environ={})
        os.kill(_sinks_pid(config.kafka_data_dir.parent / "up.json"), signal.SIGKILL)
        code = up.wait(WAIT_S)
        assert code != 0, log_path.read_text()[-3000:]
        assert "gave up on sinks (--exit-on-failure)" in log_path.read_text()
        # Everything it started stopped with it: nothing answers on the ingest port.
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{ingest_port}/health", timeout=3)
    finally:
        _stop(up, path, kafka_bootstrap)

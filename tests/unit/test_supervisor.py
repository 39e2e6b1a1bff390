"""The supervisor: restart budget per time window, loud giving up, health endpoint, state file."""

from __future__ import annotations

import json
import logging
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from firelake.supervisor import (
    HealthServer,
    ServiceSpec,
    Supervisor,
    read_state,
    render_state,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _dying(name: str) -> ServiceSpec:
    return ServiceSpec(name, (sys.executable, "-c", "import sys; sys.exit(3)"))


def _wait_dead(supervisor: Supervisor) -> None:
    for child in supervisor.children:
        if child.process is not None:
            child.process.wait(timeout=30)


def test_the_restart_budget_is_per_window_and_giving_up_is_loud(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    state = tmp_path / "up.json"
    supervisor = Supervisor(
        [_dying("sinks")],
        max_restarts=2,
        backoff_seconds=1.0,
        restart_window_seconds=100.0,
        clock=clock,
        state_file=state,
    )
    supervisor.start()
    child = supervisor.children[0]
    delays = []
    # Two deaths a long time apart: each is the first in its window, so always restarted.
    for _ in range(2):
        _wait_dead(supervisor)
        supervisor.poll()
        delays.append(child.next_start - clock.now)
        clock.now += 500
        supervisor.poll()  # restarts it
        assert child.process is not None
    assert delays == [1.0, 1.0]
    assert supervisor.healthy
    # Now three quick deaths within the window: backoff doubles, then it is given up on.
    with caplog.at_level(logging.ERROR, logger="firelake.supervisor"):
        for _ in range(3):
            _wait_dead(supervisor)
            supervisor.poll()
            if child.next_start:
                delays.append(child.next_start - clock.now)
                clock.now = child.next_start
                supervisor.poll()
    assert delays[2:] == [1.0, 2.0]  # the first and second restart of this window
    assert supervisor.failed == ["sinks"]
    assert not supervisor.healthy
    assert "GIVING UP on sinks" in caplog.text and "DEGRADED" in caplog.text
    written = read_state(state)
    assert written is not None and written["healthy"] is False
    assert written["services"]["sinks"]["state"] == "failed"
    assert written["services"]["sinks"]["restarts"] == 4
    assert written["services"]["sinks"]["last_exit"] == 3
    assert "UNHEALTHY, gave up on sinks" in render_state({**written, "pid": 1})
    supervisor.stop()


def test_run_until_exits_on_failure_when_asked() -> None:
    supervisor = Supervisor(
        [
            _dying("ingest"),
            ServiceSpec("idle", (sys.executable, "-c", "import time; time.sleep(60)")),
        ],
        max_restarts=0,
    )
    supervisor.start()
    started = time.monotonic()
    supervisor.run_until(lambda: time.monotonic() - started > 30, 0.05, exit_on_failure=True)
    assert supervisor.failed == ["ingest"]
    assert time.monotonic() - started < 20
    supervisor.stop()


def test_health_endpoint_answers_503_once_a_service_was_given_up_on() -> None:
    supervisor = Supervisor([_dying("router:main")], max_restarts=0)
    health = HealthServer(supervisor, 0).start()
    url = f"http://127.0.0.1:{health.port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert answer.status == 200
            assert json.load(answer)["healthy"] is True
        supervisor.start()
        _wait_dead(supervisor)
        supervisor.poll()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 503
        body = json.load(refused.value)
        assert body["failed"] == ["router:main"]
        assert body["services"]["router:main"]["state"] == "failed"
    finally:
        health.stop()
        supervisor.stop()


def test_a_spawn_that_fails_counts_as_a_death() -> None:
    def broken() -> object:
        raise OSError("no java")

    supervisor = Supervisor([ServiceSpec("kafka", (), spawn=broken)], max_restarts=0)  # type: ignore[arg-type]
    supervisor.start()
    assert supervisor.failed == ["kafka"]

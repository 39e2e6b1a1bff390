"""Window agents on the real broker: exact results for every window type from a stream
shuffled within the grace period, late events in the late stream, the state restored after
SIGKILL (several times) and after a standby takes over — the same results each time."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from firelake.config import FirelakeConfig
from firelake.testing import unique_suffix
from tests.integration.windowkit import (
    expected_late,
    expected_results,
    final_rows,
    make_stream,
    read_outputs,
    result_key,
    send_stream,
    start_window,
    wait,
    window_config,
)

pytestmark = pytest.mark.timeout(300)

KINDS = ["tumbling", "hopping", "sliding", "session"]


@pytest.fixture
def procs() -> Any:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def check_window(
    config: FirelakeConfig,
    bootstrap: str,
    window: str,
    stream: Any,
    log_path: Path,
    timeout: float = 90,
) -> None:
    """The window's final results equal SQL's, once each; its late stream holds exactly the
    late (event, window) pairs."""
    spec = config.windows[window]
    late = expected_late(config, window, stream)
    expected = expected_results(config, window, stream, late)
    out, late_stream = spec.output, spec.late
    topics = {out: config.streams[out].partitions, late_stream: 1}

    def enough(got: dict[str, list[dict[str, Any]]]) -> bool:
        return len(final_rows(got[out])) >= len(expected) and len(got[late_stream]) >= len(late)

    got = read_outputs(bootstrap, topics, time.monotonic() + timeout, enough)
    finals = final_rows(got[out])
    keys = [result_key(r) for r in finals]
    assert len(keys) == len(set(keys)), "a window was emitted twice"
    assert set(keys) == set(expected), (
        f"{window}: missing {sorted(set(expected) - set(keys))[:5]}, "
        f"extra {sorted(set(keys) - set(expected))[:5]}\n" + log_path.read_text()[-3000:]
    )
    for row in finals:
        want = expected[result_key(row)]
        for column in ("n", "clicks", "total", "low", "pages", "event_count"):
            assert row[column] == want[column], (window, column, row, want)
        assert row["mean"] == pytest.approx(want["mean"])
    got_late = {(e["event_id"], e["late_window_start"]) for e in got[late_stream]}
    assert len(got[late_stream]) == len(got_late)
    assert got_late == late
    assert late, "the stream must hold late events"


def test_every_window_type_gives_exact_results_and_sends_late_events_aside(
    tmp_path: Path, kafka_bootstrap: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    suffix = unique_suffix()
    path, config = window_config(tmp_path, kafka_bootstrap, suffix, KINDS)
    stream = make_stream(1500)
    logs = {}
    for kind in KINDS:
        proc, logs[kind] = start_window(tmp_path, path, f"{kind}-{suffix}", kafka_bootstrap)
        procs.append(proc)
    send_stream(kafka_bootstrap, f"clicks-{suffix}", stream)
    for kind in KINDS:
        check_window(config, kafka_bootstrap, f"{kind}-{suffix}", stream, logs[kind])


def test_sigkill_mid_stream_several_times_gives_identical_results(
    tmp_path: Path, kafka_bootstrap: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    suffix = unique_suffix()
    kinds = ["hopping", "session"]
    path, config = window_config(tmp_path, kafka_bootstrap, suffix, kinds, batch_size=500)
    stream = make_stream(4000, seed=3)
    send_stream(kafka_bootstrap, f"clicks-{suffix}", stream)
    logs = {}
    for kind in kinds:
        window = f"{kind}-{suffix}"
        for round_ in range(3):
            proc, logs[kind] = start_window(tmp_path, path, window, kafka_bootstrap)
            procs.append(proc)
            log_path = logs[kind]
            assert wait(lambda p=log_path, n=round_: p.read_text().count("active on") > n, 60), (
                log_path.read_text()
            )
            time.sleep(0.5 + 0.7 * round_)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        proc, logs[kind] = start_window(tmp_path, path, window, kafka_bootstrap)
        procs.append(proc)
    for kind in kinds:
        check_window(config, kafka_bootstrap, f"{kind}-{suffix}", stream, logs[kind])
        text = logs[kind].read_text()
        assert text.count("active on") == 4
        # Each restart restored state from the changelog (open windows at the kill).
        assert text.count("restored 0 entries") <= 1, text


def test_two_workers_one_killed_the_standby_takes_over_with_the_same_results(
    tmp_path: Path, kafka_bootstrap: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    suffix = unique_suffix()
    path, config = window_config(tmp_path, kafka_bootstrap, suffix, ["tumbling"], batch_size=500)
    window = f"tumbling-{suffix}"
    stream = make_stream(4000, seed=5)
    first, log_a = start_window(tmp_path, path, window, kafka_bootstrap, "-a")
    second, log_b = start_window(tmp_path, path, window, kafka_bootstrap, "-b")
    procs.extend([first, second])
    assert wait(
        lambda: (
            "active on" in log_a.read_text() + log_b.read_text()
            and "standing by" in log_a.read_text() + log_b.read_text()
        ),
        60,
    ), log_a.read_text() + log_b.read_text()
    send_stream(kafka_bootstrap, f"clicks-{suffix}", stream)
    active, standby_log = (first, log_b) if "active on" in log_a.read_text() else (second, log_a)
    time.sleep(1.0)
    active.send_signal(signal.SIGKILL)
    active.wait(timeout=10)
    assert wait(lambda: "active on" in standby_log.read_text(), 60), standby_log.read_text()
    check_window(config, kafka_bootstrap, window, stream, standby_log)


def test_the_faust_engine_gives_the_same_results_without_a_crash(
    tmp_path: Path, kafka_bootstrap: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    """engine = "faust" runs the same core; at-least-once only shows after a crash."""
    suffix = unique_suffix()
    path, config = window_config(tmp_path, kafka_bootstrap, suffix, ["tumbling"], engine="faust")
    window = f"tumbling-{suffix}"
    stream = make_stream(1500, seed=9)
    proc, log = start_window(tmp_path, path, window, kafka_bootstrap)
    procs.append(proc)
    send_stream(kafka_bootstrap, f"clicks-{suffix}", stream)
    check_window(config, kafka_bootstrap, window, stream, log, timeout=120)
    assert "(faust): active on" in log.read_text()
    # Its open windows reach the lake for the query service too (the zz events' window).
    import pyarrow.parquet as pq

    snapshot = Path(config.lake_root) / "_firelake" / "windows" / window / "open.parquet"

    # Written every few seconds: one from before the zz events came is not the answer yet.
    def users() -> set[str]:
        return (
            set(pq.read_table(snapshot).column("user").to_pylist()) if snapshot.exists() else set()
        )

    assert wait(lambda: "zz" in users(), 30), sorted(users())


def test_update_mode_emits_changes_and_the_same_final_results(
    tmp_path: Path, kafka_bootstrap: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    suffix = unique_suffix()
    path, config = window_config(
        tmp_path, kafka_bootstrap, suffix, ["tumbling"], emit="update", batch_size=300
    )
    window = f"tumbling-{suffix}"
    stream = make_stream(1500, seed=13)
    proc, log = start_window(tmp_path, path, window, kafka_bootstrap)
    procs.append(proc)
    send_stream(kafka_bootstrap, f"clicks-{suffix}", stream)
    check_window(config, kafka_bootstrap, window, stream, log)
    out = config.windows[window].output
    got = read_outputs(kafka_bootstrap, {out: 2}, time.monotonic() + 30, lambda g: True)
    rows = [r for r in got[out] if r["user"] != "zz"]
    updates = [r for r in rows if not r["is_final"]]
    assert updates, "update mode emits rows before the window closes"
    # Per (window, key) the final row comes last and no update exceeds it (counts only grow).
    last: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["window_start"], row["window_end"], row["user"])
        assert key not in last or not last[key]["is_final"], "a row after the final one"
        assert key not in last or row["n"] >= last[key]["n"]
        last[key] = row
    assert all(r["is_final"] for r in last.values())

"""Window results agree with the lake: ``firelake windows verify`` recomputes every closed
window with DuckDB over the raw events the sinks wrote (late events accounted for) and finds
no difference on 200 000 events; it does find them when the definition differs; ``backfill``
gives a window with no agent the results the live agent emitted; ``show`` lists open
windows from the changelog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from firelake.testing import unique_suffix
from tests.integration.windowkit import (
    BASE,
    expected_late,
    make_stream,
    read_outputs,
    send_stream,
    start_window,
    window_config,
)

pytestmark = pytest.mark.timeout(400)

REPO = Path(__file__).resolve().parents[2]


def cli(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firelake.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def test_verify_agrees_backfill_equals_live_and_show_lists_open_windows(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    suffix = unique_suffix()
    path, config = window_config(
        tmp_path,
        kafka_bootstrap,
        suffix,
        ["tumbling"],
        sinks=True,
        extra={"past": "tumbling"},
        batch_size=20_000,
    )
    live, past = f"tumbling-{suffix}", f"past-{suffix}"
    # 200 000 events in CI; FIRELAKE_WINDOW_VERIFY_EVENTS=1000000 for the run by hand.
    per_partition = int(os.environ.get("FIRELAKE_WINDOW_VERIFY_EVENTS", "200000")) // 4
    stream = make_stream(per_partition, seed=11)
    procs: list[subprocess.Popen[Any]] = []
    sink_log = (tmp_path / "sinks.log").open("wb")
    try:
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "sinks.sink", "--config", str(path), "--all"],
                cwd=REPO,
                stdout=sink_log,
                stderr=subprocess.STDOUT,
            )
        )
        proc, log = start_window(tmp_path, path, live, kafka_bootstrap)
        procs.append(proc)
        send_stream(kafka_bootstrap, f"clicks-{suffix}", stream, per_message=500)

        # Open windows while the far-future events hold the last ones open.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            shown = cli(path, "windows", "show", live, "--key", "zz")
            if shown.returncode == 0 and shown.stdout.strip():
                break
            time.sleep(1)
        rows = [json.loads(line) for line in shown.stdout.splitlines()]
        assert rows and all(r["user"] == "zz" and not r["is_final"] for r in rows), shown

        # verify: poll until the sinks caught up, then no difference at all.
        deadline = time.monotonic() + 180
        while True:
            result = cli(path, "windows", "verify", live)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        summary = result.stdout.strip().splitlines()[-1]
        windows = int(summary.split(": ")[1].split()[0])
        assert windows > 4000 and summary.endswith(" 0 differences"), summary
        late = expected_late(config, live, stream)
        assert len(late) > 300

        # A definition that differs is caught, window by window.
        changed = tmp_path / "changed.toml"
        changed.write_text(
            path.read_text().replace('"count(*)"', '"count(*) FILTER (WHERE v > 0)"', 1)
        )
        wrong = cli(changed, "windows", "verify", live)
        assert wrong.returncode == 1 and "n: agent" in wrong.stdout, wrong.stdout[-2000:]

        # backfill: the same definition over the lake's history, for a window no agent ran.
        end = BASE + timedelta(seconds=per_partition * 0.05)
        span = ["--from", BASE.isoformat(), "--to", end.isoformat()]
        done = cli(path, "windows", "backfill", past, *span)
        assert done.returncode == 0, done.stderr
        out = config.windows[past].output
        got = read_outputs(
            kafka_bootstrap,
            {out: 2, config.windows[live].output: 2},
            time.monotonic() + 60,
            lambda g: len(g[out]) >= windows,
        )

        def by_window(items: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
            return {
                (r["window_start"], r["window_end"], r["user"]): r
                for r in items
                if r["is_final"] and r["user"] != "zz"
            }

        backfilled = by_window(got[out])
        emitted = by_window(got[config.windows[live].output])
        missed = {start for _, start in late}
        compared = 0
        for key, row in emitted.items():
            if key[0] in missed or key[1] > end.isoformat():
                continue  # late events: the live window lacks what history holds
            mine = backfilled[key]
            for column in ("n", "clicks", "total", "low", "pages", "event_count"):
                assert mine[column] == row[column], (key, column)
            assert mine["mean"] == pytest.approx(row["mean"])
            compared += 1
        assert compared > 2500
        assert cli(path, "windows", "verify", past).returncode == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        sink_log.close()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]

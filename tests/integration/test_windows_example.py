"""The Yle example's windows under ``firelake up``: playback events in through the ingest,
through the router, the three window agents and the sinks into the lake; then
``firelake windows verify`` finds every closed window equal to SQL over the playback table."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from firelake.testing import (
    example_dict,
    free_port,
    query_rows,
    running_pipeline,
    sample_event,
    unique_suffix,
    write_config,
)

pytestmark = pytest.mark.timeout(300)


def test_the_yle_windows_run_under_firelake_up_and_agree_with_the_lake(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    suffix = unique_suffix()
    port = free_port()
    data = example_dict(kafka_bootstrap, tmp_path / "lake", suffix, ingest={"port": port})
    for sink in data["sinks"].values():
        sink["max_seconds"] = 1
    for window in data["windows"].values():
        # The stream stops after the test's events: idle partitions let the last close.
        window["idle_timeout_seconds"] = 3
        window["grace_seconds"] = 5
    config = write_config(tmp_path / "firelake.toml", data)
    events = [sample_event(n) for n in range(1200)]  # 20 minutes of event time
    with running_pipeline(config, port, tmp_path / "up.log") as base:
        url = f"{base}/v1/streams/raw-events-{suffix}/records"
        for start in range(0, len(events), 400):
            records = [
                {"partition_key": e["user_id"], "data": e} for e in events[start : start + 400]
            ]
            request = urllib.request.Request(
                url,
                data=json.dumps({"records": records}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                assert json.loads(response.read())["failed_record_count"] == 0
        # Closed windows only: the last minute stays open, as nothing moves event time past
        # its end (the watermark is the latest event time, 1 199 s, minus the grace).
        plays = sum(1 for n, e in enumerate(events) if e["event_type"] == "start" and n < 1140)
        deadline = time.monotonic() + 120
        counted = 0
        while time.monotonic() < deadline:
            try:
                rows = query_rows(
                    config, "SELECT sum(plays) AS n FROM plays_per_minute WHERE is_final"
                )
                counted = rows[0]["n"] or 0
            except AssertionError:  # no table yet
                counted = 0
            if counted >= plays:
                break
            time.sleep(1)
        assert counted == plays
        for name in ("plays-per-minute", "channel-viewers", "user-sessions"):
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "firelake.cli",
                    "windows",
                    "verify",
                    f"{name}-{suffix}",
                    "--config",
                    str(config),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            assert done.stdout.strip().endswith(" 0 differences"), done.stdout

"""The dashboard in a real headless browser (Debian's ``chromium``), over a Yle lake.

The query service serves the page with the Yle example's saved queries over a lake of
today's plays and a DLQ table. Chromium loads it headless, runs its scripts for a few
(virtual) seconds and dumps the DOM: every report's chart is drawn with rows, the
pipeline panel draws the DLQ chart, and no script error or ``console.error`` happened
(the page records them on ``<body data-errors>``), and the browser's network log names no
host but 127.0.0.1. A screenshot is saved under the test's temporary folder.
"""

from __future__ import annotations

import re
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from firelake.config import EXAMPLE_CONFIG, parse_config
from firelake.testing import example_dict
from queries.service import QueryServerThread
from tests.integration.browserkit import CHROMIUM, headless, off_loopback

TS = pa.timestamp("us", tz="UTC")


def _lake(lake: Path) -> None:
    now = datetime.now(UTC)
    day = now.strftime("%Y-%m-%d")
    for hour in (max(0, now.hour - 1), now.hour):
        folder = lake / "playback" / f"dt={day}" / f"hour={hour:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        n = 300
        pq.write_table(
            pa.table(
                {
                    "event_id": [f"e{hour}-{i}" for i in range(n)],
                    "event_type": ["start" if i % 3 else "stop" for i in range(n)],
                    "content_id": [f"1-{i % 6}" for i in range(n)],
                    "content_type": ["episode"] * n,
                    "user_id": [f"u{i % 40}" for i in range(n)],
                    "device": [("tv", "mobile", "desktop")[i % 3] for i in range(n)],
                    "platform": [("smarttv", "ios", "web")[i % 3] for i in range(n)],
                    "event_time": pa.array([now.replace(hour=hour)] * n, TS),
                }
            ),
            folder / "part-0.parquet",
        )
    # The plays-per-minute window's output: two emits of each minute, the later one final.
    folder = lake / "plays_per_minute" / f"dt={day}" / f"hour={now.hour:02d}"
    folder.mkdir(parents=True)
    minutes = [now.replace(second=0, microsecond=0) - timedelta(minutes=m) for m in range(10)]
    pq.write_table(
        pa.table(
            {
                "window_start": pa.array(minutes * 2, TS),
                "content_id": ["1-1"] * 20,
                "plays": [1] * 10 + [m + 2 for m in range(10)],
                "viewers": [1] * 20,
                "emit_time": pa.array([now] * 10 + [now + timedelta(seconds=1)] * 10, TS),
                "is_final": [False] * 10 + [True] * 10,
            }
        ),
        folder / "part-0.parquet",
    )
    folder = lake / "dlq" / f"dt={day}" / f"hour={now.hour:02d}"
    folder.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "error_type": ["missing_field"] * 5 + ["wrong_type"] * 2,
                "reason": ["no content_id"] * 7,
                "source_topic": ["raw-events"] * 7,
                "failed_at": pa.array([now] * 7, TS),
            }
        ),
        folder / "part-0.parquet",
    )


def test_dashboard_renders_reports_and_health_without_errors(tmp_path: Path) -> None:
    if CHROMIUM is None:
        # `make test` installs it; a run without it must not pass silently.
        pytest.fail("the dashboard test needs Debian's chromium: apt-get install chromium")
    lake = tmp_path / "lake"
    _lake(lake)
    saved = EXAMPLE_CONFIG.parent / "queries"
    raw = example_dict("127.0.0.1:9", lake, query={"port": 0, "saved_dir": str(saved)})
    config = parse_config(raw, source="<test>", base_dir=str(tmp_path), environ={})
    with QueryServerThread(config, port=0) as server:
        for path in ("/static/vendor/uplot/uPlot.iife.min.js", "/static/dashboard.css"):
            with urllib.request.urlopen(server.url + path, timeout=10) as response:
                assert response.status == 200
        netlog = tmp_path / "net.json"
        done = headless(
            tmp_path / "profile", f"--log-net-log={netlog}", "--dump-dom", f"{server.url}/dashboard"
        )
        assert done.returncode == 0, done.stderr[-2000:]
        dom = done.stdout
        body = re.search(r"<body([^>]*)>", dom)
        assert body is not None, dom[:2000]
        rendered = re.search(r'data-rendered="(\d+)"', body.group(1))
        errors = re.search(r'data-errors="([^"]*)"', body.group(1))
        assert errors is not None and errors.group(1) == "", errors
        # top_content (bar), plays_by_device_hourly (line), dlq_by_reason (bar), the live
        # window (line over time), DLQ health.
        assert rendered is not None and int(rendered.group(1)) >= 5, body.group(0)
        names = ("top_content", "plays_by_device_hourly", "dlq_by_reason", "live_plays_per_minute")
        for name in names:
            assert re.search(rf'id="report-{name}"[^>]*data-chart="drawn"', dom), name
        assert dom.count("<canvas") >= 5
        assert "missing_field" in dom and "router " in dom

        shot = tmp_path / "dashboard.png"
        done = headless(tmp_path / "shot", f"--screenshot={shot}", f"{server.url}/dashboard")
        assert done.returncode == 0, done.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000
    assert off_loopback(netlog) == []  # nothing the page (or the browser) asked for left

"""Integration: the sinks process's Prometheus metrics on the real broker."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest

from firelake.broker import free_port
from sinks.fleet import run_sink_fleet
from sinks.testing import playback_sink, produce_playback
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.kafka


def test_sink_metrics_show_rows_files_freshness_and_lag(
    kafka_bootstrap: str, tmp_path: Path, suffix: str
) -> None:
    _, config = playback_sink(kafka_bootstrap, tmp_path, suffix, max_seconds=1)
    (sink,) = config.sinks
    topic = config.sinks[sink].stream
    ensure_topics(config, kafka_bootstrap)
    port = free_port()

    async def main() -> str:
        stop = asyncio.Event()
        fleet = asyncio.create_task(
            run_sink_fleet(config, stop, interval_seconds=0.5, metrics_port=port)
        )
        await produce_playback(kafka_bootstrap, topic, range(300), 4)
        text = ""
        for _ in range(120):  # until the 300 rows are written, at most 60 s
            await asyncio.sleep(0.5)
            text = await asyncio.to_thread(
                lambda: (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
                    .read()
                    .decode()
                )
            )
            if f'firelake_sink_rows_total{{sink="{sink}"}} 300.0' in text:
                break
        stop.set()
        await asyncio.wait_for(fleet, 60)
        return text

    try:
        text = asyncio.run(main())
    finally:
        delete_topics(kafka_bootstrap, list(config.streams))
    assert f'firelake_sink_rows_total{{sink="{sink}"}} 300.0' in text, text
    assert f'firelake_sink_rejoins_total{{sink="{sink}"}} 0.0' in text
    assert "firelake_sink_freshness_seconds" in text and "firelake_sink_lag{" in text
    assert "firelake_sink_files_total" in text and "firelake_sink_buffered_bytes" in text

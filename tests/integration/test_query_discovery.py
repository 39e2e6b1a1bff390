"""Integration (real broker): the query service discovers what a live sink writes.

A Parquet sink consumes Yle playback events from the broker into a fresh lake while the
HTTP query service runs. The service then sees the new table, its partitions and its
first schema version; a query on one hour reads only that hour's files (files read and
bytes scanned say so); after the table's schema gains a column and the sink writes on,
the catalog shows a second version that names the added column, and queries read old and
new files together.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from firelake.config import FirelakeConfig, parse_config
from firelake.testing import example_data, example_dict, sample_event
from queries.catalog import list_tables
from queries.service import QueryServerThread
from sinks.sink import ParquetSink
from streams.envelope import encode
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.kafka

WAIT_SECONDS = 60.0
BASE = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def _event(n: int, **extra: Any) -> dict[str, Any]:
    event = sample_event(n, "start")
    # One event every 6 s: 1 500 events cover 08:00 to 10:30, three hour partitions.
    event["event_time"] = (BASE + timedelta(seconds=6 * n)).isoformat().replace("+00:00", "Z")
    return {**event, **extra}


async def _produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for start in range(0, len(events), 100):
            value, headers = encode([orjson.dumps(e) for e in events[start : start + 100]])
            await producer.send(topic, value, partition=(start // 100) % 4, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


def _rows(lake: Path) -> int:
    return sum(t.rows for t in list_tables(lake) if t.name == "playback")


async def _sink_until(config: FirelakeConfig, lake: Path, rows: int) -> None:
    (name,) = config.sinks
    sink = ParquetSink(config, name)
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while _rows(lake) < rows:
            assert time.monotonic() < deadline and not task.done(), _rows(lake)
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_SECONDS)


def _config(bootstrap: str, lake: Path, suffix: str, data: dict) -> FirelakeConfig:
    raw = example_dict(bootstrap, lake, suffix, data)
    return parse_config(raw, source="<test>", base_dir=str(lake), environ={})


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_new_table_new_column_and_hour_pruning(
    kafka_bootstrap: str, lake: Path, suffix: str
) -> None:
    data = example_data()
    data["sinks"] = {
        "playback": {
            "stream": "playback-events",
            "table": "playback",
            "max_seconds": 1,
            "max_events": 250,
        }
    }
    old = _config(kafka_bootstrap, lake, suffix, data)
    topic = next(iter(old.sinks.values())).stream
    ensure_topics(old, kafka_bootstrap)
    try:
        with QueryServerThread(old, port=0) as server:
            assert _get(f"{server.url}/v1/tables")["tables"] == []

            asyncio.run(_produce(kafka_bootstrap, topic, [_event(n) for n in range(1_500)]))
            asyncio.run(_sink_until(old, lake, 1_500))
            assert "playback" in _post(f"{server.url}/v1/refresh", {})["tables"]
            table = _get(f"{server.url}/v1/tables/playback")
            assert table["rows"] == 1_500 and table["version"] == 1
            assert [p["hour"] for p in table["partitions"]] == [8, 9, 10]
            names = [c["name"] for c in table["glue_columns"]]
            assert "subtitles" not in names and names[-2:] == ["dt", "hour"]

            # One hour's files only: the files read are that folder's, bytes fewer.
            hour9 = next(p for p in table["partitions"] if p["hour"] == 9)
            sql = "SELECT count(*), sum(position_seconds) FROM playback"
            everything = _post(f"{server.url}/v1/query", {"sql": sql})
            pruned = _post(
                f"{server.url}/v1/query",
                {"sql": sql + " WHERE dt = $day AND hour = 9", "params": {"day": "2026-11-29"}},
            )
            assert pruned["rows"][0][0] == 600 and everything["rows"][0][0] == 1_500
            assert pruned["files_read"] == hour9["files"] < everything["files_read"]
            assert 0 < pruned["bytes_scanned"] < everything["bytes_scanned"]

            data["schemas"]["playback"]["fields"]["subtitles"] = "list<string>"
            new = _config(kafka_bootstrap, lake, suffix, data)
            events = [_event(n, subtitles=["fi", "sv"]) for n in range(1_500, 2_000)]
            asyncio.run(_produce(kafka_bootstrap, topic, events))
            asyncio.run(_sink_until(new, lake, 2_000))
            _post(f"{server.url}/v1/refresh", {})
            table = _get(f"{server.url}/v1/tables/playback")
            assert table["version"] == 2
            assert table["versions"][1]["added"] == ["subtitles"]
            assert {"name": "subtitles", "type": "array<string>", "partition_key": False} in (
                table["glue_columns"]
            )
            answer = _post(
                f"{server.url}/v1/query",
                {"sql": "SELECT count(*), count(subtitles) FROM playback"},
            )
            assert answer["rows"] == [[2_000, 500]]
    finally:
        delete_topics(kafka_bootstrap, old.streams)

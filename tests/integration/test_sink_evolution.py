"""Integration: additive schema evolution, declared and inferred, read through DuckDB.

A declared schema gains a column between two runs of the sink; a stream without a schema
sees a new field (and an int column that turns float) mid-stream. Old files are never
rewritten, and the query engine's ``union_by_name`` view reads old and new files together:
old rows read NULL in the new column.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from firelake.config import FirelakeConfig, parse_config
from firelake.testing import example_data, example_dict, sample_event
from queries.engine import QueryEngine
from sinks.sink import ParquetSink
from streams.envelope import encode
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.kafka

WAIT_SECONDS = 30.0


def _event(n: int, **extra: Any) -> dict[str, Any]:
    event = sample_event(n, "start")
    event["event_time"] = event["event_time"].replace("Z", ".000000Z")
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


def _count(lake: Path, table: str) -> int:
    if not (lake / table).exists():
        return 0
    with QueryEngine(lake) as engine:
        return engine.query(f"SELECT count(*) FROM {table}").rows[0][0] if engine.tables else 0


async def _run_until(config: FirelakeConfig, name: str, lake: Path, table: str, rows: int) -> None:
    sink = ParquetSink(config, name)
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while _count(lake, table) < rows:
            assert time.monotonic() < deadline, f"{table}: {_count(lake, table)} of {rows} rows"
            assert not task.done(), task
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_SECONDS)


def _config(bootstrap: str, lake: Path, suffix: str, data: dict) -> FirelakeConfig:
    raw = example_dict(bootstrap, lake, suffix, data)
    return parse_config(raw, source="<test>", base_dir=str(lake), environ={})


def test_a_declared_schema_gains_a_column_without_rewriting_old_files(
    kafka_bootstrap: str, lake: Path, suffix: str
) -> None:
    data = example_data()
    data["sinks"] = {
        "playback": {"stream": "playback-events", "table": "playback", "max_seconds": 1}
    }
    old = _config(kafka_bootstrap, lake, suffix, data)
    (name,) = old.sinks
    topic = old.sinks[name].stream
    ensure_topics(old, kafka_bootstrap)
    try:
        asyncio.run(_produce(kafka_bootstrap, topic, [_event(n) for n in range(1_000)]))
        asyncio.run(_run_until(old, name, lake, "playback", 1_000))
        before = {p: p.stat().st_mtime_ns for p in (lake / "playback").rglob("*.parquet")}

        data["schemas"]["playback"]["fields"]["subtitles"] = "list<string>"
        new = _config(kafka_bootstrap, lake, suffix, data)
        events = [_event(n, subtitles=["fi", "sv"]) for n in range(1_000, 2_000)]
        asyncio.run(_produce(kafka_bootstrap, topic, events))
        asyncio.run(_run_until(new, name, lake, "playback", 2_000))
    finally:
        delete_topics(kafka_bootstrap, old.streams)
    after = {p: p.stat().st_mtime_ns for p in (lake / "playback").rglob("*.parquet")}
    assert all(after.get(p) == mtime for p, mtime in before.items())  # old files untouched
    with QueryEngine(lake) as engine:
        rows = engine.query(
            "SELECT count(*), count(DISTINCT event_id), count(subtitles),"
            " count(*) FILTER (WHERE subtitles = ['fi', 'sv']) FROM playback"
        ).rows
    assert rows == [(2_000, 2_000, 1_000, 1_000)]


def test_an_inferred_table_takes_new_fields_and_widens_types(
    kafka_bootstrap: str, lake: Path, suffix: str
) -> None:
    data = example_data()
    data["sinks"] = {
        "raw": {"stream": "raw-events", "table": "raw", "max_seconds": 1, "max_events": 500}
    }
    config = _config(kafka_bootstrap, lake, suffix, data)
    (name,) = config.sinks
    topic = config.sinks[name].stream
    assert config.schema_of(topic) is None
    ensure_topics(config, kafka_bootstrap)
    first = [{"id": n, "score": n} for n in range(800)]
    second = [{"id": n, "score": n + 0.5, "country": "fi"} for n in range(800, 1_600)]
    try:
        asyncio.run(_produce(kafka_bootstrap, topic, first))
        asyncio.run(_run_until(config, name, lake, "raw", 800))
        asyncio.run(_produce(kafka_bootstrap, topic, second))
        asyncio.run(_run_until(config, name, lake, "raw", 1_600))
    finally:
        delete_topics(kafka_bootstrap, config.streams)
    with QueryEngine(lake) as engine:
        result = engine.query(
            "SELECT count(*), count(DISTINCT id), count(country), sum(score) FROM raw"
        )
    total = sum(range(1_600)) + 0.5 * 800
    assert result.rows == [(1_600, 1_600, 800, total)]

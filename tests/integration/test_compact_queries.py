"""Integration: `firelake compact` while queries run — every count is right, every time.

A sink writes 20 000 events as many small files (flushes of 500 events over 4 partitions
and 6 hours). A thread queries the table in a loop through the query engine while
``firelake compact`` (the real command, in a subprocess) runs three times — merging, then
deleting the retired files once their grace (1 s here) is over. Every query must count
exactly 20 000 rows and 20 000 distinct ids: never both the old files and the new one,
never neither. Afterwards the sink keeps its exactly-once bookkeeping: a restart writes
only what is new.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from firelake.testing import sample_event
from queries.engine import QueryEngine
from sinks.sink import ParquetSink
from sinks.testing import playback_sink
from streams.envelope import encode
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 60.0
EVENTS = 20_000


async def _produce(bootstrap: str, topic: str, first: int, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for start in range(first, first + count, 100):
            lines = []
            for n in range(start, start + 100):
                event = sample_event(n, "start")
                event["event_time"] = event["event_time"].replace("Z", ".000000Z")
                lines.append(orjson.dumps(event))
            value, headers = encode(lines)
            await producer.send(topic, value, partition=(start // 100) % 4, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


async def _sink_until(config, name: str, lake: Path, rows: int) -> None:
    sink = ParquetSink(config, name)
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        with QueryEngine(lake) as engine:
            while True:
                engine.refresh()
                if (
                    engine.tables
                    and engine.query("SELECT count(*) FROM playback").rows[0][0] >= rows
                ):
                    break
                assert time.monotonic() < deadline and not task.done()
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_SECONDS)


def _compact(config_path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("FIRELAKE_LAKE", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "firelake.cli",
            "compact",
            "--config",
            str(config_path),
            "playback",
            "--min-age",
            "0",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_compaction_is_atomic_for_a_loop_of_queries(
    kafka_bootstrap: str, tmp_path: Path, suffix: str
) -> None:
    lake = tmp_path / "lake"
    path, config = playback_sink(
        kafka_bootstrap,
        tmp_path,
        suffix,
        max_events=500,
        max_seconds=1,
        compact_grace_seconds=1.0,
    )
    (name,) = config.sinks
    topic = config.sinks[name].stream
    ensure_topics(config, kafka_bootstrap)
    try:
        asyncio.run(_produce(kafka_bootstrap, topic, 0, EVENTS))
        asyncio.run(_sink_until(config, name, lake, EVENTS))
        files_before = len(list((lake / "playback").rglob("*.parquet")))
        assert files_before >= 40

        results: list[tuple] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def query_loop() -> None:
            try:
                with QueryEngine(lake) as engine:
                    while not stop.is_set():
                        results.append(
                            engine.query(
                                "SELECT count(*), count(DISTINCT event_id) FROM playback"
                            ).rows[0]
                        )
            except BaseException as exc:  # reported in the main thread
                errors.append(exc)

        reader = threading.Thread(target=query_loop)
        reader.start()
        try:
            outputs = [_compact(path)]
            time.sleep(1.5)  # past the grace: the next run deletes the retired files
            outputs.append(_compact(path))
            time.sleep(1.5)
            outputs.append(_compact(path))
            time.sleep(0.5)
        finally:
            stop.set()
            reader.join(WAIT_SECONDS)
        assert not errors, errors
        assert len(results) > 20, len(results)
        assert set(results) == {(EVENTS, EVENTS)}, sorted(set(results))
        assert "merged" in outputs[0] and "deleted 0 retired" in outputs[0]
        assert "deleted 0 retired" not in outputs[1]
        files_after = len(list((lake / "playback").rglob("*.parquet")))
        assert files_after <= 6 < files_before  # one per hour folder

        # The sink's bookkeeping is intact: a restart writes only what is new.
        asyncio.run(_produce(kafka_bootstrap, topic, EVENTS, 1_000))
        asyncio.run(_sink_until(config, name, lake, EVENTS + 1_000))
    finally:
        delete_topics(kafka_bootstrap, config.streams)
    with QueryEngine(lake) as engine:
        rows = engine.query("SELECT count(*), count(DISTINCT event_id) FROM playback").rows
    assert rows == [(EVENTS + 1_000, EVENTS + 1_000)]

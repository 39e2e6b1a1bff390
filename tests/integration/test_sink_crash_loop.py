"""Integration proof: exactly-once through 20 SIGKILLs at random moments, local and S3.

200 000 events flow into a 4-partition stream in 20 waves. After each wave the sink
process (``python -m sinks.sink``) is started and, once it is visibly flushing, killed
with SIGKILL after a random delay — in the middle of a conversion, a Parquet write, an
S3 PUT, a state update, a Kafka commit, wherever the moment falls. Small buffers (2 000
events) make flushes frequent so the kills land among them. A last run catches up and
stops cleanly; then DuckDB counts the lake: ``COUNT(*)`` and ``COUNT(DISTINCT event_id)``
must both equal 200 000. The same loop runs on a local lake and on a real S3 HTTP
endpoint (moto's server on 127.0.0.1), where the progress files live in the bucket too.

Restarts use static group membership (``FIRELAKE_SINK_INSTANCE_ID``) so a new process
gets its partitions at once instead of waiting out the dead one's session.
"""

# ruff: noqa: F811  (test parameters name the fixtures imported from sinks.testing)
from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import orjson
import pyarrow.dataset as ds
import pytest
from aiokafka import AIOKafkaProducer

from firelake.testing import sample_event
from sinks.compaction import live_files
from sinks.destinations import Destination, LocalDestination
from sinks.progress import ProgressStore
from sinks.testing import S3Endpoint, playback_sink, s3, start_sink  # noqa: F401 (s3: a pytest fixture)
from streams.envelope import encode
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
EVENTS = 200_000
KILLS = 20
PARTITIONS = 4
PER_MESSAGE = 100
WAIT_SECONDS = 60.0


async def _produce_wave(bootstrap: str, topic: str, start: int, count: int) -> dict[int, int]:
    """Events start..start+count as envelopes, round robin; returns last offset by partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    last: dict[int, int] = {}
    try:
        futures = []
        for index, first in enumerate(range(start, start + count, PER_MESSAGE)):
            lines = []
            for n in range(first, min(first + PER_MESSAGE, start + count)):
                event = sample_event(n, "start")
                event["event_time"] = event["event_time"].replace("Z", ".000000Z")
                lines.append(orjson.dumps(event))
            value, headers = encode(lines)
            partition = (start // PER_MESSAGE + index) % PARTITIONS
            futures.append(await producer.send(topic, value, partition=partition, headers=headers))
        for future in futures:
            sent = await future
            last[sent.partition] = max(last.get(sent.partition, -1), sent.offset)
    finally:
        await producer.stop()
    return last


def _starts(log: Path) -> int:
    """How many sink processes reached their consume loop (one log line each)."""
    return log.read_text().count(" -> ") if log.exists() else 0


def _progress(store: ProgressStore, topic: str) -> int:
    total = 0
    for partition in range(PARTITIONS):
        state = store.state(topic, partition)
        total += state.last_offset + 1 if state is not None else 0
    return total


def _wait(predicate, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(
                f"sink exited ({proc.returncode}) while waiting for {what}:\n"
                + log.read_text()[-3000:]
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n" + log.read_text()[-3000:])
        time.sleep(0.05)


def _counts(destination: Destination, table: str) -> tuple[int, int]:
    filesystem, root = destination.arrow_fs()
    paths = [f"{root}/{info.key}" for info in live_files(destination, table)]
    events = ds.dataset(paths, filesystem=filesystem, format="parquet").to_table(  # noqa: F841
        columns=["event_id"]
    )
    (row,) = duckdb.sql("SELECT count(*), count(DISTINCT event_id) FROM events").fetchall()
    return row


def _crash_loop(
    bootstrap: str, tmp_path: Path, suffix: str, sink_fields: dict, destination: Destination
) -> None:
    path, config = playback_sink(
        bootstrap, tmp_path, suffix, max_events=2_000, max_seconds=1, **sink_fields
    )
    (sink,) = config.sinks
    topic = config.sinks[sink].stream
    ensure_topics(config, bootstrap)
    store = ProgressStore(destination, sink)
    log = tmp_path / "sink.log"
    rng = random.Random(5)
    last: dict[int, int] = {}
    wave = EVENTS // KILLS
    interrupted = 0  # kills that left a flush half done (an intent without its state)
    try:
        for kill in range(KILLS):
            for p, offset in asyncio.run(
                _produce_wave(bootstrap, topic, kill * wave, wave)
            ).items():
                last[p] = max(last.get(p, -1), offset)
            before = _progress(store, topic)
            # Every fifth run dies by the sink's own hook between writing a flush's files
            # and its state, so some kills certainly land inside a flush; the others at a
            # random moment.
            hooked = kill % 5 == 2
            env = {"FIRELAKE_SINK_CRASH_AT": "after_files"} if hooked else {}
            proc = start_sink(
                path, sink, log, FIRELAKE_SINK_INSTANCE_ID=f"crash-loop-{suffix}", **env
            )
            try:
                if hooked:
                    proc.wait(timeout=WAIT_SECONDS)
                else:
                    _wait(lambda b=before: _progress(store, topic) > b, "a flush", proc, log)
                    time.sleep(rng.uniform(0.0, 1.2))
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            interrupted += any(store.intent(topic, p) for p in range(PARTITIONS))
        target = sum(offset + 1 for offset in last.values())
        started = _starts(log)
        proc = start_sink(path, sink, log, FIRELAKE_SINK_INSTANCE_ID=f"crash-loop-{suffix}")
        try:
            # Up first (the last killed run may have caught up already), then caught up.
            _wait(lambda: _starts(log) > started, "the last start", proc, log)
            _wait(lambda: _progress(store, topic) == target, "catching up", proc, log)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=WAIT_SECONDS) == 0, log.read_text()[-3000:]
        assert _counts(destination, "playback") == (EVENTS, EVENTS)
        for partition in range(PARTITIONS):
            assert store.intent(topic, partition) is None
        # The kills really landed inside flushes, not only between them.
        assert interrupted >= 1, "no kill interrupted a flush"
    finally:
        delete_topics(bootstrap, config.streams)


def test_crash_loop_on_a_local_lake(kafka_bootstrap: str, tmp_path: Path, suffix: str) -> None:
    _crash_loop(kafka_bootstrap, tmp_path, suffix, {}, LocalDestination(tmp_path / "lake"))
    assert not list((tmp_path / "lake").rglob("*.tmp"))


def test_crash_loop_on_s3(
    kafka_bootstrap: str, tmp_path: Path, suffix: str, s3: S3Endpoint
) -> None:
    bucket = f"lake-{suffix}"
    destination = s3.bucket(bucket)
    fields = {"destination": f"s3://{bucket}", **s3.sink_fields()}
    _crash_loop(kafka_bootstrap, tmp_path, suffix, fields, destination)
    assert destination.list("_firelake/sinks/")  # progress lives in the bucket
    assert not (tmp_path / "lake").exists()  # nothing on local disk

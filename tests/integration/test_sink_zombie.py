"""Integration: a zombie sink is fenced — it can neither commit nor overwrite the new owner.

Sink A freezes (SIGSTOP, by its own hook) in the middle of a flush: its intent and data
files are written, its state is not. Its group session times out; sink B takes the
partitions over, claims them (the next owner epoch), removes A's unfinished flush and writes
everything. Then A is resumed and finishes its flush: its state put is refused (fenced), it
drops what it held and rejoins. The lake holds every event exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import duckdb
import pytest

from sinks.progress import ProgressStore
from sinks.testing import playback_sink, produce_playback, start_sink
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.kafka

PARTITIONS = 4
WAIT_SECONDS = 60.0


async def _produce(bootstrap: str, topic: str, numbers: range) -> dict[int, int]:
    return await produce_playback(bootstrap, topic, numbers, PARTITIONS)


def _stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "T"
    except OSError:
        return False


def _wait(condition, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {WAIT_SECONDS} s:\n{log.read_text()}")
        time.sleep(0.2)


def test_a_zombie_sink_is_fenced_and_the_lake_stays_exact(
    kafka_bootstrap: str, tmp_path: Path, suffix: str
) -> None:
    path, config = playback_sink(kafka_bootstrap, tmp_path, suffix, max_seconds=1)
    (sink,) = config.sinks
    topic = config.sinks[sink].stream
    lake = config.lake_root
    ensure_topics(config, kafka_bootstrap)
    store = ProgressStore(lake, sink)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = b = None
    try:
        asyncio.run(_produce(kafka_bootstrap, topic, range(0, 1_000)))
        a = start_sink(path, sink, log_a, FIRELAKE_SINK_CRASH_AT="after_files:1:stop")
        _wait(lambda: _stopped(a.pid), "sink A freezing mid-flush", log_a)
        frozen = [p for p in range(PARTITIONS) if store.intent(topic, p) is not None]
        assert frozen, "A froze without an intent"

        b = start_sink(path, sink, log_b)
        last = asyncio.run(_produce(kafka_bootstrap, topic, range(1_000, 2_000)))

        def caught_up() -> bool:
            states = [store.state(topic, p) for p in last]
            return all(
                s is not None and s.last_offset >= last[p]
                for p, s in zip(last, states, strict=True)
            )

        _wait(caught_up, "sink B catching up", log_b)
        epochs = {p: store.state(topic, p).epoch for p in last}  # type: ignore[union-attr]
        assert all(epoch >= 2 for epoch in epochs.values()), epochs

        a.send_signal(signal.SIGCONT)  # the zombie wakes up and finishes its flush
        _wait(lambda: "superseded" in log_a.read_text(), "the zombie being fenced", log_a)
        assert a.poll() is None, "the fenced sink should rejoin, not die"
        assert "rejoining" in log_a.read_text()

        last = asyncio.run(_produce(kafka_bootstrap, topic, range(2_000, 2_500)))
        _wait(caught_up, "the sinks catching up after the zombie woke", log_b)
        for proc, log in ((a, log_a), (b, log_b)):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=WAIT_SECONDS) == 0, log.read_text()

        glob = f"{lake}/playback/**/*.parquet"
        (row,) = duckdb.sql(
            f"SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{glob}', "
            "hive_partitioning=true, hive_types={'hour': INTEGER})"
        ).fetchall()
        assert row == (2_500, 2_500), (row, log_a.read_text()[-3000:])
        assert not any(store.intent(topic, p) for p in range(PARTITIONS))
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(timeout=10)
        delete_topics(kafka_bootstrap, list(config.streams))

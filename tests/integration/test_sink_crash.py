"""Integration: exactly-once files across real crashes of the sink process.

Runs ``python -m sinks.sink`` as a subprocess with ``FIRELAKE_SINK_CRASH_AT`` armed, so the
process SIGKILLs itself at a chosen moment of a flush — after the intent, right after the
data files were written but before the state and the Kafka commit, after the state, after
the commit — then restarts it without the hook and checks that the lake holds every
produced event exactly once: ``COUNT(*)`` and ``COUNT(DISTINCT event_id)`` both equal the
number produced.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from firelake.config import FirelakeConfig, load_config
from firelake.testing import example_data, example_dict, sample_event, write_config
from sinks.progress import ProgressStore
from sinks.testing import produce_playback, start_sink, stop_sink
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
EVENTS = 3_000
PARTITIONS = 4
WAIT_SECONDS = 30.0


@pytest.fixture
def setup(kafka_bootstrap: str, lake: Path, suffix: str, tmp_path: Path):
    """The config (a playback sink only) and a function rewriting its file with a new
    ``max_events``; creates the topics."""
    data = example_data()
    data["sinks"] = {"playback": {"stream": "playback-events", "table": "playback"}}
    data["sinks"]["playback"]["max_seconds"] = 1
    raw = example_dict(kafka_bootstrap, lake, suffix, data)
    path = tmp_path / "firelake.toml"

    def configure(max_events: int) -> Path:
        (sink,) = raw["sinks"].values()
        sink["max_events"] = max_events
        return write_config(path, raw)

    config = load_config(configure(300), environ={})
    ensure_topics(config, kafka_bootstrap)
    yield configure, config
    delete_topics(kafka_bootstrap, config.streams)


async def _produce(bootstrap: str, topic: str) -> dict[int, int]:
    """Produce EVENTS events in envelopes of 50; returns each partition's last offset."""

    def event(n: int) -> dict[str, Any]:
        record = sample_event(n, "start")
        record["event_time"] = record["event_time"].replace("Z", ".000000Z")
        return record

    return await produce_playback(bootstrap, topic, range(EVENTS), PARTITIONS, event)


def _start(config_path: Path, sink: str, log: Path, crash_at: str | None) -> subprocess.Popen:
    return start_sink(
        config_path, sink, log, **({"FIRELAKE_SINK_CRASH_AT": crash_at} if crash_at else {})
    )


def _wait_caught_up(store: ProgressStore, topic: str, last: dict[int, int], proc) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        states = {p: store.state(topic, p) for p in last}
        if all(s is not None and s.last_offset == last[p] for p, s in states.items()):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the sink exited with {proc.returncode} before catching up")
        if time.monotonic() > deadline:
            raise AssertionError(f"sink did not catch up in {WAIT_SECONDS} s: {states}")
        time.sleep(0.1)


def _counts(lake: Path) -> tuple[int, int]:
    glob = f"{lake}/playback/**/*.parquet"
    (row,) = duckdb.sql(
        f"SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{glob}', "
        "hive_partitioning=true, hive_types={'hour': INTEGER})"
    ).fetchall()
    return row


def _uncommitted_files(store: ProgressStore, topic: str, lake: Path) -> list[Path]:
    """Data files an interrupted flush left in the lake (listed by an open intent)."""
    found = []
    for partition in range(PARTITIONS):
        intent = store.intent(topic, partition)
        state = store.state(topic, partition)
        if intent and (state is None or intent.last_offset > state.last_offset):
            found += [lake / f for f in intent.files if (lake / f).exists()]
    return found


#: Where the sink is killed, run after run: right after a flush's data files were written
#: (before its state and Kafka commit), after an intent, after a state, after a commit.
#: Each run flushes at another size, so a re-read flush gets other offset ranges, hence
#: other file names: files of an unfinished flush must be deleted, not just overwritten.
CRASHES = ("after_files", "after_intent:2", "after_state:2", "after_commit")


def test_killed_sink_restarts_without_losing_or_duplicating_events(
    setup: tuple[Callable[[int], Path], FirelakeConfig], lake: Path, tmp_path: Path
) -> None:
    configure, config = setup
    (sink,) = config.sinks
    topic = config.sinks[sink].stream
    store = ProgressStore(lake, sink)
    last = asyncio.run(_produce(config.kafka.bootstrap, topic))
    log = tmp_path / "sink.log"

    for run, point in enumerate(CRASHES):
        proc = _start(configure(300 + 70 * run), sink, log, point)
        try:
            returncode = proc.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise AssertionError(f"the sink never reached {point}:\n{log.read_text()}") from None
        assert returncode == -signal.SIGKILL, log.read_text()
        if point.startswith("after_files"):
            # The hard case is real: Parquet files are in the lake that no state covers.
            assert _uncommitted_files(store, topic, lake), "no uncommitted files after the kill"

    proc = _start(configure(1_000), sink, log, None)
    try:
        _wait_caught_up(store, topic, last, proc)
    finally:
        stop_sink(proc, log, WAIT_SECONDS)

    assert _counts(lake) == (EVENTS, EVENTS), log.read_text()
    assert not list(lake.rglob("*.tmp"))
    assert not list(lake.rglob("*.intent.json"))

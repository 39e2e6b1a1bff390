"""Integration: the raw archive gives back what the stream had (issue 13).

Events go into a real stream in three phases a second apart, a real sink archives them,
and then, from the archive:

- ``replay --from-archive`` into a stream of the same partition count puts every event
  on its source partition with its key, each key's events in order; a second run adds
  nothing;
- ``--from`` / ``--to`` (ingest times between the phases) select exactly the middle
  phase, into a stream of another partition count by key; a rerun adds nothing, and a
  wider rerun adds exactly the rest;
- ``record --from-archive`` writes the same lines as recording the live stream over the
  same range.

An archive written before entries kept key and place (bare event lines) still replays,
round robin, and the report says so.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from pathlib import Path

import orjson
import pytest

from firelake.cli import main as cli
from firelake.testing import sample_event
from sinks.paths import archive_file_name
from sinks.testing import playback_sink, produce_playback, sink_until_flushed
from streams.partitioning import partition_for_key
from streams.recorded import RecordedEvent, events_of_message
from streams.replay import read_topic
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.kafka

PHASE = 150  # events per phase (envelopes of 50 per partition)


async def _events(bootstrap: str, topic: str, partitions: int) -> list[RecordedEvent]:
    """Every event of a topic, each partition's in order."""
    events: list[RecordedEvent] = []
    async for p, m in read_topic(bootstrap, topic, range(partitions)):
        events += events_of_message(m.value, m.headers, m.key, p, m.offset, m.timestamp)
    return events


def _by_key(events: list[RecordedEvent]) -> dict[str, list[tuple[int | None, bytes]]]:
    keyed: dict[str, list[tuple[int | None, bytes]]] = {}
    for e in events:
        assert e.key is not None
        keyed.setdefault(e.key, []).append((e.partition, e.value))
    return keyed


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _replay(path: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli(["replay", "--config", str(path), "--quiet", "--from-archive", *args]) == 0
    return capsys.readouterr().out


def test_replay_and_record_from_the_archive_keep_keys_order_and_range_idempotently(
    kafka_bootstrap: str, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, config = playback_sink(kafka_bootstrap, tmp_path, suffix, archive=True, max_seconds=1)
    (name,) = config.sinks
    source = config.sinks[name].stream
    same = next(s for s in config.streams if s.startswith("raw-events"))
    other = next(s for s in config.streams if s.startswith("user-sessions"))
    assert config.streams[same].partitions == config.streams[source].partitions == 4
    assert config.streams[other].partitions == 2
    ensure_topics(config, kafka_bootstrap)
    try:
        marks = []
        for phase in range(3):
            if phase:
                time.sleep(1.1)
                marks.append(_now_ms())
                time.sleep(0.05)
            numbers = range(phase * PHASE, (phase + 1) * PHASE)
            asyncio.run(produce_playback(kafka_bootstrap, source, numbers, 4))
        asyncio.run(sink_until_flushed(config, name, 3 * PHASE))
        original = asyncio.run(_events(kafka_bootstrap, source, 4))
        assert len(original) == 3 * PHASE

        # The whole archive, same partition count: partitions, keys and order as they were.
        out = _replay(path, "playback", "--into", same, capsys=capsys)
        assert f"replayed {3 * PHASE} events" in out
        replayed = asyncio.run(_events(kafka_bootstrap, same, 4))
        assert _by_key(replayed) == _by_key(original)
        assert _replay(path, "playback", "--into", same, capsys=capsys).startswith(
            "replayed 0 events"
        )
        assert len(asyncio.run(_events(kafka_bootstrap, same, 4))) == 3 * PHASE

        # The middle phase by ingest time, two partitions: by key, in order, once.
        middle = [e for e in original if marks[0] <= e.timestamp < marks[1]]
        assert len(middle) == PHASE
        window = ("--from", f"@{marks[0]}", "--to", f"@{marks[1]}")
        _replay(path, "playback", "--into", other, *window, capsys=capsys)
        _replay(path, "playback", "--into", other, *window, capsys=capsys)
        into_other = asyncio.run(_events(kafka_bootstrap, other, 2))
        expected = {
            key: [(partition_for_key(key, 2), value) for _, value in items]
            for key, items in _by_key(middle).items()
        }
        assert _by_key(into_other) == expected
        # A wider run sends exactly what the target lacks.
        out = _replay(path, "playback", "--into", other, capsys=capsys)
        assert f"replayed {2 * PHASE} events" in out and f"{PHASE} events were replayed" in out
        assert sorted(e.value for e in asyncio.run(_events(kafka_bootstrap, other, 2))) == sorted(
            e.value for e in original
        )

        # Recording the range from the archive gives the live recording's lines.
        live, archived = tmp_path / "live.jsonl", tmp_path / "archived.jsonl"
        for out_file, extra in ((live, ()), (archived, ("--from-archive", "playback"))):
            args = [source, *window, "--out", str(out_file), "--quiet", *extra]
            assert cli(["record", "--config", str(path), *args]) == 0
        assert live.read_bytes() == archived.read_bytes()
        assert len(live.read_bytes().splitlines()) == PHASE
    finally:
        delete_topics(kafka_bootstrap, config.streams)


def test_an_older_archive_of_bare_lines_still_replays_round_robin_and_says_so(
    kafka_bootstrap: str, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, config = playback_sink(kafka_bootstrap, tmp_path, suffix, archive=True)
    (sink,) = config.sinks.values()
    source = sink.stream
    target = next(s for s in config.streams if s.startswith("raw-events"))
    lines = [orjson.dumps(sample_event(n, "start")) for n in range(10)]
    folder = tmp_path / "lake" / "_archive" / "playback" / "dt=2026-11-29" / "hour=08"
    folder.mkdir(parents=True)
    (folder / archive_file_name(source, 0, 0, 9)).write_bytes(
        gzip.compress(b"\n".join(lines) + b"\n")
    )
    ensure_topics(config, kafka_bootstrap)
    try:
        out = _replay(path, "playback", "--into", target, "--from", "@1", capsys=capsys)
        assert "replayed 0 events" in out and "10 such events" in out
        out = _replay(path, "playback", "--into", target, capsys=capsys)
        assert "replayed 10 events" in out and "10 events of an archive written before" in out
        replayed = asyncio.run(_events(kafka_bootstrap, target, 4))
    finally:
        delete_topics(kafka_bootstrap, config.streams)
    assert sorted(e.value for e in replayed) == sorted(lines)

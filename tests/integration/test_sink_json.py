"""JSON-lines sinks (Firehose without format conversion) across a real crash.

A ``format = "json"`` sink killed in the middle of a flush (after its files, before its
state) restarts and leaves exactly one line per event, on a local lake and on S3 (moto).
The Firehose API side — boto3 creating such a delivery stream and SQL reading it — is in
``test_firehose_api.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from firelake.config import load_config
from firelake.testing import example_data, example_dict, write_config
from queries.engine import QueryEngine
from sinks.destinations import Destination, LocalDestination
from sinks.progress import ProgressStore
from sinks.testing import S3Endpoint, produce_playback, s3, start_sink, stop_sink  # noqa: F401
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.kafka

EVENTS = 5_000
WAIT_SECONDS = 60.0


def json_lines(destination: Destination, table: str) -> list[bytes]:
    out: list[bytes] = []
    for info in destination.list(f"{table}/"):
        if info.key.endswith(".jsonl.gz"):
            out += gzip.decompress(destination.get(info.key) or b"").splitlines()
    return out


@pytest.mark.parametrize("where", ["local", "s3"])
def test_killed_json_sink_leaves_each_event_once(
    kafka_bootstrap: str, lake: Path, suffix: str, tmp_path: Path, where: str, request: Any
) -> None:
    data = example_data()
    sink: dict[str, Any] = {
        "stream": "playback-events",
        "table": "playback",
        "format": "json",
        "max_events": 700,
        "max_seconds": 1,
    }
    destination: Destination = LocalDestination(lake)
    if where == "s3":
        endpoint: S3Endpoint = request.getfixturevalue("s3")
        bucket = f"json-{uuid.uuid4().hex[:12]}"
        destination = endpoint.bucket(bucket)
        sink.update(destination=f"s3://{bucket}", **endpoint.sink_fields())
    data["sinks"] = {"playback": sink}
    raw = example_dict(kafka_bootstrap, lake, suffix, data)
    path = write_config(tmp_path / "firelake.toml", raw)
    config = load_config(path, environ={})
    ensure_topics(config, kafka_bootstrap)
    (name,) = config.sinks
    topic = config.sinks[name].stream
    try:
        last = asyncio.run(produce_playback(kafka_bootstrap, topic, range(EVENTS), 4))
        log = tmp_path / "sink.log"
        # Killed after its second flush's files are in the lake, before their state.
        proc = start_sink(path, name, log, FIRELAKE_SINK_CRASH_AT="after_files:2")
        assert proc.wait(timeout=WAIT_SECONDS) == -signal.SIGKILL, log.read_text()
        assert len(json_lines(destination, "playback")) > 0
        store = ProgressStore(destination, name)
        proc = start_sink(path, name, log)
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            while True:
                states = {p: store.state(topic, p) for p in last}
                if all(s is not None and s.last_offset == last[p] for p, s in states.items()):
                    break
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            stop_sink(proc, log, WAIT_SECONDS)
        found = json_lines(destination, "playback")
        ids = [json.loads(line)["event_id"] for line in found]
        assert len(ids) == EVENTS == len(set(ids))
        with QueryEngine(destination) as engine:
            assert engine.query("SELECT count(DISTINCT event_id) FROM playback").rows == [(EVENTS,)]
    finally:
        delete_topics(kafka_bootstrap, config.streams)

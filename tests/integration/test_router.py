"""Integration: the router agent as a subprocess against the real broker.

Produces raw envelopes (the ingest's contract) with valid playback and page events and
invalid ones, runs ``python -m agents.router``, reads the typed streams and the DLQ back and
checks every valid event arrived once, on its key's partition, in order per key, and every
invalid one is in the DLQ with its reason; then stops the router with SIGTERM. The tests run
on both router engines (``routers.<name>.engine``): the transactional worker and the Faust
agent share the routing core, the retry policy and the DLQ fallback, so they must agree.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.router import app_id
from firelake.config import FirelakeConfig, load_config
from firelake.testing import example_dict, sample_event, write_config
from streams.partitioning import partition_for_key
from tests.integration.routerkit import (
    REPO,
    committed_offsets,
    create_topics,
    end_offsets,
    produce,
    raw_envelopes,
    read_records,
    start_router,
    tail,
)
from tests.integration.routerkit import running as running  # the fixture

pytestmark = pytest.mark.kafka

WAIT_SECONDS = 60.0
STOP_SECONDS = 30.0
#: Router engines (routers.<name>.engine) every test here runs on.
ENGINES = ("transactional", "faust")


def write_example_config(
    path: Path, bootstrap: str, lake: Path, suffix: str, engine: str = "transactional"
) -> FirelakeConfig:
    """The example config with unique names and the given router engine, as TOML, loaded."""
    data = example_dict(bootstrap, lake, suffix)
    for router in data["routers"].values():
        router["engine"] = engine
    write_config(path, data)
    return load_config(path, environ={})


# ---------------------------------------------------------------- the data


BAD_LINES = {
    "bad-json": (b"{not json", "invalid_json", "invalid JSON"),
    "bad-array": (b"[1, 2]", "not_an_object", "expected a JSON object"),
    "bad-route": (
        orjson.dumps({**sample_event(9000, "start"), "event_type": "bogus"}),
        "no_route",
        "no route for 'bogus'",
    ),
    "bad-missing": (
        orjson.dumps({k: v for k, v in sample_event(9001, "page_view").items() if k != "page"}),
        "missing_field",
        "field 'page': required, is missing",
    ),
    "bad-time": (
        orjson.dumps({**sample_event(9002, "stop"), "event_time": "yesterday"}),
        "wrong_type",
        "field 'event_time': expected timestamp, got 'yesterday'",
    ),
}


async def _consume(
    bootstrap: str, topics: dict[str, int], want: dict[str, int], deadline: float
) -> dict[str, list[tuple[int, Any]]]:
    """(partition, (event, key, Kafka record)) per topic until each has ``want`` events."""
    got = await read_records(
        bootstrap, topics, deadline, lambda got: all(len(got[t]) >= want[t] for t in topics)
    )
    return {t: [(p, (e, k, r)) for p, e, k, r in items] for t, items in got.items()}


@pytest.mark.parametrize("engine", ENGINES)
def test_router_routes_valid_events_and_dead_letters_invalid_ones(
    engine: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    suffix: str,
    lake: Path,
    running: list[subprocess.Popen[bytes]],
) -> None:
    config_path = tmp_path / "firelake.toml"
    config = write_example_config(config_path, kafka_bootstrap, lake, suffix, engine)
    create_topics(config, kafka_bootstrap)
    router_name = next(iter(config.routers))
    proc, log_path = start_router(tmp_path, config_path, router_name, kafka_bootstrap)
    running.append(proc)
    spec = config.routers[router_name]
    raw = config.streams[spec.source]
    playback_stream = spec.routes["start"][0]
    page_stream = spec.routes["page_view"][0]

    valid = [sample_event(n) for n in range(120)]
    records = [(e["user_id"], orjson.dumps(e)) for e in valid]
    for name, (line, _, _) in BAD_LINES.items():
        records.insert(len(records) // 2, (name, line))
    messages = raw_envelopes(records, raw.partitions)
    # A message claiming 5 events that holds 2: the whole message goes to the DLQ.
    broken_value = b'{"a":1}\n{"b":2}'
    broken_headers = [("fl-format", b"ndjson/1"), ("fl-count", b"5")]
    messages.append((0, broken_value, broken_headers, b"broken"))
    # One message without envelope headers: a single event, keyed by the Kafka key.
    single = sample_event(500, "click")
    messages.append(
        (
            partition_for_key(single["user_id"], raw.partitions),
            orjson.dumps(single),
            None,
            single["user_id"].encode(),
        )
    )
    valid.append(single)
    asyncio.run(produce(kafka_bootstrap, raw.name, messages))

    playback = [e for e in valid if e["event_type"] in ("start", "pause", "stop", "heartbeat")]
    pages = [e for e in valid if e["event_type"] in ("page_view", "click")]
    want = {playback_stream: len(playback), page_stream: len(pages), spec.dlq: len(BAD_LINES) + 1}
    topics = {name: config.streams[name].partitions for name in want}
    got = asyncio.run(_consume(kafka_bootstrap, topics, want, time.monotonic() + WAIT_SECONDS))
    assert proc.poll() is None, tail(log_path)

    for stream, expected in ((playback_stream, playback), (page_stream, pages)):
        partitions = config.streams[stream].partitions
        received = got[stream]
        ids = [record["event_id"] for _, (record, _, _) in received]
        assert sorted(ids) == sorted(e["event_id"] for e in expected), stream  # once each
        by_id = {e["event_id"]: e for e in expected}
        per_key: dict[str, list[str]] = {}
        for partition, (record, key, message) in received:
            source = by_id[record["event_id"]]
            assert key == source["user_id"]
            assert partition == partition_for_key(source["user_id"], partitions)
            assert record["event_time"] == source["event_time"].replace("Z", ".000000Z")
            assert record["receive_time"].endswith("Z") and len(record["receive_time"]) == 27
            assert dict(message.headers)["fl-format"] == b"ndjson/1"
            per_key.setdefault(key, []).append(record["event_id"])
        for key, ids_of_key in per_key.items():
            assert ids_of_key == sorted(ids_of_key), f"order of key {key} on {stream}"

    dead = {
        record["source_index"]
        if record["error_type"] == "envelope_error"
        else record["payload"]: record
        for _, (record, _, _) in got[spec.dlq]
    }
    assert len(got[spec.dlq]) == len(BAD_LINES) + 1
    for line, error_type, reason in BAD_LINES.values():
        record = dead[line.decode()]
        assert record["error_type"] == error_type
        assert reason in record["reason"]
        assert record["router"] == router_name
        assert record["source_topic"] == raw.name
        assert record["source_index"] >= 0
    broken = dead[-1]
    assert broken["error_type"] == "envelope_error"
    assert broken["payload"] == broken_value.decode()
    assert broken["source_partition"] == 0

    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"router did not stop within {STOP_SECONDS}s after SIGTERM")
    assert code == 0, tail(log_path)
    # A clean stop commits every routed input: nothing is routed twice after a restart.
    ends = {p: o for p, o in end_offsets(kafka_bootstrap, raw.name, raw.partitions).items() if o}
    committed = committed_offsets(kafka_bootstrap, app_id(router_name), raw.name)
    assert {p: committed.get(p) for p in ends} == ends


def _refusing_setup(
    tmp_path: Path, bootstrap: str, lake: Path, suffix: str, refuse: str, engine: str
) -> tuple[Path, FirelakeConfig, str, int]:
    """Raw events for the page stream; stream ``refuse`` ('page' or 'dlq' too) takes <= 1 KiB."""
    config_path = tmp_path / "firelake.toml"
    data = example_dict(bootstrap, lake, suffix)
    router_name = next(iter(data["routers"]))
    data["routers"][router_name].update(
        max_retry_attempts=2, retry_base_seconds=0.05, engine=engine
    )
    write_config(config_path, data)
    config = load_config(config_path, environ={})
    spec = config.routers[router_name]
    page_stream = spec.routes["click"][0]
    small = {"max.message.bytes": "1024"}
    refused = {page_stream: small} if refuse == "page" else {page_stream: small, spec.dlq: small}
    create_topics(config, bootstrap, refused)
    raw = config.streams[spec.source]
    events = [sample_event(n * 997 * 6, "click") for n in range(20)]  # one user: one envelope
    messages = raw_envelopes([(e["user_id"], orjson.dumps(e)) for e in events], raw.partitions)
    asyncio.run(produce(bootstrap, raw.name, messages))
    (partition,) = {m[0] for m in messages}
    return config_path, config, router_name, partition


@pytest.mark.parametrize("engine", ENGINES)
def test_refused_output_is_retried_then_dead_lettered_with_its_attempts(
    engine: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    suffix: str,
    lake: Path,
    running: list[subprocess.Popen[bytes]],
) -> None:
    config_path, config, name, partition = _refusing_setup(
        tmp_path, kafka_bootstrap, lake, suffix, "page", engine
    )
    spec = config.routers[name]
    proc, log_path = start_router(tmp_path, config_path, name, kafka_bootstrap)
    running.append(proc)
    got = asyncio.run(
        _consume(kafka_bootstrap, {spec.dlq: 1}, {spec.dlq: 20}, time.monotonic() + WAIT_SECONDS)
    )
    dead = [record for _, (record, _, _) in got[spec.dlq]]
    assert len(dead) == 20, tail(log_path)
    assert {d["error_type"] for d in dead} == {"delivery_failed"}
    assert all("MessageSizeTooLarge" in d["reason"] for d in dead)
    assert {d["attempts"] for d in dead} == {3}  # the first try and two retries
    assert all(d["first_attempt_at"] <= d["last_attempt_at"] for d in dead)
    assert sorted(d["source_index"] for d in dead) == list(range(20))
    assert log_path.read_text().count("retry") >= 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=STOP_SECONDS) == 0, tail(log_path)
    committed = committed_offsets(kafka_bootstrap, app_id(name), spec.source)
    assert committed.get(partition) == 1  # consumed: its events are in the DLQ


@pytest.mark.parametrize("engine", ENGINES)
def test_router_crashes_without_committing_when_even_the_dlq_refuses(
    engine: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    suffix: str,
    lake: Path,
    running: list[subprocess.Popen[bytes]],
) -> None:
    config_path, config, name, partition = _refusing_setup(
        tmp_path, kafka_bootstrap, lake, suffix, "dlq", engine
    )
    spec = config.routers[name]
    proc, log_path = start_router(tmp_path, config_path, name, kafka_bootstrap)
    running.append(proc)
    try:
        code = proc.wait(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"router kept running after a failed delivery:\n{tail(log_path)}")
    assert code != 0
    assert "could not deliver the envelopes routed from" in log_path.read_text(errors="replace")
    committed = committed_offsets(kafka_bootstrap, app_id(name), spec.source)
    assert committed.get(partition, -1) <= 0, committed  # the refused input is not committed


def test_cli_refuses_an_unknown_router_and_a_missing_bootstrap(tmp_path: Path, lake: Path) -> None:
    from agents.router import main

    config_path = tmp_path / "firelake.toml"
    write_example_config(config_path, "", lake, "cli")
    assert main(["--config", str(config_path), "--router", "nope"]) == 2
    env = {k: v for k, v in os.environ.items() if k != "FIRELAKE_KAFKA_BOOTSTRAP"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents.router",
            "--config",
            str(config_path),
            "--router",
            "clickstream-cli",
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert b"kafka.bootstrap is empty" in result.stderr

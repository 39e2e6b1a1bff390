"""The whole pipeline, end to end, on the real broker: `firelake up`, HTTP in, SQL out.

A mixed batch of valid playback and page events plus invalid ones goes in through the ingest
API; every valid event must land in its table exactly once and every invalid one in the DLQ
table with its reason, within the flush interval plus a few seconds. The same events through
`envelope = "single"` streams must give the same tables. Batch envelopes run on both router
engines (the transactional worker and the Faust agent); without a crash both deliver once.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from firelake.config import load_config
from firelake.testing import (
    example_dict,
    free_port,
    query_rows,
    run_cli,
    running_pipeline,
    sample_event,
    write_config,
)

pytestmark = pytest.mark.kafka

FLUSH_SECONDS = 2
DEADLINE_SECONDS = 90  # flush interval + router/sink start-up (Faust joins its group) + slack


def _post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _invalid_events() -> list[tuple[Any, str]]:
    """(data, a phrase its DLQ reason must contain) for each kind of bad event."""
    missing = sample_event(90_001, "start")
    del missing["content_id"]
    wrong_type = sample_event(90_002, "heartbeat")
    wrong_type["position_seconds"] = "ten"
    bad_time = sample_event(90_003, "page_view")
    bad_time["event_time"] = "yesterday"
    unknown = sample_event(90_004, "teleport")
    return [
        (missing, "content_id"),
        (wrong_type, "position_seconds"),
        (bad_time, "event_time"),
        (unknown, "teleport"),
        ("just a string", "object"),
        ({"no_type": 1}, "event_type"),
    ]


@pytest.fixture
def pipeline(request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path: Path, suffix: str):
    envelope, engine = request.param
    port = free_port()
    data = example_dict(kafka_bootstrap, tmp_path / "lake", suffix, ingest={"port": port})
    for router in data["routers"].values():
        router["engine"] = engine
    for name, stream in data["streams"].items():
        if not name.startswith("dlq"):
            stream["envelope"] = envelope
    for sink in data["sinks"].values():
        sink["max_seconds"] = FLUSH_SECONDS
    config = write_config(tmp_path / "firelake.toml", data)
    with running_pipeline(config, port, tmp_path / "up.log") as base:
        yield config, base, suffix


# Envelopes x engines without multiplying the slowest test: the envelope format is the
# streams' and sinks' concern, the engine the router's; each pair that differs runs once.
@pytest.mark.parametrize(
    "pipeline",
    [("batch", "transactional"), ("batch", "faust"), ("single", "transactional")],
    ids=["batch-transactional", "batch-faust", "single-transactional"],
    indirect=True,
)
def test_mixed_batch_lands_exactly_once_and_bad_events_in_dlq(pipeline) -> None:
    config, base, suffix = pipeline
    valid = [sample_event(n) for n in range(600)]
    invalid = _invalid_events()
    records = [{"data": e, "partition_key": e["user_id"]} for e in valid]
    records += [{"data": data, "partition_key": f"bad-{i}"} for i, (data, _) in enumerate(invalid)]
    # Two requests, bad events in the middle of the second, as producers would send them.
    first, second = records[:300], records[300:]
    second = second[:100] + second[-len(invalid) :] + second[100 : -len(invalid)]
    for chunk in (first, second):
        status, answer = _post(f"{base}/v1/streams/raw-events-{suffix}/records", {"records": chunk})
        assert status == 200, answer
        assert answer["failed_record_count"] == 0, answer
        assert len(answer["records"]) == len(chunk)

    playback_ids = sorted(
        e["event_id"] for e in valid if e["event_type"] not in ("page_view", "click")
    )
    page_ids = sorted(e["event_id"] for e in valid if e["event_type"] in ("page_view", "click"))
    deadline = time.monotonic() + DEADLINE_SECONDS
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = {}
        for table in ("playback", "page", "dlq"):
            try:
                counts[table] = query_rows(config, f"SELECT count(*) AS n FROM {table}")[0]["n"]
            except AssertionError:  # the table has no files yet
                counts[table] = 0
        if counts == {"playback": len(playback_ids), "page": len(page_ids), "dlq": len(invalid)}:
            break
        time.sleep(1)
    assert counts == {"playback": len(playback_ids), "page": len(page_ids), "dlq": len(invalid)}

    # Exactly once: every id once, no other ids.
    rows = query_rows(config, "SELECT event_id FROM playback ORDER BY event_id")
    assert [r["event_id"] for r in rows] == playback_ids
    rows = query_rows(config, "SELECT event_id FROM page ORDER BY event_id")
    assert [r["event_id"] for r in rows] == page_ids

    # Values survive the trip; the router stamped the receive time; hive partitions by event time.
    row = query_rows(config, "SELECT * FROM playback WHERE event_id = 'evt-00000000'")[0]
    assert row["content_id"] == "1-0" and row["position_seconds"] == 0
    assert row["receive_time"] is not None
    assert str(row["dt"]).startswith("2026-11-29") and int(row["hour"]) == 8

    # Every bad event is in the DLQ with a reason that names what was wrong.
    dlq = query_rows(config, "SELECT reason, error_type, payload, source_topic FROM dlq")
    for data, phrase in invalid:
        payload = json.dumps(data, separators=(",", ":"))
        matches = [r for r in dlq if r["payload"] == payload]
        assert len(matches) == 1, (payload, dlq)
        assert phrase in matches[0]["reason"], matches[0]
        assert matches[0]["source_topic"] == f"raw-events-{suffix}"


def test_two_ingest_workers_share_the_port_and_lose_nothing(
    kafka_bootstrap: str, tmp_path: Path, suffix: str
) -> None:
    """``[ingest] workers = 2``: two ingest processes listen on one port (SO_REUSEPORT);
    requests on fresh connections are all accepted and every event is in the lake once.
    The sinks process serves its metrics on ``[metrics] base_port``, the router and the
    windows (no ``metrics_port`` of their own) on the next ports, as ``firelake status``
    says."""
    port = free_port()
    metrics_port = free_port()
    data = example_dict(
        kafka_bootstrap,
        tmp_path / "lake",
        suffix,
        ingest={"port": port, "workers": 2},
        metrics={"base_port": metrics_port},
    )
    for sink in data["sinks"].values():
        sink["max_seconds"] = FLUSH_SECONDS
    config = write_config(tmp_path / "firelake.toml", data)
    events = [sample_event(n, "page_view") for n in range(2_000)]
    log = tmp_path / "up.log"
    with running_pipeline(config, port, log) as base:
        # A new connection per request, so the kernel spreads them over both workers.
        for start in range(0, len(events), 100):
            chunk = events[start : start + 100]
            records = [{"data": e, "partition_key": e["user_id"]} for e in chunk]
            status, answer = _post(
                f"{base}/v1/streams/raw-events-{suffix}/records", {"records": records}
            )
            assert status == 200 and answer["failed_record_count"] == 0, answer
        deadline = time.monotonic() + DEADLINE_SECONDS
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                rows = query_rows(
                    config, "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM page"
                )
            except AssertionError:  # no files yet
                rows = []
            if rows and rows[0]["n"] >= len(events):
                break
            time.sleep(1)
        assert rows == [{"n": 2_000, "d": 2_000}]
        sink_rows = _scrape(metrics_port, "firelake_sink_rows_total", "sink", f"page-{suffix}")
        assert sink_rows == 2_000
        # The router's one worker binds the first free port of its two.
        routed = [
            _scrape(p, "firelake_router_events_in_total", "router", f"clickstream-{suffix}")
            for p in (metrics_port + 1, metrics_port + 2)
        ]
        assert 2_000 in routed, routed
        # Each window's active worker, on the ports after the router's.
        windows = load_config(config, environ={}).windows
        for name, window in windows.items():
            assert window.metrics_ports.start > metrics_port + 2
            ports = window.metrics_ports
            wait_until = time.monotonic() + 30  # it holds the window once it restored it
            active: list[float | None] = []
            while 1.0 not in active and time.monotonic() < wait_until:
                active = [_scrape(p, "firelake_window_active", "window", name) for p in ports]
                time.sleep(0.2)
            assert 1.0 in active, (name, active)
        status = run_cli(config, "status")
        assert f"127.0.0.1:{metrics_port}/metrics" in status, status
        assert f"127.0.0.1:{metrics_port + 1}-{metrics_port + 2}/metrics" in status, status
    assert log.read_text().count("ingest listening on") == 2


def _scrape(port: int, sample: str, label: str, value: str) -> float | None:
    """One sample of a service's /metrics page on 127.0.0.1 (None: no page, no sample)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == sample and found.labels.get(label) == value:
                return found.value
    return None

"""Replay test cases on the real broker: the shipped cases, broken pipelines, determinism,
record-then-replay, and the pytest plugin.

Every run goes through ``firelake up`` in a child process, on its own topics and lake,
like ``firelake test`` runs it. The shipped Yle cases' answers are computed by
``make_yle_cases.py`` independently of the pipeline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cases.case import discover, load_case
from cases.pytest_plugin import CaseRunner
from cases.records import read_events
from firelake.config import EXAMPLE_CONFIG, load_config
from firelake.testing import (
    example_dict,
    free_port,
    query_rows,
    run_cli,
    running_pipeline,
    write_config,
)
from queries.catalog import Lake
from queries.engine import QueryEngine, format_json
from streams.loadgen import EventGenerator

pytestmark = pytest.mark.kafka

YLE_CASES = EXAMPLE_CONFIG.parent / "cases"
SHIPPED = discover([YLE_CASES])


def _copy(case: str, tmp_path: Path, extra: str = "") -> Path:
    """A shipped case in a temporary folder (its base config absolute), plus TOML."""
    folder = tmp_path / case
    shutil.copytree(YLE_CASES / case, folder)
    (folder / "case.toml").write_text(
        f'[case]\nextends = "{EXAMPLE_CONFIG}"\n{extra}', encoding="utf-8"
    )
    return folder


@pytest.mark.parametrize("folder", SHIPPED, ids=[f.name for f in SHIPPED])
def test_shipped_yle_case_passes(firelake_case: CaseRunner, folder: Path) -> None:
    result = firelake_case.check(folder)
    print(result.summary())  # the time per case, in the test log
    assert result.events == sum(len(p.read_text().splitlines()) for p in folder.glob("input/*"))
    assert not result.wall_clock


def test_a_broken_route_fails_the_case_naming_the_rows(
    firelake_case: CaseRunner, tmp_path: Path
) -> None:
    # heartbeat now goes to the page stream, whose schema wants `page`: DLQ, not playback.
    folder = _copy("dlq", tmp_path, '[routers.clickstream.routes]\nheartbeat = "page-events"\n')
    result = firelake_case.run(folder)
    assert not result.passed and not result.error, result.report()
    report = result.report()
    failed = {o.name for o in result.outcomes if not o.passed}
    assert failed == {"table_counts", "dlq"}, report
    assert '- {"tbl": "playback", "n": "166"}' in report, report
    assert '+ {"tbl": "playback", "n": ' in report, report
    assert '+ {"error_type": "missing_field", "n": ' in report, report


def test_a_broken_schema_fails_the_case_naming_the_rows(
    firelake_case: CaseRunner, tmp_path: Path
) -> None:
    # position_seconds declared a string: every playback event with one is a wrong_type.
    folder = _copy("dlq", tmp_path, '[schemas.playback.fields]\nposition_seconds = "string"\n')
    result = firelake_case.run(folder)
    assert not result.passed and not result.error, result.report()
    report = result.report()
    assert '- {"error_type": "wrong_type", "n": ' in report, report
    assert '- {"tbl": "dlq", "n": "299"}' in report, report


def test_same_results_twice_and_on_more_partitions(
    firelake_case: CaseRunner, tmp_path: Path
) -> None:
    folder = _copy("dlq", tmp_path)
    first = firelake_case.check(folder)
    again = firelake_case.check(folder)
    wider = firelake_case.check(folder, partitions=7)
    assert first.results == again.results == wider.results
    print(first.summary(), again.summary(), wider.summary(), sep="\n")


def _post(url: str, records: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps({"records": records}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read())["failed_record_count"] == 0


#: Columns that hold when a run happened, not what it computed.
WALL_CLOCK = {"dlq": ("failed_at", "first_attempt_at", "last_attempt_at", "dt", "hour")}


def test_record_a_live_stream_and_replay_it_into_the_same_tables(
    kafka_bootstrap: str, firelake_case: CaseRunner, tmp_path: Path, suffix: str
) -> None:
    port = free_port()
    data = example_dict(kafka_bootstrap, tmp_path / "live-lake", suffix, ingest={"port": port})
    for sink in data["sinks"].values():
        sink["max_seconds"] = 1
    config_path = write_config(tmp_path / "firelake.toml", data)
    generator = EventGenerator(seed=11, invalid_ratio=0.05)
    records = [{"partition_key": r.partition_key, "data": r.data} for r in generator.records(2000)]
    raw = f"raw-events-{suffix}"
    with running_pipeline(config_path, port, tmp_path / "up.log") as base:
        for start in range(0, len(records), 100):  # live traffic: small requests over time
            _post(f"{base}/v1/streams/{raw}/records", records[start : start + 100])
            time.sleep(0.05)
        deadline = time.monotonic() + 90
        counts = "SELECT (SELECT count(*) FROM playback) + (SELECT count(*) FROM page) AS n"
        while time.monotonic() < deadline:
            try:
                routed = query_rows(config_path, counts)[0]["n"]
                dead = query_rows(config_path, "SELECT count(*) AS n FROM dlq")[0]["n"]
            except AssertionError:  # a table without files yet
                routed = dead = 0
            if routed + dead == len(records):
                break
            time.sleep(1)
        case = tmp_path / "case"
        out = case / "input" / f"{raw}.jsonl"
        run_cli(config_path, "record", raw, "--from", "earliest", "--out", str(out), "--quiet")
        recorded = read_events(out.read_bytes().splitlines())
        assert len(recorded) == len(records)
        assert all(e.key and e.timestamp and e.offset is not None for e in recorded)
        # Bounded in count (the earliest events), and a time range (from inclusive).
        small, later = tmp_path / "small.jsonl", tmp_path / "later.jsonl"
        said = run_cli(config_path, "record", raw, "--max-events", "100", "--out", str(small))
        assert "stopped at --max-events 100" in said
        assert read_events(small.read_bytes().splitlines()) == recorded[:100]
        middle = recorded[len(recorded) // 2].timestamp
        run_cli(config_path, "record", raw, "--from", f"@{middle}", "--out", str(later), "--quiet")
        assert read_events(later.read_bytes().splitlines()) == [
            e for e in recorded if e.timestamp >= middle
        ]

    config = load_config(config_path)
    expected = {}
    with QueryEngine(Lake.of(config)) as engine:
        for table in ("playback", "page", "dlq"):
            exclude = WALL_CLOCK.get(table)
            columns = f"* EXCLUDE ({', '.join(exclude)})" if exclude else "*"
            sql = f"SELECT {columns} FROM {table}"
            expected[f"{table}_table"] = (
                sql,
                json.loads(format_json(engine.query(sql, max_rows=10**6))),
            )
    assert sum(len(rows) for _, rows in expected.values()) == len(records)
    CaseRunner.build(case, {}, expected, extends=config_path)
    result = firelake_case.check(case)
    assert result.events == len(records)


def test_inline_case_update_wall_clock_and_the_plugin_collects_case_folders(
    kafka_bootstrap: str, firelake_case: CaseRunner, tmp_path: Path
) -> None:
    events = [
        {"key": f"user-{n % 5}", "timestamp": 1764403200000 + n, "value": value}
        for n, value in enumerate(
            [{"event_id": f"e{n}", "event_type": "start"} for n in range(20)]  # no user_id
            + [
                {
                    "event_type": "page_view",
                    "event_id": "p1",
                    "event_time": "2026-11-29T08:00:00Z",
                    "user_id": "u1",
                    "page": "/a",
                }
            ]
        )
    ]
    folder = CaseRunner.build(
        tmp_path / "cases" / "inline",
        {"raw-events": events},
        {
            "pages": ("SELECT user_id, page FROM page", None),
            "failures": ("SELECT count(*) AS n, max(failed_at) AS last_failed_at FROM dlq", None),
        },
        dlq={},
        extends=EXAMPLE_CONFIG,
    )
    result = firelake_case.run(folder, update=True)
    assert result.passed, result.report()
    assert result.wall_clock == ["failures.last_failed_at"]
    assert "depends on wall-clock time: failures.last_failed_at" in result.report()
    assert json.loads((folder / "expected" / "pages.json").read_text()) == [
        {"user_id": "u1", "page": "/a"}
    ]
    assert json.loads((folder / "expected" / "dlq.json").read_text()) == {"missing_field": 20}
    assert len(load_case(folder).expectations) == 2
    # Collected by the plugin in a plain pytest run (the wall-clock query would differ).
    for name in ("failures.sql", "failures.json"):
        (folder / "expected" / name).unlink()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder.parent)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "FIRELAKE_KAFKA_BOOTSTRAP": kafka_bootstrap},
        check=False,
    )
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


def test_the_firelake_test_command_reports_junit_and_exits_1_on_a_failed_case(
    tmp_path: Path, kafka_bootstrap: str, suffix: str
) -> None:
    # The command itself, as CI would run it: two cases under one folder, one broken.
    cases = tmp_path / "cases"
    _copy("dlq", cases)
    wrong_type = '[schemas.playback.fields]\nposition_seconds = "string"\n'
    broken = _copy("dlq", tmp_path / "broken", wrong_type).rename(cases / "dlq-broken")
    raw = example_dict(kafka_bootstrap, tmp_path / "lake", suffix)
    config = write_config(tmp_path / "firelake.toml", raw)
    junit = tmp_path / "junit.xml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "firelake.cli",
            "test",
            str(cases),
            "--junit-xml",
            str(junit),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "FIRELAKE_KAFKA_BOOTSTRAP"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 of 2 cases passed" in done.stdout, done.stdout
    assert '- {"error_type": "wrong_type", "n": ' in done.stdout, done.stdout

    import xml.etree.ElementTree as ET

    suite = ET.parse(junit).getroot()
    testcases = suite.iter("testcase")
    failures = {c.get("name"): c.find("failure") for c in testcases}
    assert len(failures) == 2, failures
    failed = [name for name, failure in failures.items() if failure is not None]
    assert failed == [broken.name], failures

"""Replay a recorded Yle clickstream through the whole pipeline; compare SQL answers.

The recording (``yle_clickstream.jsonl``, made by ``record_yle.py``) holds 3 000 PutRecords
records — playback sessions, page views, and 3 % broken events of every kind — and
``yle_clickstream.expected.json`` the answers SQL must give once they are all in the lake,
computed independently of the pipeline. The records go in through the ingest API of a real
``firelake up`` on the real broker, in requests of 500 like a producer's.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from firelake.testing import example_dict, free_port, query_rows, running_pipeline, write_config

pytestmark = pytest.mark.kafka

HERE = Path(__file__).parent
DEADLINE_SECONDS = 90


def _post(url: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps({"records": records}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_recorded_clickstream_gives_the_expected_sql_answers(
    kafka_bootstrap: str, tmp_path: Path, suffix: str
) -> None:
    records = [
        json.loads(line) for line in (HERE / "yle_clickstream.jsonl").read_text().splitlines()
    ]
    expected: dict[str, list[dict[str, Any]]] = json.loads(
        (HERE / "yle_clickstream.expected.json").read_text()
    )
    port = free_port()
    data = example_dict(kafka_bootstrap, tmp_path / "lake", suffix, ingest={"port": port})
    for sink in data["sinks"].values():
        sink["max_seconds"] = 1
    config = write_config(tmp_path / "firelake.toml", data)
    with running_pipeline(config, port, tmp_path / "up.log") as base:
        url = f"{base}/v1/streams/raw-events-{suffix}/records"
        for start in range(0, len(records), 500):
            answer = _post(url, records[start : start + 500])
            assert answer["failed_record_count"] == 0, answer

        counts = [sql for sql in expected if sql.startswith("SELECT count(*) AS n FROM")]
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            try:
                got = {sql: query_rows(config, sql) for sql in counts}
            except AssertionError:  # a table without files yet
                got = {}
            if got == {sql: expected[sql] for sql in counts} or time.monotonic() > deadline:
                break
            time.sleep(1)

        for sql, rows in expected.items():
            assert query_rows(config, sql) == rows, sql

"""The query service's /metrics page: requests by route and status, what the SQL read."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from firelake.config import parse_config
from queries.service import QueryServerThread


def post(url: str, body: object) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_requests_and_query_rows_are_counted(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    raw = {"lake": {"root": str(tmp_path / "lake")}, "query": {"port": 0}}
    config = parse_config(raw, source="<test>", base_dir=str(tmp_path), environ={})
    with QueryServerThread(config, port=0) as server:
        assert post(f"{server.url}/v1/query", {"sql": "SELECT * FROM range(3)"}) == 200
        assert post(f"{server.url}/v1/query", {"sql": "SELEC 1"}) == 400
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as response:
            text = response.read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    route = ("route", "/v1/query")
    assert samples[("firelake_query_requests_total", (route, ("status", "200")))] == 1
    assert samples[("firelake_query_requests_total", (route, ("status", "400")))] == 1
    assert samples[("firelake_query_rows_total", ())] == 3
    assert samples[("firelake_query_engine_seconds_count", ())] == 1

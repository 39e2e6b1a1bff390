"""The HTTP query service on a real socket: SQL, formats, saved queries, catalog, keys.

The lake is Parquet files in the Hive layout on a local folder; the service is the real
aiohttp server on 127.0.0.1 (a free port) and the client plain ``urllib``, as a user's
script would be.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from firelake.config import load_config
from firelake.testing import write_config
from queries.service import ARROW_STREAM, QueryServerThread

REPO = Path(__file__).resolve().parents[2]
TS = pa.timestamp("us", tz="UTC")


def write(lake: Path, table: str, folder: str, columns: dict) -> Path:
    path = lake / table / folder / "f.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def plays(hour: int, n: int) -> dict:
    return {
        "event_id": [f"e{hour}-{i}" for i in range(n)],
        "event_type": ["start"] * n,
        "content_id": [f"1-{i % 4}" for i in range(n)],
        "content_type": ["episode"] * n,
        "user_id": [f"u{i % 9}" for i in range(n)],
        "device": ["tv" if i % 2 else "mobile" for i in range(n)],
        "platform": ["smarttv" if i % 2 else "ios" for i in range(n)],
        "event_time": pa.array([datetime(2026, 11, 28, hour, tzinfo=UTC)] * n, TS),
    }


def project(tmp_path: Path, **query: Any) -> Path:
    """A project folder: a config, a lake with two hours of plays, a saved query."""
    lake = tmp_path / "lake"
    write(lake, "playback", "dt=2026-11-28/hour=08", plays(8, 400))
    write(lake, "playback", "dt=2026-11-28/hour=09", plays(9, 100))
    saved = tmp_path / "saved_queries"
    saved.mkdir()
    (saved / "top_content.sql").write_text(
        "-- description: Top content on a day\n"
        "-- param: day date = today\n"
        "-- chart: bar content_id plays\n"
        "SELECT content_id, count(*) AS plays FROM playback WHERE dt = $day\n"
        "GROUP BY content_id ORDER BY plays DESC, content_id\n"
    )
    (saved / "broken.sql").write_text("-- description: not SQL\nSELEC 1\n")
    raw: dict[str, Any] = {"lake": {"root": str(lake)}, "query": {"port": 0, **query}}
    return write_config(tmp_path / "firelake.toml", raw)


def call(
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def service(tmp_path: Path):
    config = load_config(project(tmp_path), environ={})
    with QueryServerThread(config, port=0) as server:
        yield server.url


def test_query_answers_rows_types_and_cost(service: str) -> None:
    status, _, body = call(
        f"{service}/v1/query",
        {"sql": "SELECT device, count(*) AS n FROM playback GROUP BY ALL ORDER BY device"},
    )
    assert status == 200, body
    answer = json.loads(body)
    assert answer["columns"] == [
        {"name": "device", "type": "VARCHAR"},
        {"name": "n", "type": "BIGINT"},
    ]
    assert answer["rows"] == [["mobile", 250], ["tv", 250]]
    assert answer["files_read"] == 2 and answer["bytes_scanned"] > 0
    assert answer["cost_usd"] == pytest.approx(answer["bytes_scanned"] / 1e12 * 5)
    assert answer["billed_usd"] == pytest.approx(10_000_000 / 1e12 * 5)  # Athena's minimum
    assert answer["elapsed_seconds"] > 0 and answer["truncated"] is False


def test_an_hour_pruned_query_reads_only_that_hour(service: str) -> None:
    everything = json.loads(
        call(f"{service}/v1/query", {"sql": "SELECT sum(length(event_id)) FROM playback"})[2]
    )
    one_hour = json.loads(
        call(
            f"{service}/v1/query",
            {
                "sql": "SELECT sum(length(event_id)) FROM playback WHERE dt = $d AND hour = 9",
                "params": {"d": "2026-11-28"},
            },
        )[2]
    )
    assert (everything["files_read"], one_hour["files_read"]) == (2, 1)
    assert 0 < one_hour["bytes_scanned"] < everything["bytes_scanned"]


def test_csv_and_arrow_by_accept(service: str) -> None:
    sql = {"sql": "SELECT hour, count(DISTINCT event_id) AS n FROM playback GROUP BY 1 ORDER BY 1"}
    status, headers, body = call(f"{service}/v1/query", sql, {"Accept": "text/csv"})
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert body.decode().splitlines() == ["hour,n", "8,400", "9,100"]
    assert int(headers["X-Firelake-Files-Read"]) == 2
    status, headers, body = call(f"{service}/v1/query", sql, {"Accept": ARROW_STREAM})
    assert status == 200 and headers["Content-Type"] == ARROW_STREAM
    table = ipc.open_stream(body).read_all()
    assert table.schema.field("hour").type == pa.int32()
    assert table.to_pylist() == [{"hour": 8, "n": 400}, {"hour": 9, "n": 100}]
    assert int(headers["X-Firelake-Bytes-Scanned"]) > 0


def test_bad_sql_and_sandbox_refusals(service: str) -> None:
    status, _, body = call(f"{service}/v1/query", {"sql": "SELECT nope\nFROM playback"})
    error = json.loads(body)["error"]
    assert status == 400 and error["code"] == "BinderException"
    assert "nope" in error["message"] and (error["line"], error["column"]) == (1, 8)
    status, _, body = call(f"{service}/v1/query", {"sql": "SELEC 1"})
    assert status == 400 and json.loads(body)["error"]["code"] == "ParserException"
    for sql, reason in [
        ("SELECT * FROM read_csv('/etc/passwd')", "reads_outside_lake"),
        ("COPY (SELECT 1) TO 'x.parquet'", "writes_files"),
        ("SET memory_limit = '64GB'", "settings"),
        ("SELECT getenv('HOME')", "environment"),
    ]:
        status, _, body = call(f"{service}/v1/query", {"sql": sql})
        error = json.loads(body)["error"]
        assert (status, error["code"], error["reason"]) == (403, "SandboxViolation", reason)
    assert call(f"{service}/v1/query", {"sql": "SELECT count(*) FROM playback"})[0] == 200
    status, _, body = call(f"{service}/v1/query", {"nope": 1})
    assert status == 400 and json.loads(body)["error"]["code"] == "MissingSQL"
    status, _, body = call(f"{service}/v1/nothing")
    assert status == 404 and "POST /v1/query" in json.loads(body)["error"]["message"]


def test_saved_queries(service: str) -> None:
    answer = json.loads(call(f"{service}/v1/queries")[2])
    listed = answer["queries"]
    assert [q["name"] for q in listed] == ["top_content"]
    # A broken file is left out with its reason; the service runs on.
    (broken,) = answer["errors"]
    assert broken["path"].endswith("broken.sql") and "does not parse" in broken["reason"]
    assert listed[0]["parameters"][0]["name"] == "day"
    status, _, body = call(f"{service}/v1/queries/top_content", {"params": {"day": "2026-11-28"}})
    assert status == 200, body
    assert json.loads(body)["rows"][0] == ["1-0", 125]
    status, _, body = call(f"{service}/v1/queries/top_content", {"params": {"day": "soon"}})
    assert status == 400 and "parameter day" in json.loads(body)["error"]["message"]
    assert call(f"{service}/v1/queries/nothing", {})[0] == 404


def test_catalog(service: str) -> None:
    tables = json.loads(call(f"{service}/v1/tables")[2])["tables"]
    assert [(t["name"], t["rows"], t["files"]) for t in tables] == [("playback", 500, 2)]
    table = json.loads(call(f"{service}/v1/tables/playback")[2])
    assert {"name": "hour", "type": "INTEGER"} in table["columns"]
    assert {"name": "dt", "type": "DATE"} in table["columns"]
    assert [p["hour"] for p in table["partitions"]] == [8, 9]
    assert table["latest_partition"] == {"dt": "2026-11-28", "hour": 9}
    assert call(f"{service}/v1/tables/nothing")[0] == 404


def test_api_keys_and_scopes(tmp_path: Path) -> None:
    config = load_config(project(tmp_path, api_keys="r3ad:read,adm1n:admin"), environ={})
    with QueryServerThread(config, port=0) as server:
        sql = {"sql": "SELECT 1"}
        assert call(f"{server.url}/health")[0] == 200
        status, _, body = call(f"{server.url}/v1/query", sql)
        assert status == 401 and "API key" in json.loads(body)["error"]["message"]
        assert call(f"{server.url}/v1/query", sql, {"Authorization": "Bearer wrong"})[0] == 401
        assert call(f"{server.url}/v1/query", sql, {"X-Api-Key": "r3ad"})[0] == 200
        reader = {"Authorization": "Bearer r3ad"}
        assert call(f"{server.url}/v1/refresh", {}, reader)[0] == 403
        ctas = {
            "sql": "SELECT device, count(*) AS n FROM playback GROUP BY ALL",
            "into_table": "by_device",
        }
        assert call(f"{server.url}/v1/query", ctas, reader)[0] == 403
        admin = {"Authorization": "Bearer adm1n"}
        status, _, body = call(f"{server.url}/v1/query", ctas, admin)
        assert status == 200, body
        assert json.loads(body)["into_table"]["rows"] == 2
        answer = json.loads(
            call(f"{server.url}/v1/query", {"sql": "SELECT sum(n) FROM by_device"}, admin)[2]
        )
        assert answer["rows"] == [[500]]


def test_serve_queries_command(tmp_path: Path) -> None:
    from firelake.broker import free_port
    from firelake.testing import wait_healthy

    path = project(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firelake.cli",
            "serve-queries",
            "--config",
            str(path),
            "--port",
            str(port),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_healthy(f"http://127.0.0.1:{port}", process, timeout=60)
        status, _, body = call(
            f"http://127.0.0.1:{port}/v1/query", {"sql": "SELECT count(*) FROM playback"}
        )
        assert status == 200 and json.loads(body)["rows"] == [[500]]
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""


def test_queries_never_import_a_kafka_client() -> None:
    """The query layer reads the lake only: no Kafka client, not even imported lazily."""
    code = (
        "import sys, queries.engine, queries.service, queries.sandbox, queries.saved, "
        "queries.export, queries.catalog\n"
        "roots = ('aiokafka', 'kafka', 'faust')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in roots)\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""

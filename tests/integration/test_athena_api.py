"""Athena and Glue (catalog reads) on the AWS endpoint, through unchanged clients.

The endpoint is the real ingest port (real broker); the lake holds a ``playback`` table of
12 000 events in two hour partitions and a saved query. boto3's ``athena`` client and
PyAthena run queries and page through 10 000 result rows; sandbox refusals fail the
query with their reason; a runaway query is stopped; history and results are kept in the
lake; boto3's ``glue`` client lists the lake's database, tables, partitions and versions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.config import Config

from api.backend import AwsOptions
from api.server import IngestThread
from firelake.config import load_config
from firelake.testing import example_dict, write_config
from streams.topics import delete_topics

pytestmark = pytest.mark.kafka

TS = pa.timestamp("us", tz="UTC")
BASE = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def _hour(lake: Path, hour: int, first: int, n: int) -> None:
    folder = lake / "playback" / "dt=2026-11-29" / f"hour={hour:02d}"
    folder.mkdir(parents=True)
    times = [BASE.replace(hour=hour) + timedelta(seconds=i % 3600) for i in range(n)]
    pq.write_table(
        pa.table(
            {
                "event_id": [f"e{i:06d}" for i in range(first, first + n)],
                "content_id": [f"1-{i % 7}" for i in range(first, first + n)],
                "position_seconds": [i % 3600 for i in range(first, first + n)],
                "event_time": pa.array(times, TS),
            }
        ),
        folder / "part-0.parquet",
    )


@pytest.fixture
def endpoint(kafka_bootstrap: str, tmp_path: Path, suffix: str) -> Iterator[dict[str, Any]]:
    lake = tmp_path / "lake"
    _hour(lake, 8, 0, 7_000)
    _hour(lake, 9, 7_000, 5_000)
    saved = tmp_path / "saved_queries"
    saved.mkdir()
    (saved / "plays_by_content.sql").write_text(
        "-- description: Plays by content\n"
        "SELECT content_id, count(*) AS plays FROM playback GROUP BY 1 ORDER BY 2 DESC\n"
    )
    raw = example_dict(kafka_bootstrap, lake, suffix, query={"saved_dir": "saved_queries"})
    config = load_config(write_config(tmp_path / "firelake.toml", raw), environ={})
    registry = f"_firelake_registry-{suffix}"
    server = IngestThread(config, port=0, aws=AwsOptions(registry_topic=registry))
    server.start()
    try:
        yield {"url": server.url, "lake": lake}
    finally:
        server.stop()
        delete_topics(kafka_bootstrap, [registry, *config.streams])


def _client(url: str, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="eu-north-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def _wait(athena: Any, query_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        execution = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
        if execution["Status"]["State"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return execution
        assert time.monotonic() < deadline, execution
        time.sleep(0.1)


def test_boto3_athena_runs_pages_refuses_stops_and_keeps_history(endpoint: dict) -> None:
    athena = _client(endpoint["url"], "athena")
    sql = (
        "SELECT event_id, position_seconds, event_time, dt, hour FROM playback "
        "ORDER BY event_id LIMIT 10000"
    )
    query_id = athena.start_query_execution(
        QueryString=sql, QueryExecutionContext={"Database": "default"}
    )["QueryExecutionId"]
    execution = _wait(athena, query_id)
    assert execution["Status"]["State"] == "SUCCEEDED", execution["Status"]
    assert execution["Statistics"]["DataScannedInBytes"] > 0

    pages = athena.get_paginator("get_query_results").paginate(
        QueryExecutionId=query_id, PaginationConfig={"PageSize": 1000}
    )
    rows: list[list[str | None]] = []
    metadata = None
    for page in pages:
        metadata = metadata or page["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
        rows += [[d.get("VarCharValue") for d in r["Data"]] for r in page["ResultSet"]["Rows"]]
    assert rows[0] == ["event_id", "position_seconds", "event_time", "dt", "hour"]
    assert len(rows) == 10_001
    assert [c["Type"] for c in metadata] == ["varchar", "bigint", "timestamp", "date", "integer"]
    assert rows[1] == ["e000000", "0", "2026-11-29 08:00:00.000000", "2026-11-29", "8"]
    assert rows[-1][0] == "e009999"

    bad = athena.start_query_execution(QueryString="COPY (SELECT 1) TO 'x.csv'")
    failed = _wait(athena, bad["QueryExecutionId"])
    assert failed["Status"]["State"] == "FAILED"
    assert "writes_files" in failed["Status"]["StateChangeReason"]
    syntax = _wait(athena, athena.start_query_execution(QueryString="SELEC 1")["QueryExecutionId"])
    assert "ParserException" in syntax["Status"]["StateChangeReason"]

    runaway = athena.start_query_execution(
        QueryString="SELECT sum(hash(range)) FROM range(100000000000)"
    )["QueryExecutionId"]
    time.sleep(0.5)
    athena.stop_query_execution(QueryExecutionId=runaway)
    assert _wait(athena, runaway, timeout=30)["Status"]["State"] == "CANCELLED"

    listed = athena.list_query_executions()["QueryExecutionIds"]
    assert {query_id, bad["QueryExecutionId"], runaway} <= set(listed)
    history = endpoint["lake"] / "_firelake" / "athena"
    assert (history / "executions" / f"{query_id}.json").exists()
    assert (history / "results" / f"{query_id}.parquet").exists()

    names = athena.list_named_queries()["NamedQueryIds"]
    assert names == ["plays_by_content"]
    named = athena.get_named_query(NamedQueryId="plays_by_content")["NamedQuery"]
    assert named["Description"] == "Plays by content" and "GROUP BY" in named["QueryString"]
    with pytest.raises(athena.exceptions.InvalidRequestException):
        athena.get_query_execution(QueryExecutionId="00000000-0000-0000-0000-000000000000")


def test_execution_parameters_fill_the_placeholders_as_values(endpoint: dict) -> None:
    athena = _client(endpoint["url"], "athena")
    sql = "SELECT count(*) FROM playback WHERE content_id = ? AND position_seconds < ? AND dt = ?"
    query_id = athena.start_query_execution(
        QueryString=sql, ExecutionParameters=["'1-3'", "100", "DATE '2026-11-29'"]
    )["QueryExecutionId"]
    execution = _wait(athena, query_id)
    assert execution["Status"]["State"] == "SUCCEEDED", execution["Status"]
    assert execution["ExecutionParameters"] == ["'1-3'", "100", "DATE '2026-11-29'"]
    rows = athena.get_query_results(QueryExecutionId=query_id)["ResultSet"]["Rows"]
    # Events i with i % 7 == 3 and i % 3600 < 100, over ids 0..11 999.
    expected = sum(1 for i in range(12_000) if i % 7 == 3 and i % 3600 < 100)
    assert rows[1]["Data"][0]["VarCharValue"] == str(expected)

    # A value is bound, never spliced: text that looks like SQL matches nothing.
    injected = athena.start_query_execution(
        QueryString="SELECT count(*) FROM playback WHERE content_id = ?",
        ExecutionParameters=["'1-3'' OR ''1''=''1'"],
    )["QueryExecutionId"]
    assert _wait(athena, injected)["Status"]["State"] == "SUCCEEDED"
    rows = athena.get_query_results(QueryExecutionId=injected)["ResultSet"]["Rows"]
    assert rows[1]["Data"][0]["VarCharValue"] == "0"

    with pytest.raises(athena.exceptions.InvalidRequestException, match=r"\[1\].*not a SQL"):
        athena.start_query_execution(QueryString=sql, ExecutionParameters=["1-3"])
    short = athena.start_query_execution(QueryString=sql, ExecutionParameters=["'1-3'"])
    failed = _wait(athena, short["QueryExecutionId"])
    assert failed["Status"]["State"] == "FAILED"
    assert "placeholders and the 1 ExecutionParameters" in failed["Status"]["StateChangeReason"]


def test_pyathena_pages_10000_rows(endpoint: dict) -> None:
    from pyathena import connect

    connection = connect(
        s3_staging_dir="s3://firelake/athena/",
        region_name="eu-north-1",
        endpoint_url=endpoint["url"],
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        poll_interval=0.1,
    )
    cursor = connection.cursor()
    cursor.execute(
        "SELECT event_id, position_seconds, event_time, dt FROM playback "
        "WHERE dt = DATE '2026-11-29' ORDER BY event_id LIMIT 10000"
    )
    rows = cursor.fetchall()
    assert len(rows) == 10_000
    assert rows[0] == ("e000000", 0, datetime(2026, 11, 29, 8, 0), datetime(2026, 11, 29).date())
    assert [d[0] for d in cursor.description] == [
        "event_id",
        "position_seconds",
        "event_time",
        "dt",
    ]
    assert cursor.data_scanned_in_bytes > 0
    cursor.execute("SELECT count(*) FROM playback WHERE hour = 9")
    assert cursor.fetchone() == (5_000,)


def test_boto3_glue_sees_the_lake(endpoint: dict) -> None:
    glue = _client(endpoint["url"], "glue")
    assert [d["Name"] for d in glue.get_databases()["DatabaseList"]] == ["default"]
    (table,) = glue.get_tables(DatabaseName="default")["TableList"]
    assert table["Name"] == "playback"
    assert [k["Name"] for k in table["PartitionKeys"]] == ["dt", "hour"]
    assert {"Name": "event_time", "Type": "timestamp"} in table["StorageDescriptor"]["Columns"]
    assert table["Parameters"]["recordCount"] == "12000"
    partitions = glue.get_partitions(DatabaseName="default", TableName="playback")["Partitions"]
    assert [p["Values"] for p in partitions] == [["2026-11-29", "08"], ["2026-11-29", "09"]]
    assert glue.get_table(DatabaseName="default", Name="playback")["Table"]["VersionId"] == "1"
    versions = glue.get_table_versions(DatabaseName="default", TableName="playback")
    assert [v["VersionId"] for v in versions["TableVersions"]] == ["1"]
    with pytest.raises(glue.exceptions.EntityNotFoundException):
        glue.get_partitions(DatabaseName="default", TableName="nope")

"""Query benchmark (issue 11): the query service and the Athena API vs bare DuckDB.

10 000 000 Yle playback events in 96 Parquet files (4 days x 24 hours, zstd) in the
lake's Hive layout, written once by DuckDB. The same three queries run on every path:

- **group-by**: events and total position by product and device over all rows;
- **time-bucket**: events per minute over all rows (5 760 result rows);
- **hour-pruned**: one hour's count and sum (partition pruning: one file opened).

Paths: bare DuckDB (``read_parquet`` over the same files, no sandbox, one connection),
the in-process query engine (sandbox, views, profiling), the HTTP query API
(``POST /v1/query`` from ``urllib``, JSON), and the Athena API on the AWS endpoint
(boto3: ``StartQueryExecution``, polling ``GetQueryExecution`` every 5 ms, then every
page of ``GetQueryResults``). Each query runs once to warm caches, then ``REPEATS``
times, the paths taking turns; the median is reported.

``python -m bench queries`` (or ``python -m bench.queries`` for this table alone).
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from bench.harness import BenchResult, scratch_dir

__all__ = ["QUERIES", "make_lake", "render_section", "run_queries_bench"]

REPEATS = 7
FILES_DAYS = 4
QUERIES = {
    "group-by": (
        "SELECT product, device, count(*) AS events, sum(position_seconds) AS seconds "
        "FROM playback GROUP BY ALL ORDER BY ALL"
    ),
    "time-bucket": (
        "SELECT time_bucket(INTERVAL '1 minute', event_time) AS minute, count(*) AS events "
        "FROM playback GROUP BY 1 ORDER BY 1"
    ),
    "hour-pruned": (
        "SELECT count(*) AS events, sum(position_seconds) AS seconds FROM playback "
        "WHERE dt = DATE '2026-11-29' AND hour = 8"
    ),
}


def make_lake(root: Path, events: int) -> Path:
    """``events`` playback rows in FILES_DAYS x 24 hour partitions, one file each."""
    hours = FILES_DAYS * 24
    per_hour = events // hours
    root.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect()
    conn.execute("SET threads = 2")
    conn.execute("SET enable_progress_bar = false")
    conn.execute(
        f"""
        COPY (
          SELECT
            'evt-' || lpad(CAST(i AS VARCHAR), 9, '0') AS event_id,
            ['start', 'pause', 'stop', 'heartbeat'][1 + i % 4] AS event_type,
            TIMESTAMPTZ '2026-11-28 00:00:00+00'
              + to_seconds(CAST((i // {per_hour}) * 3600 + (i % {per_hour}) * 3600 // {per_hour}
                                AS BIGINT)) AS event_time,
            'user-' || CAST(i % 99991 AS VARCHAR) AS user_id,
            '1-' || CAST(i % 5003 AS VARCHAR) AS content_id,
            ['mobile', 'desktop', 'tv', 'tablet'][1 + i % 4] AS device,
            ['ios', 'android', 'web', 'smarttv'][1 + (i // 7) % 4] AS platform,
            ['areena', 'uutiset', 'urheilu'][1 + i % 3] AS product,
            CAST(i % 3600 AS INTEGER) AS position_seconds,
            CAST(DATE '2026-11-28' + CAST((i // {per_hour}) // 24 AS INTEGER) AS VARCHAR) AS dt,
            lpad(CAST((i // {per_hour}) % 24 AS VARCHAR), 2, '0') AS hour
          FROM range({per_hour * hours}) t(i)
        ) TO '{root}/playback' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (dt, hour))
        """
    )
    conn.close()
    return root


def _interleaved(paths: dict[str, Callable[[], Any]]) -> dict[str, tuple[float, Any]]:
    """Each path's median seconds and answer: one warm-up each, then REPEATS rounds that
    run every path once in turn, so a busy moment of the machine hits all paths alike."""
    answers = {name: run() for name, run in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(REPEATS):
        for name, run in paths.items():
            started = time.perf_counter()
            answers[name] = run()
            times[name].append(time.perf_counter() - started)
    return {name: (statistics.median(times[name]), answers[name]) for name in paths}


def _bare(lake: Path) -> Callable[[str], Any]:
    conn = duckdb.connect()
    conn.execute("SET threads = 2")
    conn.execute(
        "CREATE VIEW playback AS SELECT * FROM read_parquet("
        f"'{lake}/playback/*/*/*.parquet', hive_partitioning = true, union_by_name = true, "
        "hive_types = {'dt': DATE, 'hour': INTEGER})"
    )
    return lambda sql: conn.execute(sql).fetchall()


def _http(url: str) -> Callable[[str], Any]:
    def run(sql: str) -> Any:
        request = urllib.request.Request(
            f"{url}/v1/query",
            json.dumps({"sql": sql}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["rows"]

    return run


def _athena(client: Any) -> Callable[[str], Any]:
    def run(sql: str) -> Any:
        query_id = client.start_query_execution(QueryString=sql)["QueryExecutionId"]
        while True:
            state = client.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
            if state["Status"]["State"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            time.sleep(0.005)
        assert state["Status"]["State"] == "SUCCEEDED", state["Status"]
        rows: list[Any] = []
        pages = client.get_paginator("get_query_results").paginate(QueryExecutionId=query_id)
        for page in pages:
            rows += page["ResultSet"]["Rows"]
        return rows[1:]

    return run


def run_queries_bench(bootstrap: str, events: int) -> list[BenchResult]:
    """Every query on every path; ``events`` is ignored below 10 M (the issue's size)."""
    import boto3
    from botocore.config import Config

    from api.backend import AwsOptions
    from api.server import IngestThread
    from firelake.config import parse_config
    from firelake.testing import example_dict, unique_suffix
    from queries.engine import QueryEngine
    from queries.service import QueryServerThread
    from streams.topics import delete_topics

    events = max(events, 10_000_000)
    results: list[BenchResult] = []
    with scratch_dir("firelake-bench-queries-") as root:
        lake = make_lake(root / "lake", events)
        files = len(list((lake / "playback").rglob("*.parquet")))
        suffix = unique_suffix()
        raw = example_dict(bootstrap, lake, suffix, query={"port": 0})
        config = parse_config(raw, source="<bench>", base_dir=str(root), environ={})
        registry = f"_firelake_registry-{suffix}"
        engine = QueryEngine(lake)
        try:
            with (
                QueryServerThread(config, port=0, engines=1) as service,
                IngestThread(config, port=0, aws=AwsOptions(registry_topic=registry)) as aws,
            ):
                athena = boto3.client(
                    "athena",
                    endpoint_url=aws.url,
                    region_name="eu-north-1",
                    aws_access_key_id="bench",
                    aws_secret_access_key="bench",
                    config=Config(retries={"max_attempts": 1}),
                )
                paths: dict[str, Callable[[str], Any]] = {
                    "bare DuckDB": _bare(lake),
                    "query engine (in process)": lambda sql: engine.query(sql).rows,
                    "HTTP query API": _http(service.url),
                    "Athena API (boto3)": _athena(athena),
                }
                for query, sql in QUERIES.items():
                    measured = _interleaved(
                        {path: (lambda run=run, sql=sql: run(sql)) for path, run in paths.items()}
                    )
                    for path, (seconds, answer) in measured.items():
                        results.append(
                            BenchResult(
                                f"{query}: {path}",
                                events,
                                seconds,
                                {"result rows": str(len(answer)), "files": str(files)},
                            )
                        )
        finally:
            engine.close()
            delete_topics(bootstrap, [registry, *config.streams])
    return results


def render_section(title: str, results: list[BenchResult]) -> str:
    """A Markdown section: each query's median latency per path and overhead vs bare."""
    import os
    import platform

    lines = [
        f"### {title}",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, DuckDB {duckdb.__version__}, "
        f"run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{results[0].events if results else 0} events in "
        f"{results[0].notes.get('files', '?') if results else 0} files; median of {REPEATS} "
        "runs after a warm-up, the paths taking turns.",
        "",
        "| query | path | median ms | vs bare DuckDB | result rows |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    bare: dict[str, float] = {}
    for result in results:
        query, _, path = result.name.partition(": ")
        if path == "bare DuckDB":
            bare[query] = result.seconds
        base = bare.get(query, result.seconds)
        overhead = f"{(result.seconds / base - 1) * 100:+.0f} %" if base else ""
        lines.append(
            f"| {query} | {path} | {result.seconds * 1000:.1f} | {overhead} | "
            f"{result.notes.get('result rows', '')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from bench.harness import broker

    with broker() as bootstrap_address:
        print(render_section("Queries", run_queries_bench(bootstrap_address, 10_000_000)))

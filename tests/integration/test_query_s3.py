"""SQL over a lake on S3: a real S3 endpoint on loopback (moto), read through pyarrow.

The duckdb wheel has no httpfs, so S3 tables are Arrow datasets registered in DuckDB
(``queries.engine``). These tests put Parquet files in the Hive layout into a bucket and
check what a user sees — through :class:`QueryEngine` and through ``firelake query`` /
``firelake tables`` — against the same files in a local lake where it matters.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from firelake.cli import main as firelake_main
from firelake.testing import write_config
from queries.catalog import Lake, list_tables
from queries.engine import QueryEngine
from sinks.destinations import Destination, LocalDestination, S3Destination
from sinks.manifest import Manifest
from sinks.paths import manifest_key
from sinks.testing import REPO, S3Endpoint, s3  # noqa: F401  (the module's S3 server)

TS = pa.timestamp("us", tz="UTC")
P8 = "dt=2026-11-29/hour=08"
P23 = "dt=2026-11-30/hour=23"


def parquet(columns: dict) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out, compression="zstd")
    return out.getvalue()


def playback(n: int, start: int, when: datetime, **extra: list) -> bytes:
    return parquet(
        {
            "event_id": [f"e{i:06d}" for i in range(start, start + n)],
            "event_time": pa.array([when] * n, TS),
            "position_seconds": list(range(start, start + n)),
            **extra,
        }
    )


def fill(destination: Destination) -> None:
    """The same lake on any destination: playback (a column added later), page, compacted.

    ``compacted`` was compacted: c1 and c2 were merged into the active output and retired
    (still stored: their grace period), and an output of a killed compaction that the
    manifest never listed lies next to them. Only the active output and c3 are live.
    """
    put = destination.put
    put(f"playback/{P8}/a.parquet", playback(300, 0, datetime(2026, 11, 29, 8, 15, tzinfo=UTC)))
    later = datetime(2026, 11, 30, 23, 5, tzinfo=UTC)
    put(f"playback/{P23}/b.parquet", playback(200, 300, later, quality=["hd"] * 200))
    put(f"page/{P8}/device=tv/p.parquet", parquet({"page": ["/", "/uutiset", "/"]}))
    put(f"page/{P8}/device=web/q.parquet", parquet({"page": ["/areena"]}))
    put(f"page/{P8}/.inflight.parquet", parquet({"page": ["/half-written"] * 50}))
    for name, n in (("c1", 10), ("c2", 20)):
        put(f"compacted/{P8}/{name}.parquet", parquet({"n": list(range(n))}))
    active = f"compacted/{P8}/compacted-0001.parquet"
    put(active, parquet({"n": list(range(30))}))
    put(f"compacted/{P8}/compacted-orphan.parquet", parquet({"n": list(range(1000))}))
    put(f"compacted/{P8}/c3.parquet", parquet({"n": [7]}))
    manifest = Manifest(
        version=1,
        active=[active],
        retired={f"compacted/{P8}/c1.parquet": 1.0, f"compacted/{P8}/c2.parquet": 1.0},
    )
    put(manifest_key("compacted"), manifest.to_json())


@pytest.fixture
def bucket(s3: S3Endpoint) -> S3Destination:  # noqa: F811
    """A filled lake under a prefix of a fresh bucket."""
    name = f"lake-{uuid.uuid4().hex[:12]}"
    s3.bucket(name)
    destination = S3Destination(f"s3://{name}/warehouse", s3.settings)
    fill(destination)
    return destination


COUNTS = "SELECT count(*) FROM playback"
QUERIES = [
    COUNTS,
    "SELECT dt, hour, count(*), sum(position_seconds) FROM playback GROUP BY ALL ORDER BY 1",
    "SELECT count(*) FROM playback WHERE dt = '2026-11-30' AND hour = 23",
    "SELECT count(*) FROM playback WHERE dt >= DATE '2026-11-30'",
    "SELECT quality, count(*) FROM playback GROUP BY quality ORDER BY quality NULLS FIRST",
    "SELECT device, page FROM page ORDER BY device, page",
    "SELECT sum(n), count(*) FROM compacted",
    "SELECT * FROM playback ORDER BY event_id LIMIT 3",
]


def test_s3_lake_answers_like_the_same_local_lake(bucket: S3Destination, tmp_path: Path) -> None:
    local = tmp_path / "lake"
    fill(LocalDestination(local))
    with QueryEngine(bucket) as remote, QueryEngine(local) as here:
        assert sorted(remote.tables) == ["compacted", "page", "playback"]
        assert remote.view_errors == {}
        for sql in QUERIES:
            got, want = remote.query(sql), here.query(sql)
            assert (got.columns, got.types, got.rows) == (want.columns, want.types, want.rows), sql


def test_partitions_types_union_by_name_and_compaction(bucket: S3Destination) -> None:
    with QueryEngine(bucket) as engine:
        assert engine.query(COUNTS).rows == [(500,)]
        pruned = engine.query("SELECT count(*) FROM playback WHERE dt = '2026-11-29' AND hour = 8")
        assert pruned.rows == [(300,)]
        typed = engine.query("SELECT dt, hour FROM playback LIMIT 1")
        assert typed.types == ("DATE", "INTEGER")
        # The column only the newer file has reads NULL for the older rows.
        assert engine.query(
            "SELECT dt, count(quality), count(*) FROM playback GROUP BY dt ORDER BY dt"
        ).rows == [(date(2026, 11, 29), 0, 300), (date(2026, 11, 30), 200, 200)]
        # A field partition beyond hour is a string column; the dot-file is in flight.
        assert engine.query("SELECT device, count(*) FROM page GROUP BY 1 ORDER BY 1").rows == [
            ("tv", 3),
            ("web", 1),
        ]
        # Active output (30) and c3 (1): not the retired inputs, not the orphan output.
        assert engine.query("SELECT count(*) FROM compacted").rows == [(31,)]


def test_new_files_and_a_compaction_switch_show_up_without_refresh(
    bucket: S3Destination,
) -> None:
    with QueryEngine(bucket) as engine:
        assert engine.query(COUNTS).rows == [(500,)]
        bucket.put(
            f"playback/{P23}/c.parquet",
            playback(5, 900, datetime(2026, 11, 30, 23, 50, tzinfo=UTC), extra_col=[1] * 5),
        )
        assert engine.query(COUNTS).rows == [(505,)]
        assert engine.query("SELECT sum(extra_col) FROM playback").rows == [(5,)]
        # The next compaction: the orphan becomes active, everything else retires.
        orphan = f"compacted/{P8}/compacted-orphan.parquet"
        switch = Manifest(
            version=2,
            active=[orphan],
            retired={f"compacted/{P8}/{n}.parquet": 2.0 for n in ("c1", "c2", "c3")}
            | {f"compacted/{P8}/compacted-0001.parquet": 2.0},
        )
        bucket.put(manifest_key("compacted"), switch.to_json())
        assert engine.query("SELECT count(*) FROM compacted").rows == [(1000,)]
        # Every file of a table gone: it reads as empty with its columns, not as an error.
        bucket.delete([f"compacted/{P8}/compacted-orphan.parquet"])
        assert engine.query("SELECT count(*), max(n) FROM compacted").rows == [(0, None)]


def test_s3_and_local_report_the_same_bytes_scanned(bucket: S3Destination, tmp_path: Path) -> None:
    """Bytes scanned on S3 come from pyarrow's reads, mapped onto column chunks: the same
    figure DuckDB's profiler gives for the same files on a local lake."""
    local = tmp_path / "lake"
    fill(LocalDestination(local))
    queries = [
        "SELECT string_agg(page, ',' ORDER BY page) FROM page",
        "SELECT sum(position_seconds) FROM playback",
        "SELECT sum(position_seconds) FROM playback WHERE dt = '2026-11-30' AND hour = 23",
        "SELECT sum(n), max(n) FROM compacted",
    ]
    with QueryEngine(bucket) as on_s3, QueryEngine(local) as here:
        for sql in queries:
            remote, mine = on_s3.query(sql), here.query(sql)
            assert remote.rows == mine.rows, sql
            assert remote.bytes_scanned == mine.bytes_scanned, sql
            assert remote.files_read == mine.files_read, sql
        # The two readers plan some queries differently (DuckDB answers a count from the
        # footers' statistics, skips a file lacking a filtered column, prunes a lone
        # `hour =` filter less): the rows agree, the bytes follow what each one read.
        for sql in (
            "SELECT event_id, quality FROM playback WHERE hour = 23 ORDER BY 1 LIMIT 3",
            "SELECT event_id FROM playback WHERE quality IS NOT NULL ORDER BY 1 LIMIT 3",
        ):
            assert on_s3.query(sql).rows == here.query(sql).rows
        assert on_s3.query("SELECT count(*) FROM page").rows == [(4,)]
        pruned = on_s3.query(queries[2])
        everything = on_s3.query(queries[1])
        assert 0 < pruned.bytes_scanned < everything.bytes_scanned
        assert (pruned.files_read, everything.files_read) == (1, 2)
    # Both roots in one lake: each table measured its own way, added up.
    lake = Lake(roots=(LocalDestination(local), bucket), homes={"page": bucket})
    with QueryEngine(lake) as engine:
        both = engine.query(
            "SELECT (SELECT sum(position_seconds) FROM playback), (SELECT count(*) FROM page)"
        )
        page = engine.query("SELECT count(*) FROM page")
        assert both.bytes_scanned == everything.bytes_scanned + page.bytes_scanned
        assert both.files_read == everything.files_read + page.files_read


def test_catalog_of_an_s3_lake_counts_live_files_only(bucket: S3Destination) -> None:
    tables = {t.name: t for t in list_tables(bucket)}
    assert sorted(tables) == ["compacted", "page", "playback"]
    compacted = tables["compacted"]
    assert (compacted.files, compacted.rows) == (2, 31)
    assert sorted(str(f.path).rsplit("/", 1)[-1] for f in compacted.data_files) == [
        "c3.parquet",
        "compacted-0001.parquet",
    ]
    assert str(compacted.path) == bucket.uri("compacted")
    assert (tables["page"].files, tables["page"].rows) == (2, 4)
    assert [(p.dt, p.hour, p.rows) for p in tables["playback"].partitions] == [
        ("2026-11-29", 8, 300),
        ("2026-11-30", 23, 200),
    ]


def config_file(folder: Path, s3: S3Endpoint, lake: dict, sinks: dict) -> Path:  # noqa: F811
    data = {
        "lake": lake,
        "streams": {"events": {}},
        "sinks": {
            name: {"stream": "events", "table": name, **spec, **s3.sink_fields()}
            for name, spec in sinks.items()
        },
    }
    return write_config(folder / "firelake.toml", data)


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``firelake ARGS`` in this process: (exit code, stdout, stderr)."""
    # A lake override in the environment would replace the file's [lake] root.
    monkeypatch.delenv("FIRELAKE_LAKE", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        code = firelake_main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_on_an_s3_lake_root(
    bucket: S3Destination,
    s3: S3Endpoint,  # noqa: F811
    tmp_path: Path,
    cli: Cli,
) -> None:
    lake = {"root": bucket.url, **s3.sink_fields()}
    config = config_file(tmp_path, s3, lake, {})

    code, out, err = cli(
        "query",
        "SELECT dt, count(*) AS n, count(quality) AS hd FROM playback GROUP BY dt ORDER BY dt",
        "--format",
        "csv",
        "--config",
        str(config),
    )
    assert code == 0, err
    assert out.split() == ["dt,n,hd", "2026-11-29,300,0", "2026-11-30,200,200"]
    assert re.search(r"[1-9][0-9]* bytes scanned", err), err

    code, out, err = cli("tables", "--config", str(config))
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines()[1:]}
    # rows, files, partitions: the compacted table's retired and orphan files not counted.
    assert rows == {
        "compacted": ["31", "2", "1"],
        "page": ["4", "2", "1"],
        "playback": ["500", "2", "2"],
    }


def test_cli_joins_a_local_lake_with_a_sink_on_s3(
    bucket: S3Destination,
    s3: S3Endpoint,  # noqa: F811
    tmp_path: Path,
    cli: Cli,
) -> None:
    local = tmp_path / "lake"
    LocalDestination(local).put(
        f"playback/{P8}/local.parquet",
        playback(7, 0, datetime(2026, 11, 29, 8, tzinfo=UTC)),
    )
    # The page sink writes to S3; playback stays in the local lake, although the bucket
    # has a playback table too: a table without an S3 sink is read from the lake root.
    config = config_file(tmp_path, s3, {"root": "lake"}, {"page": {"destination": bucket.url}})
    sql = "SELECT (SELECT count(*) FROM playback) AS plays, (SELECT count(*) FROM page) AS pages"

    code, out, err = cli("query", sql, "--format", "json", "--config", str(config))
    assert code == 0, err
    assert out.strip() == '[{"plays": 7, "pages": 4}]'


def test_firelake_query_command_as_a_process(
    bucket: S3Destination,
    s3: S3Endpoint,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = config_file(tmp_path, s3, {"root": bucket.url, **s3.sink_fields()}, {})
    env = {**os.environ, "PYTHONPATH": str(REPO), "AWS_EC2_METADATA_DISABLED": "true"}
    env.pop("FIRELAKE_LAKE", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "firelake.cli",
            "query",
            "SELECT count(*) AS n FROM playback WHERE hour = 23",
            "--format",
            "csv",
            "--config",
            str(config),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["n", "200"]


def test_an_unchanged_s3_json_table_is_not_read_again_at_a_refresh(
    s3: S3Endpoint,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gzip
    import json

    import queries.engine as engine_module

    name = f"lake-{uuid.uuid4().hex[:12]}"
    s3.bucket(name)
    lake = S3Destination(f"s3://{name}/warehouse", s3.settings)

    def lines(key: str, ids: list[int]) -> None:
        body = "".join(json.dumps({"id": i}) + "\n" for i in ids).encode()
        lake.put(f"clicks/{P8}/{key}", gzip.compress(body))

    lines("a.gz", [1, 2])
    loads: list[str] = []
    real = engine_module.json_dataset

    def counted(*args: Any, **kwargs: Any) -> Any:
        loads.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "json_dataset", counted)
    with QueryEngine(lake) as engine:
        assert engine.query("SELECT sum(id) FROM clicks").rows == [(3,)]
        engine.refresh()  # nothing changed: the table is not read again
        assert loads == ["clicks"]
        lines("b.gz", [10])
        engine.refresh()  # a new file: read again, and it shows
        assert loads == ["clicks", "clicks"]
        assert engine.query("SELECT sum(id) FROM clicks").rows == [(13,)]

"""The SQL sandbox: every attack refused with its named reason, normal queries still run.

Two layers are tested: :func:`queries.sandbox.check_sql` alone (pure, no lake), and the
engine over a real lake folder, where DuckDB's own guards and the limits (time, memory,
rows, bytes scanned) also act.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from queries.engine import QueryEngine, QueryError
from queries.sandbox import REASONS, SandboxLimits, SandboxViolation, check_sql

REPO = Path(__file__).resolve().parents[2]


def write(lake: Path, table: str, folder: str, name: str, n: int) -> Path:
    path = lake / table / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"event_id": [f"e{i}" for i in range(n)], "n": list(range(n))}), path)
    return path


@pytest.fixture
def filled(lake: Path) -> Path:
    write(lake, "playback", "dt=2026-11-29/hour=08", "a.parquet", 300)
    write(lake, "playback", "dt=2026-11-30/hour=23", "b.parquet", 200)
    return lake


#: (SQL with {lake} and {outside}, expected reason)
ATTACKS = [
    ("SELECT * FROM read_csv('/etc/passwd')", "reads_outside_lake"),
    ("SELECT * FROM read_csv_auto('/etc/passwd', sep = ':')", "reads_outside_lake"),
    ("SELECT * FROM read_text('/etc/hostname')", "reads_outside_lake"),
    ("SELECT * FROM read_blob('/etc/hostname')", "reads_outside_lake"),
    ("SELECT * FROM glob('/etc/*')", "reads_outside_lake"),
    ("SELECT * FROM glob('{lake}/../*')", "reads_outside_lake"),
    (
        "SELECT * FROM read_parquet(['{lake}/playback/x.parquet', '/tmp/y.parquet'])",
        "reads_outside_lake",
    ),
    ("SELECT * FROM '/etc/passwd'", "reads_outside_lake"),
    ("SELECT * FROM read_csv('/et' || 'c/passwd')", "file_path_not_literal"),
    ("COPY (SELECT 1) TO '{lake}/playback/x.parquet' (FORMAT parquet)", "writes_files"),
    ("COPY (SELECT 1) TO '/tmp/out.csv'", "writes_files"),
    ("EXPORT DATABASE '{lake}/export'", "writes_files"),
    ("ATTACH '{lake}/x.db' AS x", "attach"),
    ("DETACH x", "attach"),
    ("INSTALL httpfs", "extensions"),
    ("LOAD httpfs", "extensions"),
    ("CREATE TABLE t AS SELECT 1", "create_outside_temp"),
    ("CREATE OR REPLACE VIEW playback AS SELECT 1 AS x", "create_outside_temp"),
    ("CREATE SCHEMA s", "create_outside_temp"),
    ("CREATE TEMP SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", "secrets"),
    ("SET enable_external_access = true", "settings"),
    ("SET memory_limit = '100GB'", "settings"),
    ("RESET memory_limit", "settings"),
    ("PRAGMA threads = 64", "settings"),
    ("SET lock_configuration = false", "settings"),
    ("SELECT getenv('HOME')", "environment"),
    ("SELECT * FROM query('SELECT 1')", "dynamic_sql"),
    ("DROP VIEW playback", "not_read_only"),
    ("INSERT INTO playback VALUES ('x', 1)", "not_read_only"),
    ("BEGIN TRANSACTION", "transaction"),
    ("SELECT 1; COPY (SELECT 1) TO '/tmp/x.csv'", "writes_files"),
    ("CHECKPOINT", "statement_type"),
]


@pytest.mark.parametrize(("sql", "reason"), ATTACKS)
def test_check_sql_refuses_with_the_reason(sql: str, reason: str, lake: Path) -> None:
    with pytest.raises(SandboxViolation) as caught:
        check_sql(sql.format(lake=lake), [lake])
    assert caught.value.reason == reason
    assert REASONS[reason] in str(caught.value)


@pytest.mark.parametrize(("sql", "reason"), ATTACKS)
def test_engine_refuses_then_answers(sql: str, reason: str, filled: Path) -> None:
    with QueryEngine(filled) as engine:
        with pytest.raises(QueryError) as caught:
            engine.query(sql.format(lake=filled))
        assert (caught.value.kind, caught.value.reason) == ("SandboxViolation", reason)
        assert caught.value.position is not None
        assert engine.query("SELECT count(*) FROM playback").rows == [(500,)]
    assert not (filled / "playback" / "x.parquet").exists()
    assert not (filled / "export").exists() and not (filled / "x.db").exists()


def test_reads_inside_the_lake_and_temp_objects_are_allowed(filled: Path) -> None:
    allowed = [
        "SELECT count(*) FROM playback WHERE dt = '2026-11-29'",
        f"SELECT count(*) FROM read_parquet('{filled}/playback/*/*/*.parquet')",
        "WITH x AS (SELECT 1 AS a) SELECT * FROM x",
        "DESCRIBE playback",
        "SUMMARIZE SELECT n FROM playback",
        "EXPLAIN SELECT * FROM playback",
        "PRAGMA table_info('playback')",
        "SELECT current_setting('memory_limit')",
        "PIVOT (SELECT dt, n FROM playback) ON dt USING count(*)",
        "CREATE TEMP TABLE top AS SELECT n FROM playback ORDER BY n DESC LIMIT 3; "
        "INSERT INTO top VALUES (-1); SELECT count(*) FROM top",
        "CREATE TEMP MACRO twice(x) AS x * 2; SELECT twice(21)",
    ]
    with QueryEngine(filled) as engine:
        for sql in allowed:
            engine.query(sql)
        assert engine.query(allowed[-2]).rows == [(4,)]
        # The temporary table went with the query's transaction.
        with pytest.raises(QueryError, match="top"):
            engine.query("SELECT * FROM top")


def test_duckdb_file_guard_backs_the_static_check(filled: Path, tmp_path: Path) -> None:
    """Python objects and the spill folder are out of reach too."""
    secret = tmp_path / ".tmp"
    secret.mkdir()
    (secret / "s.csv").write_text("a\n1\n")
    secret_table = pa.table({"s": ["secret"]})  # noqa: F841  (a replacement scan target)
    with QueryEngine(filled) as engine:
        with pytest.raises(QueryError, match="secret_table"):
            engine.query("SELECT * FROM secret_table")
        settings = dict(
            engine.query(
                "SELECT name, value FROM duckdb_settings() WHERE name IN "
                "('allowed_directories', 'temp_directory', 'lock_configuration')"
            ).rows
        )
    assert settings["allowed_directories"] == f"[{filled.resolve()}/]"
    assert settings["temp_directory"] == "" and settings["lock_configuration"] == "true"


def test_time_limit_interrupts_and_the_engine_goes_on(filled: Path) -> None:
    limits = SandboxLimits(timeout_seconds=0.5)
    with QueryEngine(filled, limits=limits) as engine:
        started = time.monotonic()
        with pytest.raises(QueryError) as caught:
            engine.query("SELECT sum(hash(range)) FROM range(100000000000)")
        assert time.monotonic() - started < 10
        assert caught.value.reason == "time_limit"
        assert engine.query("SELECT count(*) FROM playback").rows == [(500,)]


def test_memory_limit(filled: Path) -> None:
    limits = SandboxLimits(memory_limit_bytes=64 * 1024**2)
    with QueryEngine(filled, limits=limits) as engine:
        with pytest.raises(QueryError) as caught:
            engine.query("SELECT list(range) FROM range(50000000)")
        assert caught.value.reason == "memory_limit"
        assert "Out of Memory" in caught.value.message
        assert engine.query("SELECT count(*) FROM playback").rows == [(500,)]


def test_bytes_scanned_cutoff(filled: Path) -> None:
    with QueryEngine(filled) as engine:
        one_hour = engine.query("SELECT sum(n) FROM playback WHERE hour = 8").bytes_scanned
        everything = engine.query("SELECT sum(n) FROM playback").bytes_scanned
    assert one_hour and everything and everything > one_hour
    with QueryEngine(filled, limits=SandboxLimits(max_bytes_scanned=one_hour)) as engine:
        assert engine.query("SELECT sum(n) FROM playback WHERE hour = 8").rows
        with pytest.raises(QueryError) as caught:
            engine.query("SELECT sum(n) FROM playback")
        assert caught.value.reason == "bytes_scanned_limit"


def test_a_foreign_file_in_a_table_folder_is_ignored_and_reported(filled: Path) -> None:
    stray = write(filled, "playback", "", "x.parquet", 7)  # lake/playback/x.parquet
    other = write(filled, "playback", "junk", "y.parquet", 7)
    with QueryEngine(filled) as engine:
        assert engine.query("SELECT count(*) FROM playback").rows == [(500,)]
        problems = {p.path: p.reason for p in engine.tables["playback"].problems}
    assert set(problems) == {stray, other}
    done = subprocess.run(
        [sys.executable, "-m", "firelake.cli", "tables"],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "FIRELAKE_LAKE": str(filled), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "x.parquet" in done.stdout and "not read" in done.stdout


def test_an_unreadable_table_says_why(filled: Path) -> None:
    write(filled, "broken", "dt=2026-11-29/hour=08", "good.parquet", 1)
    (filled / "broken" / "dt=2026-11-29" / "hour=08" / "bad.parquet").write_bytes(b"nope")
    with QueryEngine(filled) as engine:
        with pytest.raises(QueryError) as caught:
            engine.query("SELECT count(*) FROM broken")
    assert "is a lake table, but it cannot be read" in caught.value.message
    assert "bad.parquet" in caught.value.message


def test_errors_carry_duckdb_message_and_position(filled: Path) -> None:
    with QueryEngine(filled) as engine:
        with pytest.raises(QueryError) as caught:
            engine.query("SELECT 1;\nSELECT nope\n  FROM playback")
    assert caught.value.kind == "BinderException"
    assert "nope" in caught.value.message and "LINE 2" in caught.value.message
    assert caught.value.position == (2, 8)
    with QueryEngine(filled) as engine:
        with pytest.raises(QueryError) as caught:
            engine.query("SELECT 1 FROM playback WHERE")
    assert caught.value.kind == "ParserException" and caught.value.position is not None


def test_named_parameters(filled: Path) -> None:
    with QueryEngine(filled) as engine:
        result = engine.query(
            "SELECT count(*) FROM playback WHERE dt = $day", params={"day": "2026-11-29"}
        )
        assert result.rows == [(300,)]
        with pytest.raises(QueryError, match=r"missing parameter\(s\) \$day"):
            engine.query("SELECT count(*) FROM playback WHERE dt = $day")
        with pytest.raises(QueryError, match="dya"):
            engine.query("SELECT $day", params={"day": 1, "dya": 2})


def test_cli_refuses_with_the_reason_then_answers(filled: Path) -> None:
    """`firelake query` as a user runs it: the issue's COPY into the lake and a runaway
    query are refused with their reasons, the table still answers, nothing was written."""
    env = {"PYTHONPATH": str(REPO), "FIRELAKE_LAKE": str(filled), "PATH": "/usr/bin:/bin"}

    def firelake(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "firelake.cli", "query", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    target = filled / "playback" / "x.parquet"
    done = firelake(f"COPY (SELECT 1) TO '{target}' (FORMAT parquet)")
    assert done.returncode == 1 and "(writes_files)" in done.stderr
    assert not target.exists()
    config = filled.parent / "firelake.toml"
    config.write_text(f'[lake]\nroot = "{filled}"\n[query]\ntimeout_seconds = 1.0\n')
    done = firelake("--config", str(config), "SELECT sum(hash(range)) FROM range(100000000000)")
    assert done.returncode == 1 and "(time_limit)" in done.stderr
    done = firelake("SELECT count(*) FROM playback", "--format", "csv")
    assert done.returncode == 0 and done.stdout.split() == ["count_star()", "500"]


def test_sql_quoting_helpers_double_their_quotes() -> None:
    import duckdb

    from queries.sandbox import identifier, sql_string

    assert sql_string("it's") == "'it''s'" and identifier('a"b') == '"a""b"'
    table, text = identifier('we"ird'), sql_string("o'k")
    conn = duckdb.connect()
    conn.execute(f"CREATE TABLE {table} AS SELECT {text} AS v")
    assert conn.execute(f"SELECT v FROM {table}").fetchall() == [("o'k",)]

"""Saved queries and views as files, the seed reports, and CTAS-style export."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from firelake.cli import main as firelake_main
from firelake.config import EXAMPLE_CONFIG, load_config
from queries.catalog import RESERVED_FOLDERS, list_tables
from queries.engine import QueryEngine
from queries.export import ExportError, export_file, export_table
from queries.saved import SavedQueryError, bind_parameters, load_saved, parse_saved, saved_dir
from sinks.destinations import LocalDestination

TS = pa.timestamp("us", tz="UTC")


def write(lake: Path, table: str, folder: str, columns: dict) -> None:
    path = lake / table / folder / "f.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


@pytest.fixture
def yle_lake(lake: Path) -> Path:
    """Two hours of plays and a few DLQ records, Yle-shaped."""
    for hour in (8, 9):
        n = 60
        write(
            lake,
            "playback",
            f"dt=2026-11-28/hour={hour:02d}",
            {
                "event_id": [f"e{hour}-{i}" for i in range(n)],
                "event_type": ["start" if i % 2 == 0 else "stop" for i in range(n)],
                "content_id": [f"1-{i % 5}" for i in range(n)],
                "content_type": ["episode"] * n,
                "user_id": [f"u{i % 7}" for i in range(n)],
                "device": ["tv" if i % 3 else "mobile" for i in range(n)],
                "platform": ["smarttv" if i % 3 else "ios" for i in range(n)],
                "event_time": pa.array([datetime(2026, 11, 28, hour, tzinfo=UTC)] * n, TS),
            },
        )
    write(
        lake,
        "dlq",
        "dt=2026-11-28/hour=08",
        {
            "error_type": ["missing_field", "wrong_type", "missing_field"],
            "reason": ["no content_id", "position_seconds", "no user_id"],
            "source_topic": ["raw-events"] * 3,
            "failed_at": pa.array([datetime(2026, 11, 28, 8, tzinfo=UTC)] * 3, TS),
        },
    )
    return lake


def yle_saved() -> dict:
    return load_saved([saved_dir(load_config(EXAMPLE_CONFIG, environ={}))])


def test_header_parameters_and_chart(tmp_path: Path) -> None:
    text = (
        "-- description: Plays on a day\n"
        "-- param: day date = 2026-11-28  The day\n"
        "-- param: top int\n"
        "-- chart: bar content_id plays\n"
        "-- an ordinary comment\n"
        "SELECT $day AS d, $top AS t\n"
    )
    query = parse_saved(text, tmp_path / "plays_on.sql")
    assert (query.name, query.description, query.view) == ("plays_on", "Plays on a day", False)
    day, top = query.parameters
    assert (day.type, day.default, day.description, top.required) == (
        "date",
        "2026-11-28",
        "The day",
        True,
    )
    assert (query.chart.kind, query.chart.x, query.chart.y) == ("bar", "content_id", "plays")
    assert bind_parameters(query, {"top": "3"}) == {"day": date(2026, 11, 28), "top": 3}
    with pytest.raises(SavedQueryError, match=r"top .*required"):
        bind_parameters(query, {})
    with pytest.raises(SavedQueryError, match="unknown parameter"):
        bind_parameters(query, {"top": 1, "tpo": 2})
    with pytest.raises(SavedQueryError, match="parameter top"):
        bind_parameters(query, {"top": "many"})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("SELECT $day", "day used but not declared"),
        ("-- param: day date\nSELECT 1", "day declared but not used"),
        ("-- param: day month\nSELECT $day", "unknown type 'month'"),
        ("-- param: day date = soon\nSELECT $day", "default"),
        ("-- colour: red\nSELECT 1", "unknown header key 'colour'"),
        ("-- view: true\n-- param: d date\nSELECT $d", "a view cannot take parameters"),
        ("-- chart: pie a b\nSELECT 1", "kind is one of"),
        ("-- description: nothing\n", "no SQL"),
        ("-- name: bad name\nSELECT 1", "letters, digits"),
        ("SELEC 1", "does not parse"),
    ],
)
def test_bad_files_are_refused_with_path_and_reason(text: str, reason: str, tmp_path: Path) -> None:
    with pytest.raises(SavedQueryError, match=reason) as caught:
        parse_saved(text, tmp_path / "q.sql")
    assert str(tmp_path / "q.sql") in str(caught.value)


def test_seed_reports_answer_over_a_yle_lake(yle_lake: Path) -> None:
    saved = yle_saved()
    assert {"top_content", "plays_by_device_hourly", "dlq_by_reason", "plays"} <= set(saved)
    views = {q.name: q.sql for q in saved.values() if q.view}
    with QueryEngine(yle_lake, views=views) as engine:
        top = engine.query(
            saved["top_content"].sql,
            params=bind_parameters(saved["top_content"], {"day": "2026-11-28", "top": "2"}),
        )
        assert top.columns[:3] == ("content_id", "content_type", "plays")
        assert [row[2] for row in top.rows] == [12, 12]
        hourly = engine.query(
            saved["plays_by_device_hourly"].sql,
            params=bind_parameters(saved["plays_by_device_hourly"], {"day": "2026-11-28"}),
        )
        assert sum(row[3] for row in hourly.rows) == 60
        assert {row[0] for row in hourly.rows} == {8, 9}
        dlq = engine.query(
            saved["dlq_by_reason"].sql, params=bind_parameters(saved["dlq_by_reason"], {})
        )
        assert [(row[0], row[2]) for row in dlq.rows] == [("missing_field", 2), ("wrong_type", 1)]
        assert engine.query("SELECT count(*) FROM plays").rows == [(60,)]


def test_a_view_over_a_missing_table_says_why(lake: Path) -> None:
    write(lake, "page", "dt=2026-11-28/hour=08", {"page": ["/"]})
    with QueryEngine(lake, views={"plays": "SELECT * FROM playback"}) as engine:
        assert "plays" in engine.view_errors
        with pytest.raises(Exception, match="saved view that could not be created"):
            engine.query("SELECT * FROM plays")


def test_cli_runs_saved_queries_and_exports(
    yle_lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setenv("FIRELAKE_LAKE", str(yle_lake))
    config = ["--config", str(EXAMPLE_CONFIG)]
    assert firelake_main(["query", *config, "--list"]) == 0
    assert "top_content" in capsys.readouterr().out

    argv = ["query", *config, "--saved", "top_content", "--param", "day=2026-11-28"]
    assert firelake_main([*argv, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["plays"] == 12 and len(rows) == 5

    assert firelake_main([*argv, "--output", str(tmp_path / "top.csv")]) == 0
    assert (tmp_path / "top.csv").read_text().splitlines()[0].startswith('"content_id"')

    ctas = "SELECT dt, hour, device, count(*) AS plays FROM plays GROUP BY ALL"
    assert firelake_main(["query", *config, ctas, "--into-table", "plays_hourly"]) == 0
    capsys.readouterr()
    tables = {t.name: t for t in list_tables(yle_lake)}
    assert tables["plays_hourly"].rows == 4 and len(tables["plays_hourly"].partitions) == 2
    assert firelake_main(["query", *config, ctas, "--into-table", "plays_hourly"]) == 1
    assert "already exists" in capsys.readouterr().err

    assert firelake_main(["query", *config, "--saved", "top_content", "--param", "x=1"]) == 1
    assert "unknown parameter(s) x" in capsys.readouterr().err


def test_export_formats_and_refusals(tmp_path: Path) -> None:
    table = pa.table({"a": [1, 2], "when": pa.array([datetime(2026, 1, 1, tzinfo=UTC)] * 2, TS)})
    assert export_file(table, tmp_path / "r.parquet").rows == 2
    assert pq.read_table(tmp_path / "r.parquet").equals(table)
    export_file(table, tmp_path / "r.jsonl")
    first = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert first["a"] == 1 and first["when"].startswith("2026-01-01T00:00:00")
    with pytest.raises(ExportError, match="extension"):
        export_file(table, tmp_path / "r.txt")
    destination = LocalDestination(tmp_path / "lake")
    now = datetime(2026, 11, 28, 7, tzinfo=UTC)
    report = export_table(table, destination, "results", now=now)
    assert report.files == 1
    assert (tmp_path / "lake" / "results" / "dt=2026-11-28" / "hour=07").is_dir()
    with pytest.raises(ExportError, match="already exists"):
        export_table(table, destination, "results", existing={"results"})
    with pytest.raises(ExportError, match="table name"):
        export_table(table, destination, "../x")
    for reserved in RESERVED_FOLDERS:  # the lake's own folders are never tables
        with pytest.raises(ExportError, match="table name"):
            export_table(table, destination, reserved)
    with pytest.raises(ExportError, match="no rows"):
        export_table(table.slice(0, 0), destination, "empty")

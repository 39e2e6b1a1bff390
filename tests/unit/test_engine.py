"""DuckDB over the lake: views, partition pruning, schema evolution, formats and errors."""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from queries.catalog import live_table_files
from queries.engine import (
    QueryEngine,
    QueryError,
    QueryResult,
    arrow_dataset,
    format_csv,
    format_json,
    format_table,
)
from sinks.destinations import LocalDestination

TS = pa.timestamp("us", tz="UTC")


def write(lake: Path, table: str, dt: str, hour: int, name: str, columns: dict) -> Path:
    """One Parquet file of a lake table in the Hive layout."""
    path = lake / table / f"dt={dt}" / f"hour={hour:02d}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, compression="zstd")
    return path


def playback(n: int, start: int, when: datetime) -> dict:
    return {
        "event_id": [f"e{i:06d}" for i in range(start, start + n)],
        "event_time": pa.array([when] * n, TS),
        "position_seconds": list(range(start, start + n)),
    }


@pytest.fixture
def filled(lake: Path) -> Path:
    """A lake with two tables: playback over two partitions, page over one."""
    write(
        lake,
        "playback",
        "2026-11-29",
        8,
        "a.parquet",
        playback(300, 0, datetime(2026, 11, 29, 8, 15, tzinfo=UTC)),
    )
    write(
        lake,
        "playback",
        "2026-11-30",
        23,
        "b.parquet",
        playback(200, 300, datetime(2026, 11, 30, 23, 5, tzinfo=UTC)),
    )
    write(lake, "page", "2026-11-29", 8, "p.parquet", {"page": ["/", "/uutiset", "/"]})
    return lake


def test_one_view_per_table_with_typed_partitions(filled: Path) -> None:
    with QueryEngine(filled) as engine:
        assert sorted(engine.tables) == ["page", "playback"]
        counts = engine.query("SELECT count(*) FROM playback").rows
        assert counts == [(500,)]
        assert engine.query("SELECT count(*) FROM page").rows == [(3,)]

        result = engine.query(
            "SELECT dt, hour, event_time FROM playback WHERE event_id = 'e000310'"
        )
        assert result.columns == ("dt", "hour", "event_time")
        assert result.types[:2] == ("DATE", "INTEGER")
        dt, hour, event_time = result.rows[0]
        assert (dt, hour) == (date(2026, 11, 30), 23)
        assert event_time == datetime(2026, 11, 30, 23, 5, tzinfo=UTC)
        assert event_time.utcoffset().total_seconds() == 0


def test_partition_pruning_reads_only_matching_files(filled: Path) -> None:
    with QueryEngine(filled) as engine:
        everything = engine.query("SELECT sum(position_seconds) FROM playback")
        pruned = engine.query(
            "SELECT sum(position_seconds) FROM playback WHERE dt = '2026-11-30' AND hour = 23"
        )

    assert pruned.rows == [(sum(range(300, 500)),)]
    # Bytes scanned are the compressed column chunks read: only b.parquet's column.
    meta = pq.read_metadata(filled / "playback" / "dt=2026-11-30" / "hour=23" / "b.parquet")
    column = meta.schema.names.index("position_seconds")
    expected = sum(
        meta.row_group(i).column(column).total_compressed_size for i in range(meta.num_row_groups)
    )
    assert pruned.bytes_scanned == expected
    assert everything.bytes_scanned is not None and everything.bytes_scanned > expected
    assert pruned.cost_usd == pytest.approx(expected / 1e12 * 5)


def test_newer_files_may_add_columns(filled: Path) -> None:
    columns = playback(2, 900, datetime(2026, 11, 30, 23, 30, tzinfo=UTC))
    columns["bitrate_kbps"] = [3200, 1600]
    write(filled, "playback", "2026-11-30", 23, "c.parquet", columns)

    with QueryEngine(filled) as engine:
        rows = engine.query(
            "SELECT event_id, bitrate_kbps FROM playback "
            "WHERE event_id IN ('e000000', 'e000900', 'e000901') ORDER BY event_id"
        ).rows

    assert rows == [("e000000", None), ("e000900", 3200), ("e000901", 1600)]


def test_new_files_show_without_refresh_new_tables_after(filled: Path) -> None:
    with QueryEngine(filled) as engine:
        write(filled, "page", "2026-11-29", 9, "q.parquet", {"page": ["/urheilu"]})
        assert engine.query("SELECT count(*) FROM page").rows == [(4,)]

        write(filled, "dlq", "2026-11-29", 9, "d.parquet", {"reason": ["bad"]})
        with pytest.raises(QueryError):
            engine.query("SELECT count(*) FROM dlq")
        engine.refresh()
        assert engine.query("SELECT count(*) FROM dlq").rows == [(1,)]

        shutil.rmtree(filled / "dlq")
        engine.refresh()
        assert "dlq" not in engine.tables
        with pytest.raises(QueryError, match="dlq"):
            engine.query("SELECT count(*) FROM dlq")


def test_in_flight_dot_files_are_never_read(filled: Path) -> None:
    half = filled / "page" / "dt=2026-11-29" / "hour=08" / ".p2.parquet.tmp-1.parquet"
    half.write_bytes(b"PAR1 half written")
    with QueryEngine(filled) as engine:
        assert engine.query("SELECT count(*) FROM page").rows == [(3,)]


def test_a_broken_or_emptied_table_does_not_break_the_others(filled: Path) -> None:
    (filled / "empty" / "dt=2026-11-29" / "hour=08").mkdir(parents=True)
    write(filled, "broken", "2026-11-29", 8, "good.parquet", {"x": [1]})
    broken = filled / "broken" / "dt=2026-11-29" / "hour=08" / "x.parquet"
    broken.write_bytes(b"definitely not parquet")

    with QueryEngine(filled) as engine:
        assert "empty" not in engine.tables
        assert "x.parquet" in engine.view_errors["broken"]
        assert "broken" not in engine.tables
        with pytest.raises(QueryError, match="broken"):
            engine.query("SELECT count(*) FROM broken")
        assert engine.query("SELECT count(*) FROM page").rows == [(3,)]

        # Files vanish under a live view (retention): that table errors, others answer.
        shutil.rmtree(filled / "page")
        with pytest.raises(QueryError, match="No files found"):
            engine.query("SELECT count(*) FROM page")
        assert engine.query("SELECT count(*) FROM playback").rows == [(500,)]


def test_sql_errors_are_clean(filled: Path) -> None:
    with QueryEngine(filled) as engine:
        with pytest.raises(QueryError) as caught:
            engine.query("SELEC 1")
        assert "syntax error" in caught.value.message
        assert caught.value.sql == "SELEC 1"
        assert caught.value.kind == "ParserException"
        assert caught.value.__cause__ is None and caught.value.__suppress_context__

        with pytest.raises(QueryError, match="nope") as caught:
            engine.query("SELECT nope FROM playback")
        assert caught.value.kind == "BinderException"


def test_sandbox_reads_only_the_lake(filled: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    with QueryEngine(filled) as engine:
        with pytest.raises(QueryError, match="reads_outside_lake") as caught:
            engine.query(f"SELECT * FROM read_csv('{outside}')")
        assert caught.value.reason == "reads_outside_lake"
        assert caught.value.position == (1, 24)
        with pytest.raises(QueryError):
            engine.query("SET enable_external_access = true")
        with pytest.raises(QueryError):
            engine.query("INSTALL httpfs")
    with QueryEngine(filled, sandbox=False) as engine:
        assert engine.query(f"SELECT a FROM read_csv('{outside}')").rows == [(1,)]


def test_row_limit_truncates(filled: Path) -> None:
    with QueryEngine(filled, max_rows=10) as engine:
        result = engine.query("SELECT event_id FROM playback ORDER BY event_id")
        assert len(result.rows) == 10 and result.truncated
        assert result.rows[0] == ("e000000",)
        full = engine.query("SELECT event_id FROM playback", max_rows=1000)
        assert len(full.rows) == 500 and not full.truncated
        statement = engine.query("CREATE TEMP TABLE scratch AS SELECT 1 AS x")
        assert (statement.columns, statement.rows) == (("Count",), [(1,)])


def result_fixture() -> QueryResult:
    return QueryResult(
        sql="...",
        columns=("name", "n", "at", "price"),
        types=("VARCHAR", "BIGINT", "TIMESTAMP WITH TIME ZONE", "DECIMAL(5,2)"),
        rows=[
            ("areena", 1200, datetime(2026, 11, 29, 8, 0, 1, tzinfo=UTC), Decimal("1.50")),
            ('uutiset, "live"', 7, None, None),
        ],
        elapsed=0.01,
        bytes_scanned=0,
    )


def test_format_table_aligns_columns() -> None:
    text = format_table(result_fixture())
    lines = text.splitlines()
    assert lines[0].split(" | ")[0].strip() == "name"
    assert "2026-11-29T08:00:01Z" in lines[2]
    assert "NULL" in lines[3]
    # Numbers are right-aligned: both rows end their n column at the same place.
    n_end = {line.index(" | ", line.index(" | ") + 1) for line in lines[2:4]}
    assert len(n_end) == 1
    assert lines[3].split(" | ")[1] == "   7"
    assert lines[-1] == "(2 rows)"
    assert len({len(line.split(" | ")[0]) for line in lines[:1] + lines[2:4]}) == 1


def test_format_csv_quotes_and_nulls() -> None:
    rows = list(csv.reader(io.StringIO(format_csv(result_fixture()))))
    assert rows == [
        ["name", "n", "at", "price"],
        ["areena", "1200", "2026-11-29T08:00:01Z", "1.50"],
        ['uutiset, "live"', "7", "", ""],
    ]


def test_format_json_array_and_lines() -> None:
    array = json.loads(format_json(result_fixture()))
    assert array[0] == {"name": "areena", "n": 1200, "at": "2026-11-29T08:00:01Z", "price": 1.5}
    assert array[1]["at"] is None
    lines = format_json(result_fixture(), lines=True).splitlines()
    assert [json.loads(line) for line in lines] == array


def test_bad_arguments_are_refused(lake: Path) -> None:
    with pytest.raises(ValueError, match="threads"):
        QueryEngine(lake, threads=0)
    with QueryEngine(lake) as engine:
        with pytest.raises(ValueError, match="max_rows"):
            engine.query("SELECT 1", max_rows=0)
        assert engine.query("SELECT 42 AS answer").rows == [(42,)]


def test_arrow_dataset_matches_the_read_parquet_view(filled: Path) -> None:
    """The S3 reader (an Arrow dataset) over a local root: same columns, types and rows."""
    write(
        filled,
        "playback",
        "2026-11-30",
        23,
        "c.parquet",
        {**playback(5, 900, datetime(2026, 11, 30, 23, 50, tzinfo=UTC)), "quality": ["hd"] * 5},
    )
    destination = LocalDestination(filled)
    files = live_table_files(destination, "playback")
    dataset = arrow_dataset(destination, "playback", files)
    assert dataset.schema.names[-3:] == ["quality", "dt", "hour"]
    with QueryEngine(filled) as engine:
        conn = duckdb.connect()
        conn.register("arrow", dataset)
        for where in ("true", "dt = '2026-11-30' AND hour = 23", "quality IS NULL"):
            view = engine.query(f"SELECT * FROM playback WHERE {where} ORDER BY event_id")
            arrow = conn.execute(f"SELECT * FROM arrow WHERE {where} ORDER BY event_id")
            assert [str(d[1]) for d in arrow.description] == list(view.types)
            assert arrow.fetchall() == view.rows
    # Partition values come from the paths: a filter on them skips fragments unopened.
    assert dataset.to_table(filter=ds.field("hour") == 23).num_rows == 205
    assert len(list(dataset.get_fragments(filter=ds.field("hour") == 8))) == 1
    # No files left: an empty table with the last schema, not an error.
    empty = arrow_dataset(destination, "playback", [], previous=dataset.schema)
    assert empty.schema == dataset.schema and empty.to_table().num_rows == 0

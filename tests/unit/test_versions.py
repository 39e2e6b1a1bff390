"""Schema versions crawled from the lake, kept across compaction, in Glue's types."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from queries.catalog import list_tables
from queries.versions import glue_type, record_versions, table_columns, versions_key
from sinks.destinations import LocalDestination


def write(lake: Path, hour: int, name: str, columns: dict, mtime: float) -> Path:
    path = lake / "t" / "dt=2026-11-29" / f"hour={hour:02d}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    os.utime(path, (mtime, mtime))
    return path


def test_versions_follow_the_files_and_survive_their_removal(lake: Path) -> None:
    first = write(lake, 8, "a.parquet", {"id": [1], "n": pa.array([1], pa.int32())}, 1_000)
    (info,) = list_tables(lake)
    destination = LocalDestination(lake)
    (v1,) = record_versions(destination, info)
    assert [(c.name, c.type) for c in v1.columns] == [
        ("id", "bigint"),
        ("n", "int"),
        ("dt", "date"),
        ("hour", "int"),
    ]
    assert (lake / versions_key("t")).exists()

    write(lake, 9, "b.parquet", {"id": [2], "n": [2], "country": ["fi"]}, 2_000)
    (info,) = list_tables(lake)
    v1_again, v2 = record_versions(destination, info)
    assert v1_again == v1
    assert (v2.version, v2.added, v2.changed, v2.created) == (2, ("country",), ("n",), 2_000)
    assert [c.name for c in table_columns(info)] == ["id", "n", "country", "dt", "hour"]

    # The old file goes (compaction, retention): the record keeps the history.
    first.unlink()
    (info,) = list_tables(lake)
    assert [v.version for v in record_versions(destination, info)] == [1, 2]
    assert [v.version for v in record_versions(None, info)] == [1]  # files alone


def test_glue_types() -> None:
    assert glue_type(pa.string()) == "string"
    assert glue_type(pa.timestamp("us", tz="UTC")) == "timestamp"
    assert glue_type(pa.decimal128(10, 2)) == "decimal(10,2)"
    assert glue_type(pa.list_(pa.string())) == "array<string>"
    assert glue_type(pa.map_(pa.string(), pa.int64())) == "map<string,bigint>"
    assert glue_type(pa.struct([("a", pa.bool_()), ("b", pa.float64())])) == (
        "struct<a:boolean,b:double>"
    )


def test_describe_command(lake: Path, capsys, monkeypatch) -> None:
    from firelake.cli import main as firelake_main
    from firelake.config import EXAMPLE_CONFIG

    write(lake, 8, "a.parquet", {"id": [1]}, 1_000)
    write(lake, 9, "b.parquet", {"id": [2], "country": ["fi"]}, 2_000)
    (lake / "t" / "stray.parquet").write_bytes(
        (lake / "t" / "dt=2026-11-29" / "hour=08" / "a.parquet").read_bytes()
    )
    monkeypatch.setenv("FIRELAKE_LAKE", str(lake))
    assert firelake_main(["describe", "--config", str(EXAMPLE_CONFIG), "t", "--versions"]) == 0
    out = capsys.readouterr().out
    assert "rows        2   files 2" in out and "version     2 of 2" in out
    assert "country                  string" in out and "added country" in out
    assert "stray.parquet" in out
    assert firelake_main(["describe", "--config", str(EXAMPLE_CONFIG), "nope"]) == 1
    assert "no table 'nope'" in capsys.readouterr().err

"""Raw JSON-lines tables (Firehose without format conversion) in the catalog and in SQL."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from queries.catalog import list_tables
from queries.engine import QueryEngine


def lines(path: Path, events: list[dict], gz: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(e) + "\n" for e in events).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_json_lines_tables_are_catalogued_and_queried(lake: Path) -> None:
    folder = lake / "clicks" / "dt=2026-11-29" / "hour=08"
    # Firehose's own naming (".gz"), JSON lines plain and gzip, a column added later.
    lines(folder / "clicks-1-2026-11-29-08-00-00-abc.gz", [{"id": 1, "page": "/"}] * 3)
    lines(folder / "b.jsonl", [{"id": 2, "page": "/a"}], gz=False)
    later = lake / "clicks" / "dt=2026-11-29" / "hour=09" / "c.json.gz"
    lines(later, [{"id": 3, "page": "/b", "referrer": "x"}] * 2)
    lines(folder / ".inflight.gz", [{"id": 99}] * 50)
    stray = lines(lake / "clicks" / "stray.json.gz", [{"id": 100}])

    (table,) = list_tables(lake)
    assert (table.name, table.format, table.rows, table.files) == ("clicks", "json", 6, 3)
    assert [p.hour for p in table.partitions] == [8, 9]
    assert [p.path for p in table.problems] == [stray]

    with QueryEngine(lake) as engine:
        result = engine.query(
            "SELECT hour, count(*), count(referrer), sum(id) FROM clicks GROUP BY 1 ORDER BY 1"
        )
        assert result.rows == [(8, 4, 0, 5), (9, 2, 2, 6)]
        types = dict(engine.query("SELECT column_name, column_type FROM (DESCRIBE clicks)").rows)
        assert types["dt"] == "DATE" and types["hour"] == "INTEGER"
        assert types["id"] == "BIGINT" and types["referrer"] == "VARCHAR"
        pruned = engine.query("SELECT count(*) FROM clicks WHERE hour = 9")
        assert pruned.rows == [(2,)]


def test_files_outside_the_json_tables_layout_are_reported(lake: Path) -> None:
    # Two files in dt=/hour=, one in a folder layout of its own: queries skip it, and the
    # catalog says so (as for Parquet tables) rather than dropping it silently.
    lines(lake / "j" / "dt=2026-11-29" / "hour=08" / "a.json", [{"id": 1}], gz=False)
    lines(lake / "j" / "dt=2026-11-29" / "hour=09" / "b.json", [{"id": 2}], gz=False)
    odd = lines(lake / "j" / "hour=10" / "dt=2026-11-29" / "c.json", [{"id": 3}], gz=False)

    (table,) = list_tables(lake)
    assert (table.format, table.rows, table.files) == ("json", 2, 2)
    assert [p.path for p in table.problems] == [odd]
    assert "partition folders differ" in table.problems[0].reason


def test_describe_command_describes_json_tables(lake: Path, capsys, monkeypatch) -> None:
    from firelake.cli import main as firelake_main
    from firelake.config import EXAMPLE_CONFIG

    folder = lake / "clicks" / "dt=2026-11-29" / "hour=08"
    lines(folder / "clicks-1-2026-11-29-08-00-00-abc.gz", [{"id": 1, "page": "/"}] * 3)
    monkeypatch.setenv("FIRELAKE_LAKE", str(lake))
    assert firelake_main(["describe", "--config", str(EXAMPLE_CONFIG), "clicks"]) == 0
    out = capsys.readouterr().out
    assert "table       clicks" in out and "rows        3   files 1" in out


def test_glue_describes_json_tables_as_json(lake: Path) -> None:
    from api.glue_lake import _partitions, glue_table

    lines(lake / "clicks" / "dt=2026-11-29" / "hour=08" / "a.gz", [{"id": 1}] * 2)
    plays = lake / "plays" / "dt=2026-11-29" / "hour=08" / "p.parquet"
    plays.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": [1]}), plays)

    clicks, parquet = sorted(list_tables(lake), key=lambda t: t.name)
    table = glue_table(clicks, [])
    storage = table["StorageDescriptor"]
    assert table["Parameters"]["classification"] == "json"
    assert storage["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    assert storage["InputFormat"] == "org.apache.hadoop.mapred.TextInputFormat"
    assert storage["Compressed"] is True  # gzipped lines
    (partition,) = _partitions(clicks)
    assert partition["StorageDescriptor"]["InputFormat"] == storage["InputFormat"]

    table = glue_table(parquet, [])
    assert table["Parameters"]["classification"] == "parquet"
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"].endswith(
        "ParquetHiveSerDe"
    )

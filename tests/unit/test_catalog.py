"""The lake catalog: tables, files, partitions and counts read from the filesystem."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from queries.catalog import Lake, list_tables, parse_partition
from sinks.destinations import LocalDestination
from sinks.manifest import Manifest
from sinks.paths import manifest_key


def write(path: Path, rows: int, start: int = 0) -> Path:
    """A small Parquet file of ``rows`` events in the lake layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    times = [datetime(2026, 11, 29, 8, tzinfo=UTC)] * rows
    table = pa.table(
        {
            "event_id": [f"e{i}" for i in range(start, start + rows)],
            "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(table, path, compression="zstd")
    return path


def test_tables_files_partitions_and_counts(lake: Path) -> None:
    a = write(lake / "playback" / "dt=2026-11-29" / "hour=08" / "a.parquet", 3)
    b = write(lake / "playback" / "dt=2026-11-29" / "hour=08" / "b.parquet", 2)
    c = write(lake / "playback" / "dt=2026-11-30" / "hour=00" / "c.parquet", 5)
    write(lake / "page" / "dt=2026-11-29" / "hour=09" / "p.parquet", 7)

    tables = list_tables(lake)

    assert [t.name for t in tables] == ["page", "playback"]
    playback = tables[1]
    assert playback.rows == 10
    assert playback.files == 3
    assert {f.path for f in playback.data_files} == {a, b, c}
    assert playback.bytes == sum(p.stat().st_size for p in (a, b, c))
    assert [(p.dt, p.hour, p.files, p.rows) for p in playback.partitions] == [
        ("2026-11-29", 8, 2, 5),
        ("2026-11-30", 0, 1, 5),
    ]
    assert playback.problems == ()
    assert tables[0].rows == 7


def test_reserved_dot_and_empty_folders_are_not_tables(lake: Path) -> None:
    write(lake / "_firelake" / "dt=2026-11-29" / "hour=08" / "state.parquet", 1)
    write(lake / "_errors" / "playback" / "dt=2026-11-29" / "hour=08" / "e.parquet", 1)
    write(lake / ".trash" / "dt=2026-11-29" / "hour=08" / "x.parquet", 1)
    (lake / "empty" / "dt=2026-11-29" / "hour=08").mkdir(parents=True)
    # Only an in-flight file: the table does not exist yet.
    write(lake / "inflight" / "dt=2026-11-29" / "hour=08" / ".tmp-1.parquet", 1)
    (lake / "notes.txt").write_text("not a table")

    assert list_tables(lake) == []


def test_in_flight_files_and_dot_folders_are_not_counted(lake: Path) -> None:
    write(lake / "page" / "dt=2026-11-29" / "hour=08" / "done.parquet", 4)
    write(lake / "page" / "dt=2026-11-29" / "hour=08" / ".writing.parquet", 100)
    write(lake / "page" / ".staging" / "dt=2026-11-29" / "hour=08" / "s.parquet", 100)

    (table,) = list_tables(lake)

    assert table.rows == 4
    assert [f.path.name for f in table.data_files] == ["done.parquet"]


def test_unreadable_and_out_of_layout_files_are_problems(lake: Path) -> None:
    write(lake / "page" / "dt=2026-11-29" / "hour=08" / "good.parquet", 2)
    broken = lake / "page" / "dt=2026-11-29" / "hour=08" / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    stray = write(lake / "page" / "stray.parquet", 3)

    (table,) = list_tables(lake)

    reasons = {p.path: p.reason for p in table.problems}
    assert "unreadable Parquet footer" in reasons[broken]
    assert "outside the dt=YYYY-MM-DD/hour=HH layout" in reasons[stray]
    # Neither counts: queries cannot read the broken one and skip the stray one.
    assert table.rows == 2 and table.files == 1
    assert table.layout == ("dt", "hour")
    assert [(p.dt, p.hour, p.rows) for p in table.partitions] == [("2026-11-29", 8, 2)]


def test_missing_lake_root_has_no_tables(tmp_path: Path) -> None:
    assert list_tables(tmp_path / "nowhere") == []


def test_parse_partition() -> None:
    assert parse_partition(Path("dt=2026-11-29/hour=08/f.parquet")) == ("2026-11-29", 8)
    assert parse_partition(Path("dt=2026-11-29/hour=8/event_type=x/f.parquet")) == (
        "2026-11-29",
        8,
    )
    assert parse_partition(Path("dt=2026-11-29/hour=24/f.parquet")) is None
    assert parse_partition(Path("dt=2026-11-29/f.parquet")) is None
    assert parse_partition(Path("date=2026-11-29/hour=01/f.parquet")) is None
    assert parse_partition(Path("f.parquet")) is None


def test_files_a_compaction_replaced_are_not_counted(lake: Path) -> None:
    folder = lake / "page" / "dt=2026-11-29" / "hour=08"
    write(folder / "a.parquet", 3)
    write(folder / "b.parquet", 4)
    write(folder / "compacted-1.parquet", 7)  # a and b merged: the manifest's switch
    write(folder / "compacted-2.parquet", 100)  # a killed compaction's output: never listed
    write(folder / "c.parquet", 2)  # written after the compaction
    key = "page/dt=2026-11-29/hour=08/"
    manifest = Manifest(
        version=1,
        active=[key + "compacted-1.parquet"],
        retired={key + "a.parquet": 1.0, key + "b.parquet": 1.0},
    )
    (lake / manifest_key("page")).parent.mkdir(parents=True)
    (lake / manifest_key("page")).write_bytes(manifest.to_json())

    (table,) = list_tables(lake)

    # a and b stay on disk during their grace period, but only their merge counts.
    assert sorted(Path(f.path).name for f in table.data_files) == [
        "c.parquet",
        "compacted-1.parquet",
    ]
    assert (table.files, table.rows) == (2, 9)
    assert [(p.dt, p.hour, p.files, p.rows) for p in table.partitions] == [("2026-11-29", 8, 2, 9)]


def test_deleted_retired_files_stay_out_and_unmanifested_outputs_too(lake: Path) -> None:
    folder = lake / "page" / "dt=2026-11-29" / "hour=08"
    write(folder / "a.parquet", 3)
    # Before any manifest an output of a compaction killed before its switch is unused.
    write(folder / "compacted-9.parquet", 50)
    assert [t.rows for t in list_tables(lake)] == [3]
    # A manifest that deleted a file it once retired (it reappeared: a sink's rewrite).
    key = "page/dt=2026-11-29/hour=08/"
    manifest = Manifest(version=3, active=[key + "compacted-9.parquet"])
    manifest.deleted[key + "a.parquet"] = 5.0
    (lake / manifest_key("page")).parent.mkdir(parents=True)
    (lake / manifest_key("page")).write_bytes(manifest.to_json())
    assert [t.rows for t in list_tables(lake)] == [50]


def test_a_lake_of_several_roots_reads_each_table_from_its_sinks_root(tmp_path: Path) -> None:
    main, other = tmp_path / "lake", tmp_path / "elsewhere"
    write(main / "page" / "dt=2026-11-29" / "hour=08" / "old.parquet", 1)
    write(main / "playback" / "dt=2026-11-29" / "hour=08" / "a.parquet", 2)
    write(other / "page" / "dt=2026-11-29" / "hour=08" / "new.parquet", 5)
    write(other / "clicks" / "dt=2026-11-29" / "hour=08" / "c.parquet", 6)
    elsewhere = LocalDestination(other)
    lake = Lake((LocalDestination(main), elsewhere), homes={"page": elsewhere})

    tables = {t.name: t for t in list_tables(lake)}

    assert {name: t.rows for name, t in tables.items()} == {"clicks": 6, "page": 5, "playback": 2}
    assert tables["page"].destination is elsewhere


def test_files_of_another_layout_are_left_out_and_reported(lake: Path) -> None:
    write(lake / "page" / "dt=2026-11-29" / "hour=08" / "a.parquet", 2)
    write(lake / "page" / "dt=2026-11-29" / "hour=09" / "b.parquet", 2)
    other = write(lake / "page" / "device=tv" / "dt=2026-11-29" / "hour=08" / "c.parquet", 5)

    (table,) = list_tables(lake)

    assert (table.rows, table.files, table.layout) == (4, 2, ("dt", "hour"))
    (problem,) = table.problems
    assert problem.path == other and "dt=/hour=" in problem.reason

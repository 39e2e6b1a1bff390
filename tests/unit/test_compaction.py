"""Unit tests of sinks.compaction with a fixed clock, on a local lake and on S3, and of
the query engine reading the manifest (the atomic switch)."""

# ruff: noqa: F811  (test parameters name the fixtures imported from sinks.testing)
from __future__ import annotations

import io
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from queries.engine import QueryEngine
from sinks.compaction import compact
from sinks.destinations import Destination, LocalDestination
from sinks.manifest import live_files, load_manifest
from sinks.parquet import parquet_bytes
from sinks.paths import data_file_name
from sinks.progress import PlannedFile, ProgressStore
from sinks.testing import dest, s3  # noqa: F401 (pytest fixtures, shared)

TOPIC = "ev"
FOLDER = "t/dt=2026-11-29/hour=08/"
MiB = 1024 * 1024


class Clock:
    """Wall-clock time (files carry real modification times) that moves only by hand."""

    def __init__(self) -> None:
        self.now = time.time() + 5.0

    def __call__(self) -> float:
        return self.now


def flush(
    store: ProgressStore, first: int, rows: int, folder: str = FOLDER, extra: bool = False
) -> None:
    """Commit one flush of ``rows`` rows (ids first..) through the real protocol."""
    last = first + rows - 1
    columns = {"id": list(range(first, last + 1))}
    if extra:
        columns["added"] = ["x"] * rows  # a later file adds a column
    data = parquet_bytes(pa.table(columns))
    key = folder + data_file_name(TOPIC, 0, first, last)
    store.commit_flush(TOPIC, 0, first, last, [PlannedFile(key, lambda: data)])


def ids(dest: Destination) -> list[int]:
    out: list[int] = []
    for info in live_files(dest, "t"):
        out += pq.read_table(io.BytesIO(dest.get(info.key))).column("id").to_pylist()
    return sorted(out)


def run(dest: Destination, store: ProgressStore, clock: Clock, **kw) -> object:
    options = {"target_bytes": 64 * MiB, "grace_seconds": 60.0, "min_age_seconds": 0.0}
    options.update(kw)
    return compact(dest, "t", [store], clock=clock, **options)


def test_compaction_merges_committed_files_and_retires_them_after_a_grace(
    dest: Destination,
) -> None:
    store, clock = ProgressStore(dest, "s"), Clock()
    for first in range(0, 30, 10):
        flush(store, first, 10, extra=first == 20)
    report = run(dest, store, clock)
    assert (report.merged_files, report.written_files, report.rows) == (3, 1, 30)
    assert ids(dest) == list(range(30))
    assert [i.key for i in live_files(dest, "t")] == report.outputs
    merged = pq.read_table(io.BytesIO(dest.get(report.outputs[0])))
    assert merged.column("added").null_count == 20  # union by name
    # Inputs stay (retired) for the grace period: running queries may still read them.
    assert len(dest.list("t/")) == 4
    clock.now += 59
    assert run(dest, store, clock).deleted_files == 0
    clock.now += 1
    assert run(dest, store, clock).deleted_files == 3
    assert [i.key for i in dest.list("t/")] == report.outputs
    clock.now += 60
    run(dest, store, clock)
    assert load_manifest(dest, "t").deleted == {}  # forgotten a grace after deletion
    assert ids(dest) == list(range(30))


def test_uncommitted_and_young_files_are_left_alone(dest: Destination) -> None:
    store, clock = ProgressStore(dest, "s"), Clock()
    flush(store, 0, 5)
    flush(store, 5, 5)
    # An interrupted flush: its file is in the folder but no state covers it.
    dest.put(FOLDER + data_file_name(TOPIC, 0, 10, 14), parquet_bytes(pa.table({"id": [99]})))
    report = run(dest, store, clock)
    assert (report.merged_files, report.skipped_uncommitted) == (2, 1)
    assert run(dest, store, clock, min_age_seconds=10**9).skipped_open == 1


def test_a_recompaction_merges_an_output_with_new_files(dest: Destination) -> None:
    store, clock = ProgressStore(dest, "s"), Clock()
    flush(store, 0, 5)
    flush(store, 5, 5)
    first = run(dest, store, clock).outputs
    flush(store, 10, 5)
    second = run(dest, store, clock)
    assert second.merged_files == 2 and second.outputs != first
    assert load_manifest(dest, "t").active == second.outputs
    assert ids(dest) == list(range(15))


def test_a_crash_before_the_manifest_leaves_an_invisible_orphan(dest: Destination) -> None:
    store, clock = ProgressStore(dest, "s"), Clock()
    flush(store, 0, 5)
    flush(store, 5, 5)
    dest.put(FOLDER + "compacted-orphan.parquet", parquet_bytes(pa.table({"id": [0]})))
    assert ids(dest) == list(range(10))  # not active: readers ignore it
    clock.now += 10**6  # orphans go once they are older than the grace
    run(dest, store, clock)
    assert FOLDER + "compacted-orphan.parquet" not in [i.key for i in dest.list("t/")]


def test_only_the_folders_asked_for_are_compacted(dest: Destination) -> None:
    store, clock = ProgressStore(dest, "s"), Clock()
    other = "t/dt=2026-11-29/hour=09/"
    flush(store, 0, 5)
    flush(store, 5, 5)
    flush(store, 10, 5, folder=other)
    flush(store, 15, 5, folder=other)
    report = run(dest, store, clock, folders=["dt=2026-11-29/hour=09"])
    assert report.outputs[0].startswith(other)


def test_the_query_engine_switches_files_with_the_manifest(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    dest = LocalDestination(lake)
    store, clock = ProgressStore(dest, "s"), Clock()
    for first in range(0, 40, 10):
        flush(store, first, 10)
    engine = QueryEngine(lake)
    count = "SELECT count(*), count(DISTINCT id), sum(hour) FROM t"
    assert engine.query(count).rows == [(40, 40, 320)]
    report = run(dest, store, clock)
    # Right after the switch: both the inputs and the output exist; the view uses one side.
    assert len(list((lake / FOLDER).iterdir())) == 5
    assert engine.query(count).rows == [(40, 40, 320)]
    clock.now += 60
    run(dest, store, clock)
    assert engine.query(count).rows == [(40, 40, 320)]
    assert [p.name for p in (lake / FOLDER).iterdir()] == [report.outputs[0].rsplit("/", 1)[1]]

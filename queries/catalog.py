"""The lake's catalog (Glue Data Catalog): which tables exist, their files and partitions.

A table is a folder under the lake root holding at least one Parquet file in the Hive
layout ``<table>/dt=YYYY-MM-DD/hour=HH/<file>.parquet``. The catalog is read from the
filesystem alone: row counts come from Parquet footers (no data is scanned), bytes from
file sizes. Sinks write files under a name starting with ``.`` and rename them when
complete, so dot-files (and dot-folders) are in-flight and never counted; the sink's
bookkeeping (``_firelake``) and conversion errors (``_errors``) are not tables.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "RESERVED_FOLDERS",
    "DataFile",
    "FileProblem",
    "Partition",
    "TableInfo",
    "list_tables",
    "parse_partition",
    "table_info",
]

#: Folders of the lake root that are never tables.
RESERVED_FOLDERS = frozenset({"_firelake", "_errors"})

_DT_RE = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
_HOUR_RE = re.compile(r"^hour=(\d{1,2})$")


@dataclass(frozen=True, slots=True)
class DataFile:
    """One complete Parquet file of a table, with its partition (None outside the layout)."""

    path: Path
    rows: int
    bytes: int
    dt: str | None
    hour: int | None


@dataclass(frozen=True, slots=True)
class FileProblem:
    """A file the catalog could not use, and why (unreadable footer, outside the layout)."""

    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class Partition:
    """One ``dt=/hour=`` partition of a table and what it holds."""

    dt: str
    hour: int
    files: int
    rows: int
    bytes: int


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A lake table: its folder, totals, partitions (sorted) and complete files.

    ``files`` is the number of complete Parquet files; ``data_files`` lists them.
    """

    name: str
    path: Path
    files: int
    rows: int
    bytes: int
    partitions: tuple[Partition, ...]
    data_files: tuple[DataFile, ...]
    problems: tuple[FileProblem, ...] = ()


def parse_partition(relative: Path) -> tuple[str, int] | None:
    """(dt, hour) of a file path relative to its table folder, or None outside the layout.

    Deeper Hive folders after ``hour=`` (field partitions) are allowed.
    """
    parts = relative.parts
    if len(parts) < 3:
        return None
    dt_match, hour_match = _DT_RE.match(parts[0]), _HOUR_RE.match(parts[1])
    if dt_match is None or hour_match is None:
        return None
    hour = int(hour_match.group(1))
    if hour > 23:
        return None
    return dt_match.group(1), hour


def _parquet_files(folder: Path) -> Iterator[Path]:
    """Complete Parquet files under a folder, skipping dot-files and dot-folders, sorted."""
    for current, dirs, names in os.walk(folder):
        # Pruning in place keeps os.walk out of dot-folders; sorting makes the order stable.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.endswith(".parquet") and not name.startswith("."):
                yield Path(current) / name


def table_info(folder: Path) -> TableInfo | None:
    """The catalog entry of one table folder, or None when it holds no complete file."""
    files: list[DataFile] = []
    problems: list[FileProblem] = []
    for path in _parquet_files(folder):
        try:
            size = path.stat().st_size
            rows = pq.read_metadata(path).num_rows
        except FileNotFoundError:
            # Compaction or retention removed it between listing and reading: not a problem.
            continue
        except (OSError, pa.ArrowException) as exc:
            problems.append(FileProblem(path, f"unreadable Parquet footer: {exc}"))
            continue
        partition = parse_partition(path.relative_to(folder))
        if partition is None:
            problems.append(FileProblem(path, "outside the dt=YYYY-MM-DD/hour=HH layout"))
        dt, hour = partition if partition is not None else (None, None)
        files.append(DataFile(path, rows, size, dt, hour))
    if not files:
        return None
    totals: dict[tuple[str, int], list[int]] = {}
    for data_file in files:
        if data_file.dt is None or data_file.hour is None:
            continue
        entry = totals.setdefault((data_file.dt, data_file.hour), [0, 0, 0])
        entry[0] += 1
        entry[1] += data_file.rows
        entry[2] += data_file.bytes
    partitions = tuple(
        Partition(dt, hour, count, rows, size)
        for (dt, hour), (count, rows, size) in sorted(totals.items())
    )
    return TableInfo(
        name=folder.name,
        path=folder,
        files=len(files),
        rows=sum(f.rows for f in files),
        bytes=sum(f.bytes for f in files),
        partitions=partitions,
        data_files=tuple(files),
        problems=tuple(problems),
    )


def list_tables(lake_root: str | os.PathLike[str]) -> list[TableInfo]:
    """Every table of a lake, sorted by name; an absent lake root has no tables."""
    root = Path(lake_root)
    if not root.is_dir():
        return []
    tables = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name in RESERVED_FOLDERS or not entry.is_dir():
            continue
        info = table_info(entry)
        if info is not None:
            tables.append(info)
    return tables

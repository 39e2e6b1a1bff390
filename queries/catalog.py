"""The lake's catalog (Glue Data Catalog): which tables exist, their files and partitions.

A table is a folder under a lake root holding at least one Parquet file in the Hive
layout ``<table>/dt=YYYY-MM-DD/hour=HH/<file>.parquet``. A root is a local folder or an
S3 prefix (any ``sinks.destinations.Destination``); a configured lake (:class:`Lake`) is
the ``[lake]`` root plus every other root a sink writes to. The catalog is read from the
storage alone: row counts come from Parquet footers (no data is scanned), bytes from
object sizes. Sinks write files under a name starting with ``.`` and rename them when
complete, so dot-files (and dot-folders) are in-flight and never counted; the sink's
bookkeeping (``_firelake``) and conversion errors (``_errors``) are not tables.

Only *live* files count: a compacted table's manifest (``sinks.manifest``) retires the
files it merged — they stay on storage for a grace period, for queries already running —
and an output the manifest does not list yet is not in use; both are skipped, exactly as
the query engine skips them.
"""

from __future__ import annotations

import gzip
import os
import re
from collections import Counter
from collections.abc import Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from firelake.config import FirelakeConfig
from sinks.columns import read_columns
from sinks.destinations import (
    Destination,
    LocalDestination,
    ObjectInfo,
    destination_for,
    lake_destination,
    open_destination,
)
from sinks.manifest import live_table_files
from sinks.paths import ERRORS_DIR, STATE_DIR

__all__ = [
    "ARROW_HIVE_TYPES",
    "JSON_SUFFIXES",
    "RESERVED_FOLDERS",
    "DataFile",
    "FileProblem",
    "FooterCache",
    "Lake",
    "LakeRoot",
    "Partition",
    "TableInfo",
    "dominant_layout",
    "json_table_info",
    "list_tables",
    "live_table_files",
    "parse_partition",
    "partition_keys",
    "read_footers",
    "read_table",
    "root_destination",
    "table_info",
]

#: Folders of the lake root that are never tables.
RESERVED_FOLDERS = frozenset({STATE_DIR, ERRORS_DIR})
#: Arrow types of the Hive partition columns (any other partition key is a string): the
#: one declaration DuckDB's ``hive_types`` and Glue's partition key types derive from.
ARROW_HIVE_TYPES: dict[str, pa.DataType] = {"dt": pa.date32(), "hour": pa.int32()}
#: Footers read at once from S3 (each is a round trip; local reads are cheap either way).
FOOTER_READERS = 8

_DT_RE = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
_HOUR_RE = re.compile(r"^hour=(\d{1,2})$")
#: Why a file outside the Hive layout is not part of its table.
OUTSIDE_LAYOUT = "outside the dt=YYYY-MM-DD/hour=HH layout"

#: A lake root: a local folder, an ``s3://bucket/prefix`` URL (default S3 settings), or a
#: destination (which carries its S3 endpoint and credentials).
LakeRoot = str | os.PathLike[str] | Destination
#: Parquet footers already read, by (key, size, mtime): lake files are written once, so a
#: footer stays valid while the object does.
FooterCache = MutableMapping[tuple[str, int, float], pq.FileMetaData]


@dataclass(frozen=True, slots=True)
class DataFile:
    """One complete Parquet file of a table, with its partition (None outside the layout).

    ``path`` is a local ``Path``, or the ``s3://`` URI of an object.
    """

    path: Path | str
    rows: int
    bytes: int
    dt: str | None
    hour: int | None
    #: When the file was written (epoch seconds) and its columns (Arrow schema, no keys).
    mtime: float = 0.0
    schema: pa.Schema | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class FileProblem:
    """A file the catalog could not use, and why (unreadable footer, outside the layout)."""

    path: Path | str
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

    ``files`` is the number of complete live Parquet files; ``data_files`` lists them.
    ``path`` is a local folder or an ``s3://`` URI; ``destination`` is the root the table
    lives in (what readers open it through).
    """

    name: str
    path: Path | str
    files: int
    rows: int
    bytes: int
    partitions: tuple[Partition, ...]
    data_files: tuple[DataFile, ...]
    problems: tuple[FileProblem, ...] = ()
    destination: Destination | None = field(default=None, compare=False, repr=False)
    #: The Hive keys of the table's folders, outermost first (e.g. ``("dt", "hour")``).
    layout: tuple[str, ...] = ()
    #: ``parquet``, or ``json`` for raw JSON-lines tables (Firehose without format
    #: conversion; rows are counted from the lines).
    format: str = "parquet"
    #: A JSON table's declared columns (``sinks.columns``; FieldSpec), () when inferred.
    columns: tuple[Any, ...] = ()


def parse_partition(relative: Path | PurePosixPath) -> tuple[str, int] | None:
    """(dt, hour) of a file path relative to its table folder, or None outside the layout.

    The folders are Hive ``key=value`` pairs; ``dt=`` and ``hour=`` may stand anywhere
    among them, so field partitions may come before the time (a Firehose prefix such as
    ``product=!{partitionKeyFromQuery:product}/dt=…/hour=…/``) or after it.
    """
    folders = relative.parts[:-1]
    if any("=" not in part for part in folders):
        return None
    dt = next((m.group(1) for part in folders if (m := _DT_RE.match(part))), None)
    hour_text = next((m.group(1) for part in folders if (m := _HOUR_RE.match(part))), None)
    if dt is None or hour_text is None or int(hour_text) > 23:
        return None
    return dt, int(hour_text)


def partition_keys(relative: Path | PurePosixPath) -> tuple[str, ...]:
    """The Hive keys of a file path relative to its table folder, outermost first."""
    return tuple(part.partition("=")[0] for part in relative.parts[:-1])


def dominant_layout(layouts: Sequence[tuple[str, ...]]) -> tuple[tuple[str, ...], set[int]]:
    """The layout most files share (ties: the longer) and the indexes of those files.

    DuckDB's Hive reader refuses a table whose files disagree on their partition keys, so
    a table is read with one layout and files of any other are left out (and reported).
    """
    if not layouts:
        return (), set()
    counts = Counter(layouts)
    layout = max(counts, key=lambda keys: (counts[keys], len(keys), keys))
    return layout, {i for i, keys in enumerate(layouts) if keys == layout}


def root_destination(root: LakeRoot) -> Destination:
    """The destination of a lake root given as a folder, an s3:// URL or a destination."""
    if isinstance(root, (str, os.PathLike)):
        return open_destination(os.fspath(root))
    return root


def _location(destination: Destination, key: str) -> Path | str:
    """Where a user finds a key: a local Path (as the caller named the root), or a URI."""
    if isinstance(destination, LocalDestination):
        return destination.root / key
    return destination.uri(key)


def read_footers(
    destination: Destination, files: Sequence[ObjectInfo], cache: FooterCache | None = None
) -> list[pq.FileMetaData | BaseException]:
    """The Parquet footer of each file, or the error reading it, in order.

    Footers are read concurrently: on S3 each is a round trip. ``cache`` (when given) is
    consulted first and receives every footer read.
    """
    fs, base = destination.arrow_fs()
    cache = {} if cache is None else cache

    def read(info: ObjectInfo) -> pq.FileMetaData | BaseException:
        token = (info.key, info.size, info.mtime)
        if token in cache:
            return cache[token]
        try:
            metadata = pq.read_metadata(f"{base}/{info.key}", filesystem=fs)
        except (OSError, pa.ArrowException) as exc:
            return exc
        cache[token] = metadata
        return metadata

    if len(files) < 2 or isinstance(destination, LocalDestination):
        return [read(info) for info in files]
    with ThreadPoolExecutor(max_workers=FOOTER_READERS) as pool:
        return list(pool.map(read, files))


def table_info(
    destination: Destination, table: str, footers: FooterCache | None = None
) -> TableInfo | None:
    """The catalog entry of one table of a root, or None when it holds no complete file."""
    listing = live_table_files(destination, table)
    files: list[DataFile] = []
    layouts: list[tuple[str, ...]] = []
    problems: list[FileProblem] = []
    for info, metadata in zip(listing, read_footers(destination, listing, footers), strict=True):
        location = _location(destination, info.key)
        if isinstance(metadata, FileNotFoundError):
            # Compaction or retention removed it between listing and reading: not a problem.
            continue
        if isinstance(metadata, BaseException):
            problems.append(FileProblem(location, f"unreadable Parquet footer: {metadata}"))
            continue
        relative = PurePosixPath(info.key).relative_to(table)
        partition = parse_partition(relative)
        if partition is None:
            # A foreign file (say, written by hand): queries skip it, so totals do too.
            problems.append(FileProblem(location, f"{OUTSIDE_LAYOUT}; not read"))
            continue
        schema = metadata.schema.to_arrow_schema()
        files.append(
            DataFile(location, metadata.num_rows, info.size, *partition, info.mtime, schema)
        )
        layouts.append(partition_keys(relative))
    layout, files = _keep_dominant(files, layouts, problems)
    if not files:
        return None
    return _table_info(destination, table, files, problems, layout)


def _keep_dominant(
    files: Sequence[DataFile], layouts: Sequence[tuple[str, ...]], problems: list[FileProblem]
) -> tuple[tuple[str, ...], list[DataFile]]:
    """The table's layout and the files in it; each file outside it becomes a problem, so
    the totals that leave it out say why (queries skip it too)."""
    layout, kept = dominant_layout(layouts)
    for index, data_file in enumerate(files):
        if index not in kept:
            reason = f"partition folders differ from the table's {'=/'.join(layout)}=; not read"
            problems.append(FileProblem(data_file.path, reason))
    return layout, [data_file for index, data_file in enumerate(files) if index in kept]


def _table_info(
    destination: Destination,
    table: str,
    files: Sequence[DataFile],
    problems: Sequence[FileProblem],
    layout: tuple[str, ...],
    format: str = "parquet",
) -> TableInfo:
    """A table's entry from its files: totals and per-partition totals."""
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
        name=table,
        path=_location(destination, table),
        files=len(files),
        rows=sum(f.rows for f in files),
        bytes=sum(f.bytes for f in files),
        partitions=partitions,
        data_files=tuple(files),
        problems=tuple(problems),
        destination=destination,
        layout=layout,
        format=format,
    )


def table_names(destination: Destination) -> list[str]:
    """The candidate table folders of a root (one level listed), sorted; none if absent."""
    fs, base = destination.arrow_fs()
    selector = pafs.FileSelector(base, allow_not_found=True, recursive=False)
    return sorted(
        entry.base_name
        for entry in fs.get_file_info(selector)
        if entry.type == pafs.FileType.Directory
        and not entry.base_name.startswith(".")
        and entry.base_name not in RESERVED_FOLDERS
    )


def _root_id(destination: Destination) -> tuple[object, ...]:
    """What makes two destinations the same root (same place, reached the same way)."""
    return (type(destination).__name__, destination.url, getattr(destination, "settings", None))


@dataclass(frozen=True)
class Lake:
    """Where a lake's tables live: one or more roots, and the root of each sink's table.

    A table found in several roots is read from its sink's root (``homes``), else from the
    first root that has it.
    """

    roots: tuple[Destination, ...]
    homes: Mapping[str, Destination] = field(default_factory=dict)

    @classmethod
    def at(cls, root: LakeRoot) -> Lake:
        """A lake of one root."""
        return cls((root_destination(root),))

    @classmethod
    def of(cls, config: FirelakeConfig) -> Lake:
        """The configured lake: ``[lake] root`` and every sink's ``destination``."""
        main = lake_destination(config)
        roots: dict[tuple[object, ...], Destination] = {_root_id(main): main}
        homes: dict[str, Destination] = {}
        for sink in config.sinks.values():
            # Without a destination a sink writes to the lake root (local or S3).
            where = destination_for(config, sink) if sink.destination else main
            where = roots.setdefault(_root_id(where), where)
            # The first sink of a table decides, as for `firelake compact`.
            homes.setdefault(sink.table, where)
        return cls(tuple(roots.values()), homes)

    def describe(self) -> str:
        """The roots, for messages."""
        return ", ".join(root.url for root in self.roots)

    def locate(self) -> dict[str, Destination]:
        """Each table of the lake and the root it is read from, by name."""
        found: dict[str, Destination] = {}
        for root in self.roots:
            for name in table_names(root):
                found.setdefault(name, root)
        return {name: self.homes.get(name, root) for name, root in sorted(found.items())}


def read_table(
    destination: Destination, table: str, footers: FooterCache | None = None
) -> TableInfo | None:
    """One table of a root, Parquet or else raw JSON lines; None when it holds neither."""
    return table_info(destination, table, footers) or json_table_info(destination, table)


def list_tables(lake: LakeRoot | Lake, footers: FooterCache | None = None) -> list[TableInfo]:
    """Every table of a lake, sorted by name; an absent lake root has no tables."""
    located = (lake if isinstance(lake, Lake) else Lake.at(lake)).locate()
    tables = []
    for name, destination in located.items():
        info = read_table(destination, name, footers)
        if info is not None:
            tables.append(info)
    return tables


#: Endings of raw JSON-lines data files (Firehose writes ``.gz`` without conversion).
JSON_SUFFIXES = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz", ".gz")
#: Line counts of JSON files already read, by (key, size, mtime): files are written once.
_JSON_LINES: dict[tuple[str, str, int, float], int] = {}


def _json_lines(destination: Destination, info: ObjectInfo) -> int | None:
    """Rows of one JSON-lines file (cached), or None when it cannot be read."""
    token = (destination.url, info.key, info.size, info.mtime)
    if token not in _JSON_LINES:
        data = destination.get(info.key)
        if data is None:
            return None
        if info.key.endswith(".gz"):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):
                return None
        if len(_JSON_LINES) > 100_000:
            _JSON_LINES.clear()
        _JSON_LINES[token] = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return _JSON_LINES[token]


def json_table_info(destination: Destination, table: str) -> TableInfo | None:
    """A raw JSON-lines table (no Parquet file): its files in the Hive layout, rows counted
    from the lines; None when the folder holds no such file."""
    listing = [
        info
        for info in destination.list(f"{table}/")
        if info.key.endswith(JSON_SUFFIXES)
        and not any(part.startswith(".") for part in info.key.split("/"))
    ]
    files: list[DataFile] = []
    layouts: list[tuple[str, ...]] = []
    problems: list[FileProblem] = []
    for info in listing:
        location = _location(destination, info.key)
        relative = PurePosixPath(info.key).relative_to(table)
        partition = parse_partition(relative)
        if partition is None:
            problems.append(FileProblem(location, f"{OUTSIDE_LAYOUT}; not read"))
            continue
        rows = _json_lines(destination, info)
        if rows is None:
            problems.append(FileProblem(location, "unreadable JSON-lines file"))
            continue
        files.append(DataFile(location, rows, info.size, *partition, info.mtime))
        layouts.append(partition_keys(relative))
    layout, files = _keep_dominant(files, layouts, problems)
    if not files:
        return None
    info = _table_info(destination, table, files, problems, layout, "json")
    return replace(info, columns=read_columns(destination, table) or ())

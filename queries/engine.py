"""SQL over the lake (Athena): an in-process DuckDB with one view per lake table.

Each table becomes a view over ``read_parquet('<root>/<table>/**/[!.]*.parquet',
hive_partitioning = true, union_by_name = true, hive_types = {'dt': DATE, 'hour': INTEGER})``:

- The glob is expanded again at every query, so files a sink adds show up at once;
  :meth:`QueryEngine.refresh` is needed only for new or removed tables. ``[!.]`` skips the
  sinks' in-flight ``.``-files, which may be half written.
- ``dt`` is a DATE and ``hour`` an INTEGER, so ``WHERE dt = '2026-11-29' AND hour = 8``
  and ``WHERE dt >= current_date - 7`` compare as dates and numbers and prune files
  (partition pruning) before any data is read.
- ``union_by_name`` lets newer files add columns: older rows read NULL there.
- Compaction (``sinks.compaction``) switches a table's files atomically with a manifest
  (``_firelake/tables/<table>/manifest.json``): a ``compacted-*`` file counts only while
  the manifest lists it active, a retired file never. Before every query the engine reads
  a compacted table's manifest, *then* lists its live files and re-creates the view over
  exactly those — which is what makes the switch atomic for readers (see
  ``sinks.compaction``); tables never compacted keep the glob.

Tables on S3 (a ``[lake] root`` or a sink ``destination`` of ``s3://bucket/prefix``) cannot
use ``read_parquet``: the duckdb wheel ships without ``httpfs`` and the machines cannot
fetch it. They are read through pyarrow's S3 filesystem instead: the table's live files
(``sinks.manifest.live_table_files``: manifest first, then the listing) become a
``pyarrow.dataset`` with the same Hive columns (``dt`` DATE, ``hour`` INTEGER, other keys
VARCHAR) and a schema unified by name, registered in DuckDB under the table's name; DuckDB
pushes projections and filters (so partition pruning) into the dataset's scan. Before each
query, the S3 tables it names are listed again and re-registered when the listing changed
(footers of files already seen are cached: lake files are written once). DuckDB's
profiler sees no bytes of an Arrow scan, so the datasets' reads are logged and turned into
the same measure (compressed column chunks read) by :mod:`queries.scanned`: an S3 lake and
a local one report the same bytes for the same query.

Every query is profiled so the result carries the bytes it scanned (compressed Parquet
column chunks read, Athena's billing measure) and their price at $5/TB. By default the
connection is sandboxed: user SQL can read the lake and nothing else on the machine, and
cannot install or load extensions (the machines have no route to the extension repository
anyway) or change settings.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any
from uuid import UUID

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from firelake.config import FirelakeConfig
from queries.catalog import (
    ARROW_HIVE_TYPES,
    JSON_SUFFIXES,
    FooterCache,
    Lake,
    LakeRoot,
    TableInfo,
    list_tables,
    live_table_files,
    partition_keys,
    read_footers,
)
from queries.json_tables import columns_option, json_dataset
from queries.open_windows import OpenWindow, sync_open_window_views
from queries.sandbox import (
    REASONS,
    CheckedStatement,
    Deadline,
    SandboxLimits,
    SandboxViolation,
    check_sql,
    connection_settings,
    identifier,
    lock_settings,
    query_limits,
    sql_string,
    violation_from_error,
)
from queries.scanned import SCAN_OPTIONS, ReadLog
from sinks.destinations import Destination, LocalDestination, ObjectInfo
from sinks.paths import COMPACTED_PREFIX, manifest_key

__all__ = [
    "ATHENA_MINIMUM_BYTES",
    "HIVE_TYPES",
    "PRICE_PER_TB_USD",
    "QueryEngine",
    "QueryError",
    "QueryResult",
    "arrow_dataset",
    "error_position",
    "format_csv",
    "format_json",
    "format_table",
    "json_rows",
    "json_value",
]

#: DuckDB's names of the Arrow types partition columns have.
_DUCKDB_TYPES = {pa.date32(): "DATE", pa.int32(): "INTEGER"}
#: Types of the Hive partition columns every lake table has, as DuckDB's ``hive_types``.
HIVE_TYPES = (
    "{" + ", ".join(f"'{k}': {_DUCKDB_TYPES[t]}" for k, t in ARROW_HIVE_TYPES.items()) + "}"
)
#: Athena's price per terabyte scanned.
PRICE_PER_TB_USD = 5.0
#: Athena bills at least this many bytes per query.
ATHENA_MINIMUM_BYTES = 10_000_000


_LINE_RE = re.compile(r"^LINE (\d+): (.*)$")


class QueryError(Exception):
    """A query DuckDB or the sandbox refused, or could not run.

    ``message`` is DuckDB's own (with its ``LINE n:`` excerpt and caret) or the sandbox's;
    ``kind`` the error class (``ParserException``, ``BinderException``,
    ``SandboxViolation`` …); ``reason`` the sandbox's named reason; ``position`` the
    1-based ``(line, column)`` in the SQL when known.
    """

    def __init__(
        self,
        message: str,
        sql: str,
        kind: str = "Error",
        reason: str | None = None,
        position: tuple[int, int] | None = None,
    ) -> None:
        self.message = message
        self.sql = sql
        self.kind = kind
        self.reason = reason
        self.position = position
        super().__init__(message)

    @classmethod
    def from_violation(cls, violation: SandboxViolation, sql: str) -> QueryError:
        """A sandbox refusal, positioned at what was refused."""
        position = None
        if violation.position is not None:
            before = sql[: violation.position]
            position = (before.count("\n") + 1, violation.position - before.rfind("\n"))
        message = f"refused by the sandbox ({violation.reason}): {violation.detail}"
        message += f" — {REASONS[violation.reason]}"
        return cls(message, sql, "SandboxViolation", violation.reason, position)

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON data (the HTTP API's error body)."""
        line, column = self.position if self.position is not None else (None, None)
        return {
            "kind": self.kind,
            "reason": self.reason,
            "message": self.message,
            "line": line,
            "column": column,
        }


def error_position(message: str, statement: str, offset: int, sql: str) -> tuple[int, int] | None:
    """(line, column) in ``sql`` of DuckDB's caret under its ``LINE n:`` excerpt.

    DuckDB numbers lines within the statement it ran (``statement``, which starts at
    ``offset`` in ``sql``); its excerpt may be shortened with ``...`` around long lines,
    in which case the column is found by searching the excerpt in the statement's line.
    """
    lines = message.splitlines()
    for i, text in enumerate(lines[:-1]):
        match = _LINE_RE.match(text)
        if not match or "^" not in lines[i + 1]:
            continue
        line_in_statement = int(match.group(1))
        excerpt = match.group(2)
        caret = lines[i + 1].index("^") - (len(text) - len(excerpt))
        source_lines = statement.split("\n")
        if not 1 <= line_in_statement <= len(source_lines):
            return None
        source = source_lines[line_in_statement - 1]
        shown = excerpt.removeprefix("...").removesuffix("...")
        shift = len(excerpt) - len(excerpt.removeprefix("..."))
        found = source.find(shown) if shown else 0
        column = (found if found >= 0 else 0) + caret - shift
        line = sql[:offset].count("\n") + line_in_statement
        if line_in_statement == 1:
            column += offset - (sql.rfind("\n", 0, offset) + 1)
        return line, max(column, 0) + 1
    return None


@dataclass(frozen=True)
class QueryResult:
    """The rows of a query as Python values, how long it took and what it scanned.

    ``truncated`` says rows stopped at the row limit; ``bytes_scanned`` is what DuckDB's
    profiler counted for local files plus the bytes read from S3 (None only in a result
    built by hand).
    """

    sql: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    elapsed: float
    bytes_scanned: int | None
    truncated: bool = False
    files_read: int | None = None
    arrow: pa.Table | None = field(default=None, repr=False, compare=False)

    @property
    def cost_usd(self) -> float:
        """What Athena would charge for the bytes scanned (no 10 MB minimum applied)."""
        return (self.bytes_scanned or 0) / 1e12 * PRICE_PER_TB_USD

    @property
    def row_count(self) -> int:
        """Rows returned (Python rows or the Arrow table)."""
        return self.arrow.num_rows if self.arrow is not None else len(self.rows)

    @property
    def billed_usd(self) -> float:
        """Athena's price for the query: $5/TB with its 10 MB minimum per query."""
        return max(self.bytes_scanned or 0, ATHENA_MINIMUM_BYTES) / 1e12 * PRICE_PER_TB_USD


def _glob_escape(text: str) -> str:
    """A path part matched literally by DuckDB's glob."""
    return "".join(f"[{c}]" if c in "*?[]{}" else c for c in text)


def _partition_schema(table: str, files: Iterable[ObjectInfo]) -> pa.Schema:
    """The Hive keys of a table's file paths, in order of first appearance, typed."""
    keys: dict[str, None] = {}
    for info in files:
        for part in info.key.split("/")[1:-1]:
            name, sep, _ = part.partition("=")
            if sep and name:
                keys.setdefault(name, None)
    return pa.schema([(k, ARROW_HIVE_TYPES.get(k, pa.string())) for k in keys])


def arrow_dataset(
    destination: Destination,
    table: str,
    files: Sequence[ObjectInfo],
    footers: FooterCache | None = None,
    previous: pa.Schema | None = None,
    reads: ReadLog | None = None,
) -> ds.FileSystemDataset:
    """A pyarrow dataset over exactly ``files`` of a table, like the local views' reader.

    Columns are the files' columns unified by name (a column missing from older files
    reads null, types widen), then the Hive keys. Fragments are built from the listing
    with their partition values and sizes, so no request is made until a scan, and a scan
    skips the fragments a pushed-down partition filter excludes. With no files the schema
    is ``previous`` (a table whose files all went reads as empty, not as missing). With
    ``reads``, the dataset's reads are logged there, to measure bytes scanned
    (:mod:`queries.scanned`).
    """
    fs, base = destination.arrow_fs()
    if reads is not None:
        fs = reads.filesystem(fs)
    partition_schema = _partition_schema(table, files)
    schemas: list[pa.Schema] = []
    kept: list[ObjectInfo] = []
    for info, footer in zip(files, read_footers(destination, files, footers), strict=True):
        if isinstance(footer, FileNotFoundError):
            continue  # removed since the listing (retention): not part of the table now
        if isinstance(footer, BaseException):
            raise footer
        schemas.append(footer.schema.to_arrow_schema())
        kept.append(info)
    if not kept and previous is not None:
        schema = previous
    else:
        # Hive keys go last, where read_parquet puts them.
        schema = pa.unify_schemas([*schemas, partition_schema], promote_options="permissive")
    parquet = (
        ds.ParquetFileFormat(default_fragment_scan_options=SCAN_OPTIONS)
        if reads is not None
        else ds.ParquetFileFormat()
    )
    partitioning = ds.HivePartitioning(partition_schema)
    fragments = [
        parquet.make_fragment(
            f"{base}/{info.key}",
            filesystem=fs,
            partition_expression=partitioning.parse("/" + info.key[len(table) + 1 :]),
            file_size=info.size,
        )
        for info in kept
    ]
    return ds.FileSystemDataset(fragments, schema=schema, format=parquet, filesystem=fs)


@dataclass
class _RemoteTable:
    """An S3 table registered as an Arrow dataset, and the listing it was built from."""

    destination: Destination
    listing: tuple[tuple[str, int, float], ...] | None = None
    schema: pa.Schema | None = None
    footers: dict[tuple[str, int, float], pq.FileMetaData] = field(default_factory=dict)
    #: Footer and size of each file by the path its dataset reads it at.
    measured: dict[str, tuple[pq.FileMetaData, int]] = field(default_factory=dict)
    #: A JSON-lines table: loaded at a catalog refresh whose files (or declared columns)
    #: changed, not re-listed per query.
    json: bool = False
    #: A JSON table's declared columns when it was loaded (with ``listing``, its token).
    columns: tuple[Any, ...] = ()


class QueryEngine:
    """DuckDB over one lake: a view per table, queries profiled, one query at a time.

    ``lake`` is a lake root (a folder, an ``s3://`` URL, a destination) or a
    :class:`~queries.catalog.Lake` (several roots: ``Lake.of(config)``). One connection
    serves every query, guarded by a lock (DuckDB still runs each query on ``threads``
    threads); create several engines for concurrent queries. ``sandbox`` (the default)
    applies :mod:`queries.sandbox`: user SQL reads the lake and nothing else, changes
    nothing that outlives the query (each query runs in a transaction that is rolled
    back), and runs within ``limits`` (time, memory, rows, bytes scanned). S3 tables are
    read by pyarrow, outside DuckDB's file access. ``views`` are saved views (name to
    SELECT, :mod:`queries.saved`) every query sees.
    """

    def __init__(
        self,
        lake: LakeRoot | Lake,
        threads: int = 2,
        max_rows: int | None = None,
        sandbox: bool = True,
        limits: SandboxLimits | None = None,
        views: Mapping[str, str] | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if max_rows is not None and max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.limits = limits or SandboxLimits()
        if max_rows is not None:
            self.limits = replace(self.limits, max_rows=max_rows)
        self.sandbox = sandbox
        self.lake = lake if isinstance(lake, Lake) else Lake.at(lake)
        local_roots = [
            Path(root.root).resolve()
            for root in self.lake.roots
            if isinstance(root, LocalDestination)
        ]
        self.local_roots = tuple(local_roots)
        self.remote_roots = tuple(
            root.url for root in self.lake.roots if not isinstance(root, LocalDestination)
        )
        #: The first root when it is a local folder (the usual lake), else None.
        self.lake_root: Path | None = (
            local_roots[0] if isinstance(self.lake.roots[0], LocalDestination) else None
        )
        self._lock = threading.Lock()
        self._tables: dict[str, TableInfo] = {}
        self._views: set[str] = set()
        #: The local root of each local table (views read it with read_parquet).
        self._roots: dict[str, Path] = {}
        #: The Hive keys of each local table's folders (its view's glob follows them).
        self._layouts: dict[str, tuple[str, ...]] = {}
        #: Tables on S3, registered as Arrow datasets, by name.
        self._remote: dict[str, _RemoteTable] = {}
        #: Reads of those datasets (their bytes scanned: DuckDB's profiler sees none).
        self._reads = ReadLog()
        #: Parquet footers of the lake's files, kept across refreshes.
        self._footers: FooterCache = {}
        #: Tables whose view lists its files (compacted tables), by name.
        self._listed: dict[str, bool] = {}
        #: Tables whose view could not be created this refresh, with DuckDB's reason.
        self.view_errors: dict[str, str] = {}
        #: Saved views (name -> SELECT), created over the tables at every refresh.
        self.saved_views: dict[str, str] = dict(views or {})
        #: Window agents' open windows (``<window>_open`` views), by view name.
        self._open_windows: dict[str, OpenWindow] = {}
        self._conn = duckdb.connect(
            ":memory:",
            config={
                "threads": threads,
                # Never reach for the extension repository: only what ships in the wheel.
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            },
        )
        setup = [
            # TIMESTAMPTZ values come back as UTC datetimes whatever the machine's zone.
            "SET TimeZone = 'UTC'",
            # Lake files never change in place (written once, renamed in), so footers can
            # be cached: union_by_name re-reads every footer at each query otherwise.
            "SET parquet_metadata_cache = true",
            "SET enable_profiling = 'no_output'",
            "SET profiling_coverage = 'ALL'",
            # Only what a result reports (bytes scanned, files read): collecting every
            # metric costs ~20 % on queries with many result rows.
            "SET tracked_metrics = ['query.total_bytes_scanned', 'operator.extra_info', "
            "'operator.bytes_scanned']",
        ]
        if sandbox:
            setup += connection_settings(local_roots, self.limits)
        for statement in setup:
            self._conn.execute(statement)
        #: Names the tables a statement reads (to re-list only those on S3); it holds no
        #: tables and may touch no files.
        self._parser = duckdb.connect(":memory:", config={"enable_external_access": False})
        self.refresh()
        if sandbox:
            # Last: user SQL must not undo the sandbox (views need no settings change).
            self._conn.execute(lock_settings())

    @classmethod
    def for_config(
        cls, config: FirelakeConfig, views: Mapping[str, str] | None = None
    ) -> QueryEngine:
        """The sandboxed engine of a configuration: every lake root, the ``[query]``
        limits and threads, and the given saved views."""
        return cls(
            Lake.of(config),
            threads=config.query.threads,
            limits=query_limits(config.query),
            views=views,
        )

    @property
    def max_rows(self) -> int:
        """Most rows a query returns unless the call asks otherwise."""
        return self.limits.max_rows

    # ------------------------------------------------------------------ catalog

    @property
    def tables(self) -> dict[str, TableInfo]:
        """The catalog as of the last refresh, by table name."""
        return dict(self._tables)

    def _root(self, table: str) -> Path:
        """The local root a local table is read from."""
        root = self._roots.get(table, self.lake_root)
        if root is None:
            raise KeyError(f"{table!r} is not a local table")
        return root

    def _has_manifest(self, table: str) -> bool:
        """Whether a local table has a compaction manifest (has ever been compacted)."""
        return (self._root(table) / manifest_key(table)).exists()

    def live_files(self, table: str) -> list[str]:
        """The files of a compacted table a query may open: manifest read, *then* listed."""
        destination = LocalDestination(self._root(table))
        return [str(destination.path(info.key)) for info in self._layout_files(destination, table)]

    def _layout_files(self, destination: Destination, table: str) -> list[ObjectInfo]:
        """A table's live files in its layout (the catalog reports the others)."""
        layout = self._layouts.get(table)
        return [
            info
            for info in live_table_files(destination, table)
            if layout is None
            or partition_keys(PurePosixPath(info.key).relative_to(table)) == layout
        ]

    def view_sql(self, table: str, files: Sequence[str] | None = None) -> str:
        """The SELECT behind a table's view: a glob, or the given files of a compacted table.

        ``union_by_name`` opens every file's footer when the query binds, so a compacted
        table lists its live files itself: a retired file is never opened, and one being
        deleted after its grace cannot fail a query that still globbed it.
        """
        if files:
            source = "[" + ", ".join(sql_string(f) for f in files) + "]"
            where = ""
        else:
            # Only folders of the table's layout: a foreign file (say, one copied into the
            # table folder by hand) would make DuckDB's Hive reader refuse the whole table.
            keys = self._layouts.get(table) or ("dt", "hour")
            folders = "".join(f"{_glob_escape(key)}=*/" for key in keys)
            source = sql_string(f"{self._root(table)}/{table}/{folders}[!.]*.parquet")
            # No manifest yet: an output of a compaction killed before its switch is unused.
            where = f" WHERE NOT contains(filename, {sql_string('/' + COMPACTED_PREFIX)})"
        return (
            f"SELECT * EXCLUDE (filename) FROM read_parquet({source}, hive_partitioning = true, "
            f"union_by_name = true, hive_types = {HIVE_TYPES}, filename = true){where}"
        )

    def _create_view(self, table: str) -> None:
        # Call with the lock held. The manifest is read first, then the files are listed.
        compacted = self._has_manifest(table)
        files = self.live_files(table) if compacted else None
        self._conn.execute(
            f"CREATE OR REPLACE VIEW {identifier(table)} AS " + self.view_sql(table, files)
        )
        self._listed[table] = compacted

    def _create_json_view(self, info: TableInfo) -> None:
        """A raw JSON-lines table (Firehose without format conversion) as a view over
        DuckDB's ``read_json``: columns inferred, unified by name, Hive keys typed, gzip
        by file name. Call with the lock held."""
        destination = info.destination
        if destination is not None and not isinstance(destination, LocalDestination):
            self._register_json_remote(info, destination)
            return
        if info.name in self._remote:
            self._drop(info.name)
        assert isinstance(destination, LocalDestination)
        root = Path(destination.root).resolve()
        self._roots[info.name] = root
        folders = "".join(f"{_glob_escape(key)}=*/" for key in info.layout)
        # Each file's longest ending (".json.gz" rather than ".gz"); an ending that another
        # one ends with already matches those files too (".gz" covers ".json.gz").
        longest = {
            max((e for e in JSON_SUFFIXES if str(f.path).endswith(e)), key=len)
            for f in info.data_files
        }
        endings = sorted(e for e in longest if not any(o != e and e.endswith(o) for o in longest))
        globs = ", ".join(
            sql_string(f"{root}/{info.name}/{folders}[!.]*{ending}") for ending in endings
        )
        self._conn.execute(
            f"CREATE OR REPLACE VIEW {identifier(info.name)} AS SELECT * FROM read_json("
            f"[{globs}], format = 'newline_delimited', compression = 'auto', "
            f"hive_partitioning = true, union_by_name = true, hive_types = {HIVE_TYPES}"
            + (f", columns = {columns_option(info.columns)})" if info.columns else ")")
        )
        self._views.add(info.name)
        self._listed[info.name] = False

    def _register_json_remote(self, info: TableInfo, destination: Destination) -> None:
        """A JSON-lines table on S3, read through a pyarrow dataset over the catalog's files
        (call with the lock held).

        The table is read into memory here, at the refresh: pyarrow's JSON scanner opens
        its files while holding the GIL when DuckDB scans the dataset lazily, which
        deadlocks against a Python S3 endpoint (moto) and the read log's Python
        filesystem. So its queries report no bytes scanned for it, and new files show at
        the next refresh; an unchanged table (same files, same columns) is not read again."""
        listing = tuple(sorted((str(f.path), f.bytes, f.mtime) for f in info.data_files))
        loaded = self._remote.get(info.name)
        if (
            loaded is not None
            and loaded.json
            and loaded.destination is destination
            and loaded.listing == listing
            and loaded.columns == tuple(info.columns)
        ):
            return
        if info.name in self._views:
            self._drop(info.name)
        prefix = destination.uri(info.name)[: -len(info.name)]
        keys = [(str(f.path)[len(prefix) :], f.bytes) for f in info.data_files]
        objects = [ObjectInfo(key, size, 0.0) for key, size in keys]
        dataset = json_dataset(
            destination,
            info.name,
            keys,
            _partition_schema(info.name, objects),
            info.columns or None,
        )
        self._conn.register(info.name, dataset.to_table())
        self._remote[info.name] = _RemoteTable(
            destination,
            listing=listing,
            schema=dataset.schema,
            json=True,
            columns=tuple(info.columns),
        )

    def _register_remote(self, table: str) -> None:
        """List an S3 table (manifest first) and re-register it if the listing changed.

        Call with the lock held. Unchanged listings cost the two requests of the listing
        and nothing else; a changed one reads only the footers of files not seen before.
        """
        state = self._remote[table]
        if state.json:
            return  # re-registered by the catalog refresh
        files = self._layout_files(state.destination, table)
        listing = tuple((f.key, f.size, f.mtime) for f in files)
        if listing == state.listing:
            return
        # Keep only footers of files still live: a long-running engine must not grow.
        live = set(listing)
        state.footers = {t: m for t, m in state.footers.items() if t in live}
        dataset = arrow_dataset(
            state.destination, table, files, state.footers, state.schema, self._reads
        )
        self._conn.register(table, dataset)
        state.listing, state.schema = listing, dataset.schema
        # What the read log needs to turn this table's reads into bytes scanned.
        _, base = state.destination.arrow_fs()
        state.measured = {
            f"{base}/{info.key}": (state.footers[(info.key, info.size, info.mtime)], info.size)
            for info in files
            if (info.key, info.size, info.mtime) in state.footers
        }

    def _drop(self, table: str) -> None:
        """Remove a table's view or registration (call with the lock held)."""
        if table in self._remote:
            del self._remote[table]
            self._conn.unregister(table)
        if table in self._views:
            self._views.discard(table)
            self._conn.execute(f"DROP VIEW IF EXISTS {identifier(table)}")
        self._roots.pop(table, None)
        self._listed.pop(table, None)

    def _sync_manifests(self) -> None:
        """Before a query: re-list compacted tables (call with the lock held).

        A table never compacted keeps its glob view; once it has a manifest its view is
        rebuilt from the manifest and a fresh listing at every query.
        """
        for table in sorted(self._views):
            if self._listed.get(table) or self._has_manifest(table):
                self._create_view(table)

    def _remote_tables_of(self, sql: str) -> list[str]:
        """The S3 tables a statement may read (all of them when that cannot be told)."""
        if not self._remote:
            return []
        try:
            # An empty connection: the query's own connection would expand the views and
            # registered datasets and name none of them.
            names = self._parser.get_table_names(sql, qualified=False)
        except duckdb.Error:
            # Not parsed, or it binds a table function the parser may not run: be safe.
            return sorted(self._remote)
        if names - set(self._tables):
            # A name that is no lake table may be the user's own view over S3 tables.
            return sorted(self._remote)
        return sorted(names & set(self._remote))

    def refresh(self) -> list[TableInfo]:
        """Re-scan the lake: create views for new tables, drop views of vanished ones.

        A table whose view cannot be created (say, a corrupt file) is left out and named
        in :attr:`view_errors`; the other tables stay queryable.
        """
        # Lake files are written once: footers read by earlier refreshes stay valid (keyed
        # by key, size and mtime), so a refresh reads only the footers of new files.
        footers = self._footers
        tables = list_tables(self.lake, footers)
        live = {
            str(PurePosixPath(str(f.path)).relative_to(PurePosixPath(str(info.path)).parent))
            for info in tables
            for f in info.data_files
        }
        for token in [t for t in footers if t[0] not in live]:
            del footers[token]  # gone files: the cache never grows past the lake
        with self._lock:
            errors: dict[str, str] = {}
            current = {info.name: info.destination for info in tables}
            for name in sorted((self._views | set(self._remote)) - set(current)):
                self._drop(name)
                self._layouts.pop(name, None)
            for info in tables:
                destination = info.destination
                self._layouts[info.name] = info.layout
                try:
                    if info.format == "json":
                        self._create_json_view(info)
                        continue
                    if destination is not None and not isinstance(destination, LocalDestination):
                        state = self._remote.get(info.name)
                        if state is None or state.destination is not destination:
                            # New, or moved to another root: nothing of the old one applies.
                            self._drop(info.name)
                            state = self._remote[info.name] = _RemoteTable(destination)
                        # The catalog just read these footers: the dataset reuses them.
                        prefix = info.name + "/"
                        state.footers.update(
                            (t, m) for t, m in footers.items() if t[0].startswith(prefix)
                        )
                        self._register_remote(info.name)
                    else:
                        if info.name in self._remote:
                            self._drop(info.name)
                        if isinstance(destination, LocalDestination):
                            self._roots[info.name] = Path(destination.root).resolve()
                        self._create_view(info.name)
                        self._views.add(info.name)
                except (duckdb.Error, OSError, ValueError, pa.ArrowException) as exc:
                    errors[info.name] = str(exc)
                    self._drop(info.name)
            self._tables = {info.name: info for info in tables if info.name not in errors}
            self._open_windows = sync_open_window_views(
                self._conn, self.lake.roots, current, self._open_windows, errors
            )
            self._create_saved_views(errors)
            self.view_errors = errors
        return tables

    def _create_saved_views(self, errors: dict[str, str]) -> None:
        """(Re-)create the saved views over the current tables (call with the lock held).

        A view's SQL passes the sandbox like a query's; one that names a missing table or
        a lake table's name is left out, with the reason in ``errors``.
        """
        for name, sql in self.saved_views.items():
            if name in self._tables or name in self._remote:
                errors[name] = f"saved view {name!r}: a lake table has that name"
                continue
            try:
                (statement,) = check_sql(
                    sql, self.local_roots, self.remote_roots, enforce=self.sandbox
                )
                if statement.type != duckdb.StatementType.SELECT:
                    raise QueryError(f"a view is a SELECT, not {statement.type.name}", sql)
                body = statement.sql.strip().rstrip(";")
                self._conn.execute(f"CREATE OR REPLACE VIEW {identifier(name)} AS {body}")
            except (SandboxViolation, QueryError, ValueError, duckdb.Error) as exc:
                errors[name] = f"saved view {name!r}: {exc}"
                self._conn.execute(f"DROP VIEW IF EXISTS {identifier(name)}")

    # ------------------------------------------------------------------ queries

    def statements(self, sql: str) -> list[CheckedStatement]:
        """The statements of SQL, each checked by the sandbox when it is on.

        Raises :class:`QueryError` (a sandbox refusal with its reason, or DuckDB's parser
        error with its position).
        """
        try:
            return check_sql(sql, self.local_roots, self.remote_roots, enforce=self.sandbox)
        except SandboxViolation as violation:
            raise QueryError.from_violation(violation, sql) from None
        except duckdb.Error as exc:
            message = str(exc)
            raise QueryError(
                message, sql, type(exc).__name__, position=error_position(message, sql, 0, sql)
            ) from None

    def query(
        self,
        sql: str,
        max_rows: int | None = None,
        params: Mapping[str, Any] | None = None,
        arrow: bool = False,
    ) -> QueryResult:
        """Run SQL and return at most ``max_rows`` rows; :class:`QueryError` if it fails.

        SQL may hold several statements (the last one's rows are the answer) and named
        parameters (``$day``), bound from ``params``. With ``arrow`` the rows come as an
        Arrow table in :attr:`QueryResult.arrow` (types exact) instead of Python tuples.
        """
        limit = self.max_rows if max_rows is None else max_rows
        if limit < 1:
            raise ValueError(f"max_rows must be >= 1, got {limit}")
        statements = [s for s in self.statements(sql) if s.sql.strip().strip(";").strip()]
        if not statements:
            raise QueryError("no SQL statement given", sql, "ParserException")
        params = dict(params or {})
        wanted = set().union(*(s.parameters for s in statements))
        missing = sorted(wanted - set(params))
        if missing:
            raise QueryError(
                f"missing parameter(s) {', '.join('$' + m for m in missing)}",
                sql,
                "ParameterError",
            )
        unused = sorted(set(params) - wanted)
        if unused:
            raise QueryError(
                f"parameter(s) {', '.join(unused)} not used by the SQL "
                f"(it uses: {', '.join('$' + w for w in sorted(wanted)) or 'none'})",
                sql,
                "ParameterError",
            )
        with self._lock:
            started = time.perf_counter()
            remote = self._remote_tables_of(sql)
            try:
                self._sync_manifests()
                for table in remote:
                    self._register_remote(table)
            except duckdb.Error as exc:
                raise self._error(exc, sql, statements[0]) from None
            except (OSError, pa.ArrowException) as exc:
                # An S3 listing or footer read failed (endpoint down, corrupt file).
                raise QueryError(str(exc), sql, type(exc).__name__) from None
            scanned = 0
            files = 0
            # S3 tables: their bytes come from the reads pyarrow makes (queries.scanned).
            measured = {p: f for name in remote for p, f in self._remote[name].measured.items()}
            self._reads.reset()
            rows: list[tuple[Any, ...]] = []
            table: pa.Table | None = None
            description = None
            current = statements[0]
            deadline = Deadline(self._conn, self.limits.timeout_seconds)
            if self.sandbox:
                # Everything a query creates (TEMP objects) goes with the rollback.
                self._conn.execute("BEGIN TRANSACTION")
            try:
                with deadline:
                    for current in statements:
                        bound = {k: params[k] for k in current.parameters}
                        last = current is statements[-1]
                        if last and arrow and current.returns_rows:
                            table, description = self._fetch_arrow(current.sql, bound, limit + 1)
                        else:
                            cursor = self._conn.execute(current.sql, bound or None)
                            description = cursor.description if last else None
                            if last and description:
                                rows = cursor.fetchmany(limit + 1)
                            elif cursor.description:
                                cursor.fetchall()
                        step_bytes, step_files = self._profile()
                        scanned += step_bytes or 0
                        files += step_files
                        remote_bytes, remote_files = self._reads.scanned(measured)
                        cutoff = self.limits.max_bytes_scanned
                        if self.sandbox and cutoff and scanned + remote_bytes > cutoff:
                            violation = SandboxViolation(
                                "bytes_scanned_limit",
                                f"{scanned + remote_bytes} bytes scanned, cutoff {cutoff}",
                                current.offset,
                            )
                            raise QueryError.from_violation(violation, sql)
            except duckdb.Error as exc:
                violation = violation_from_error(exc, self.limits, deadline.fired)
                if self.sandbox and violation is not None:
                    violation.detail += f"; DuckDB: {str(exc).splitlines()[0]}"
                    raise QueryError.from_violation(violation, sql) from None
                raise self._error(exc, sql, current) from None
            except (OSError, pa.ArrowException) as exc:
                raise QueryError(str(exc), sql, type(exc).__name__) from None
            finally:
                if self.sandbox:
                    self._conn.execute("ROLLBACK")
            elapsed = time.perf_counter() - started
            remote_bytes, remote_files = self._reads.scanned(measured)
        if table is not None:
            truncated = table.num_rows > limit
            table = table.slice(0, limit)
        else:
            truncated = len(rows) > limit
        return QueryResult(
            sql=sql,
            columns=tuple(d[0] for d in description or ()),
            types=tuple(str(d[1]) for d in description or ()),
            rows=rows[:limit],
            elapsed=elapsed,
            bytes_scanned=scanned + remote_bytes,
            truncated=truncated,
            files_read=files + remote_files,
            arrow=table,
        )

    def _fetch_arrow(
        self, sql: str, params: Mapping[str, Any], count: int
    ) -> tuple[pa.Table, list[tuple[str, str]]]:
        """At most ``count`` rows of a query as an Arrow table, and its (name, type)s.

        Through the relation API: an Arrow reader over a DB-API result leaves DuckDB's
        profiler empty (no bytes scanned). The reader is closed and the relation dropped
        even when rows are left, so the connection is free for the next statement.
        """
        relation = self._conn.sql(sql, params=dict(params) or None)
        description = [
            (name, str(kind)) for name, kind in zip(relation.columns, relation.types, strict=True)
        ]
        reader = relation.to_arrow_reader(min(count, 100_000))
        try:
            batches: list[pa.RecordBatch] = []
            have = 0
            for batch in reader:
                batches.append(batch)
                have += batch.num_rows
                if have >= count:
                    break
            table = pa.Table.from_batches(batches, schema=reader.schema).slice(0, count)
        finally:
            reader.close()
            del relation
        return table, description

    def _error(self, exc: duckdb.Error, sql: str, statement: CheckedStatement) -> QueryError:
        """DuckDB's error with its position in the whole SQL, and the real cause of a
        missing table: a lake table whose view could not be created says why."""
        message = str(exc)
        position = error_position(message, statement.sql, statement.offset, sql)
        if isinstance(exc, duckdb.CatalogException):
            for table, cause in sorted(self.view_errors.items()):
                if f"name {table} does not exist" not in message:
                    continue
                if table in self.saved_views:
                    message += f"\n{table!r} is a saved view that could not be created: {cause}"
                else:
                    message += f"\n{table!r} is a lake table, but it cannot be read: {cause}"
        return QueryError(message, sql, type(exc).__name__, position=position)

    def _profile(self) -> tuple[int | None, int]:
        """Compressed Parquet bytes and files the last statement read (DuckDB's profiler)."""
        try:
            profile = json.loads(self._conn.get_profiling_information())
        except (duckdb.Error, ValueError):
            return None, 0
        value = profile.get("query", {}).get("total_bytes_scanned")
        files = 0
        # The scans' own figures, summed: the query-level total misses Parquet scans when
        # the same query also scans an Arrow dataset (an S3 table).
        operators = 0
        stack = list(profile.get("operator", profile.get("children", [])))
        while stack:
            node = stack.pop()
            extra = node.get("extra_info") or {}
            count = extra.get("Total Files Read") if isinstance(extra, dict) else None
            if isinstance(count, str) and count.isdigit():
                files += int(count)
            scanned = node.get("bytes_scanned")
            if isinstance(scanned, (int, float)):
                operators += int(scanned)
            stack.extend(node.get("children", []))
        if isinstance(value, (int, float)):
            return max(int(value), operators), files
        return (operators or None), files

    def interrupt(self) -> None:
        """Stop the statement running now (call from another thread): it fails with a
        :class:`QueryError`; the engine answers the next query as usual."""
        self._conn.interrupt()

    def close(self) -> None:
        """Close the DuckDB connections."""
        self._conn.close()
        self._parser.close()

    def __enter__(self) -> QueryEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------- formatting


def _text(value: Any) -> str:
    """One value as text: ISO times, NULL for None."""
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (date, dtime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return str(value)


def _jsonable(value: Any) -> Any:
    """One value as JSON data: ISO times, decimals as numbers, bytes as hex."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date, dtime)):
        return _text(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def format_table(result: QueryResult, max_width: int = 60) -> str:
    """An aligned text table (numbers right-aligned), with a row count footer."""
    header = list(result.columns)
    body = []
    for row in result.rows:
        cells = []
        for value in row:
            text = _text(value).replace("\n", "\\n")
            if len(text) > max_width:
                text = text[: max_width - 1] + "…"
            cells.append(text)
        body.append(cells)
    widths = [len(h) for h in header]
    for cells in body:
        widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
    numeric = [
        all(_is_number(row[i]) or row[i] is None for row in result.rows) and bool(result.rows)
        for i in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ]
        return " | ".join(padded).rstrip()

    lines = [line(header), "-+-".join("-" * w for w in widths)]
    lines += [line(cells) for cells in body]
    count = len(result.rows)
    footer = f"({count} row{'s' if count != 1 else ''}"
    if result.truncated:
        footer += ", truncated"
    lines.append(footer + ")")
    return "\n".join(lines)


def format_csv(result: QueryResult) -> str:
    """CSV with a header row; NULL is an empty field, times are ISO."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(["" if v is None else _text(v) for v in row])
    return out.getvalue()


def json_value(value: Any) -> Any:
    """One value as JSON data: ISO times, decimals as numbers, bytes as hex."""
    return _jsonable(value)


def json_rows(result: QueryResult) -> list[list[Any]]:
    """The rows as JSON arrays (ISO times, decimals as numbers, bytes as hex)."""
    return [[_jsonable(value) for value in row] for row in result.rows]


def format_json(result: QueryResult, lines: bool = False) -> str:
    """The rows as JSON objects: one array, or JSON lines with ``lines=True``."""
    objects = [
        {col: _jsonable(value) for col, value in zip(result.columns, row, strict=True)}
        for row in result.rows
    ]
    if lines:
        return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects)
    return json.dumps(objects, ensure_ascii=False)

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
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import UUID

import duckdb

from queries.catalog import TableInfo, list_tables

__all__ = [
    "DEFAULT_MAX_ROWS",
    "HIVE_TYPES",
    "PRICE_PER_TB_USD",
    "QueryEngine",
    "QueryError",
    "QueryResult",
    "format_csv",
    "format_json",
    "format_table",
]

#: Types of the Hive partition columns every lake table has.
HIVE_TYPES = "{'dt': DATE, 'hour': INTEGER}"
#: Where a table's compaction manifest lives, relative to the lake root (sinks.paths).
MANIFEST = "_firelake/tables/{table}/manifest.json"
#: File name start of a compaction output (sinks.paths.COMPACTED_PREFIX).
COMPACTED_PREFIX = "compacted-"
#: Athena's price per terabyte scanned.
PRICE_PER_TB_USD = 5.0
#: Most rows a query returns unless the caller asks for more (results are held in memory).
DEFAULT_MAX_ROWS = 10_000


class QueryError(Exception):
    """A query DuckDB refused or could not run: its message, the SQL and the error kind."""

    def __init__(self, message: str, sql: str, kind: str = "Error") -> None:
        self.message = message
        self.sql = sql
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class QueryResult:
    """The rows of a query as Python values, how long it took and what it scanned.

    ``truncated`` says rows stopped at the row limit; ``bytes_scanned`` is None when the
    profiler had nothing to say about the statement.
    """

    sql: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    elapsed: float
    bytes_scanned: int | None
    truncated: bool = False

    @property
    def cost_usd(self) -> float:
        """What Athena would charge for the bytes scanned (no 10 MB minimum applied)."""
        return (self.bytes_scanned or 0) / 1e12 * PRICE_PER_TB_USD


def _sql_string(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


class QueryEngine:
    """DuckDB over one lake: a view per table, queries profiled, one query at a time.

    One connection serves every query, guarded by a lock (DuckDB still runs each query on
    ``threads`` threads); create several engines for concurrent queries. ``sandbox``
    confines file access to the lake root and locks the configuration.
    """

    def __init__(
        self,
        lake_root: str | os.PathLike[str],
        threads: int = 2,
        max_rows: int = DEFAULT_MAX_ROWS,
        sandbox: bool = True,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.lake_root = Path(lake_root).resolve()
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._tables: dict[str, TableInfo] = {}
        self._views: set[str] = set()
        #: Tables whose view lists its files (compacted tables), by name.
        self._listed: dict[str, bool] = {}
        #: Tables whose view could not be created this refresh, with DuckDB's reason.
        self.view_errors: dict[str, str] = {}
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
        ]
        if sandbox:
            root = str(self.lake_root).rstrip("/") + "/"
            setup += [
                f"SET allowed_directories = [{_sql_string(root)}]",
                "SET enable_external_access = false",
            ]
        for statement in setup:
            self._conn.execute(statement)
        self.refresh()
        if sandbox:
            # Last: user SQL must not undo the sandbox (views need no settings change).
            self._conn.execute("SET lock_configuration = true")

    # ------------------------------------------------------------------ catalog

    @property
    def tables(self) -> dict[str, TableInfo]:
        """The catalog as of the last refresh, by table name."""
        return dict(self._tables)

    def manifest_lists(self, table: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """(active, retired) file keys of a table's compaction manifest, None without one."""
        path = self.lake_root / MANIFEST.format(table=table)
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        retired = [*data.get("retired", []), *(data.get("deleted_at") or {})]
        return tuple(sorted(data.get("active", []))), tuple(sorted(retired))

    def live_files(
        self, table: str, manifest: tuple[tuple[str, ...], tuple[str, ...]]
    ) -> list[str]:
        """The files of a compacted table a query may open, listed *after* its manifest."""
        active, retired = set(manifest[0]), set(manifest[1])
        files = []
        for current, dirs, names in os.walk(self.lake_root / table):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith(".") or not name.endswith(".parquet"):
                    continue
                path = Path(current) / name
                key = path.relative_to(self.lake_root).as_posix()
                if key in retired or (name.startswith(COMPACTED_PREFIX) and key not in active):
                    continue
                files.append(str(path))
        return files

    def view_sql(self, table: str, files: Sequence[str] | None = None) -> str:
        """The SELECT behind a table's view: a glob, or the given files of a compacted table.

        ``union_by_name`` opens every file's footer when the query binds, so a compacted
        table lists its live files itself: a retired file is never opened, and one being
        deleted after its grace cannot fail a query that still globbed it.
        """
        if files:
            source = "[" + ", ".join(_sql_string(f) for f in files) + "]"
            where = ""
        else:
            source = _sql_string(f"{self.lake_root}/{table}/**/[!.]*.parquet")
            # No manifest yet: an output of a compaction killed before its switch is unused.
            where = f" WHERE NOT contains(filename, {_sql_string('/' + COMPACTED_PREFIX)})"
        return (
            f"SELECT * EXCLUDE (filename) FROM read_parquet({source}, hive_partitioning = true, "
            f"union_by_name = true, hive_types = {HIVE_TYPES}, filename = true){where}"
        )

    def _create_view(self, table: str) -> None:
        # Call with the lock held. The manifest is read first, then the files are listed.
        manifest = self.manifest_lists(table)
        files = self.live_files(table, manifest) if manifest is not None else None
        self._conn.execute(
            f"CREATE OR REPLACE VIEW {_identifier(table)} AS " + self.view_sql(table, files)
        )
        self._listed[table] = manifest is not None

    def _sync_manifests(self) -> None:
        """Before a query: re-list compacted tables (call with the lock held).

        A table never compacted keeps its glob view; once it has a manifest its view is
        rebuilt from the manifest and a fresh listing at every query.
        """
        for table in sorted(self._views):
            if self._listed.get(table) or self.manifest_lists(table) is not None:
                self._create_view(table)

    def refresh(self) -> list[TableInfo]:
        """Re-scan the lake: create views for new tables, drop views of vanished ones.

        A table whose view cannot be created (say, a corrupt file) is left out and named
        in :attr:`view_errors`; the other tables stay queryable.
        """
        tables = list_tables(self.lake_root)
        with self._lock:
            errors: dict[str, str] = {}
            current = {info.name for info in tables}
            for name in sorted(self._views - current):
                self._conn.execute(f"DROP VIEW IF EXISTS {_identifier(name)}")
                self._views.discard(name)
            for info in tables:
                try:
                    self._create_view(info.name)
                except duckdb.Error as exc:
                    errors[info.name] = str(exc)
                    self._conn.execute(f"DROP VIEW IF EXISTS {_identifier(info.name)}")
                    self._views.discard(info.name)
                    continue
                self._views.add(info.name)
            self._tables = {info.name: info for info in tables if info.name not in errors}
            self.view_errors = errors
        return tables

    # ------------------------------------------------------------------ queries

    def query(self, sql: str, max_rows: int | None = None) -> QueryResult:
        """Run SQL and return at most ``max_rows`` rows; :class:`QueryError` if it fails."""
        limit = self.max_rows if max_rows is None else max_rows
        if limit < 1:
            raise ValueError(f"max_rows must be >= 1, got {limit}")
        with self._lock:
            started = time.perf_counter()
            try:
                self._sync_manifests()
                cursor = self._conn.execute(sql)
                description = cursor.description
                rows = cursor.fetchmany(limit + 1) if description else []
            except duckdb.Error as exc:
                raise QueryError(str(exc), sql, type(exc).__name__) from None
            elapsed = time.perf_counter() - started
            bytes_scanned = self._bytes_scanned()
        truncated = len(rows) > limit
        return QueryResult(
            sql=sql,
            columns=tuple(d[0] for d in description or ()),
            types=tuple(str(d[1]) for d in description or ()),
            rows=rows[:limit],
            elapsed=elapsed,
            bytes_scanned=bytes_scanned,
            truncated=truncated,
        )

    def _bytes_scanned(self) -> int | None:
        """Compressed Parquet bytes the last statement read, from DuckDB's profiler."""
        try:
            profile = json.loads(self._conn.get_profiling_information())
        except (duckdb.Error, ValueError):
            return None
        value = profile.get("query", {}).get("total_bytes_scanned")
        return int(value) if isinstance(value, (int, float)) else None

    def close(self) -> None:
        """Close the DuckDB connection."""
        self._conn.close()

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


def format_json(result: QueryResult, lines: bool = False) -> str:
    """The rows as JSON objects: one array, or JSON lines with ``lines=True``."""
    objects = [
        {col: _jsonable(value) for col, value in zip(result.columns, row, strict=True)}
        for row in result.rows
    ]
    if lines:
        return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects)
    return json.dumps(objects, ensure_ascii=False)

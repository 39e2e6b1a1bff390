"""Open windows as SQL: each window agent's snapshot in the lake as the view ``<name>_open``.

Window agents hold their open windows in memory (and their Kafka changelog); the query
service reads the lake only. So each active window agent replaces
``_firelake/windows/<window>/open.parquet`` (:func:`sinks.paths.open_windows_key`) every few
seconds and when it stops — one whole file, atomically — and this module gives each such
file a name every query can use: ``<window>_open``, the window's name with every character
other than letters, digits and ``_`` made ``_`` (``plays-per-minute`` →
``plays_per_minute_open``). Columns: ``window_start``, ``window_end``, the key fields, the
aggregates, ``event_count``, ``is_final`` (false), ``snapshot_time`` and ``watermark``. A
window that closes leaves the view at the agent's next snapshot.

Local lakes get a view over the file (read afresh by every query); on S3 the file is read
at each catalog refresh and registered as an Arrow table. The snapshot is bounded by the
window's ``max_open_windows`` rows, so reading it whole is cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from queries.sandbox import identifier, sql_string
from sinks.destinations import Destination, LocalDestination
from sinks.paths import STATE_DIR, open_windows_key

__all__ = ["OpenWindow", "find_open_windows", "sync_open_window_views", "view_name"]

#: Where window agents keep their snapshots (one folder per window).
WINDOWS_DIR = f"{STATE_DIR}/windows"
_FILE = open_windows_key("w").rsplit("/", 1)[1]
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def view_name(window: str) -> str:
    """The SQL name of a window's open windows."""
    return _UNSAFE.sub("_", window) + "_open"


@dataclass(frozen=True, slots=True)
class OpenWindow:
    """A window's snapshot file: its window, view name, root and key in the root."""

    window: str
    view: str
    destination: Destination
    key: str


def find_open_windows(roots: Iterable[Destination]) -> dict[str, OpenWindow]:
    """Every window snapshot in the lake's roots, by view name (the first root wins)."""
    found: dict[str, OpenWindow] = {}
    for root in roots:
        try:
            infos = root.list(WINDOWS_DIR + "/")
        except (OSError, pa.ArrowException):
            continue
        for info in infos:
            parts = info.key.split("/")
            if len(parts) != 4 or parts[3] != _FILE:
                continue
            window = parts[2]
            found.setdefault(
                view_name(window), OpenWindow(window, view_name(window), root, info.key)
            )
    return found


def sync_open_window_views(
    conn: duckdb.DuckDBPyConnection,
    roots: Iterable[Destination],
    taken: Iterable[str],
    previous: Mapping[str, OpenWindow],
    errors: dict[str, str],
) -> dict[str, OpenWindow]:
    """(Re-)create the ``<window>_open`` views on ``conn`` and drop those whose snapshot is
    gone; a name already ``taken`` by a lake table is left out, with the reason in
    ``errors``. Returns the views now defined (pass it as ``previous`` next time)."""
    taken = set(taken)
    current = find_open_windows(roots)
    for name, old in previous.items():
        # A name a lake table took is the table's now: its view replaced this one, and
        # dropping the name would drop the table's view.
        if name not in current and name not in taken:
            if isinstance(old.destination, LocalDestination):
                conn.execute(f"DROP VIEW IF EXISTS {identifier(name)}")
            else:
                conn.unregister(name)
    made: dict[str, OpenWindow] = {}
    for name, snapshot in sorted(current.items()):
        if name in taken:
            errors[name] = f"open windows of {snapshot.window!r}: a lake table has that name"
            continue
        try:
            if isinstance(snapshot.destination, LocalDestination):
                path = sql_string(str(snapshot.destination.path(snapshot.key)))
                view = identifier(name)
                conn.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet({path})")
            else:
                fs, base = snapshot.destination.arrow_fs()
                conn.register(name, pq.read_table(f"{base}/{snapshot.key}", filesystem=fs))
        except (duckdb.Error, OSError, pa.ArrowException) as exc:
            errors[name] = f"open windows of {snapshot.window!r}: {exc}"
            continue
        made[name] = snapshot
    return made

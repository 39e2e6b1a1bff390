"""Compaction: merge a table's small files into files near a target size, atomically.

Readers glob a table's folders, and no filesystem (let alone S3) can remove N files and
add one in a single step. So the switch is a *manifest* (``sinks.manifest``: its format,
and the rule readers follow — a ``compacted-*`` file is used only while the manifest lists
it ``active``, a ``retired`` file never), one small JSON object per table put atomically.

:func:`compact` (1) writes the merged file — invisible, not active yet; (2) puts the new
manifest: output active, inputs retired — the one atomic switch; (3) deletes retired
files only ``grace_seconds`` later, and forgets them another grace later. The query
engine reads the manifest *before* it lists the files (``queries.engine``), so a query
sees the old files (manifest read before the switch: inputs still exist for the grace)
or the new one (after it), never both or neither, for any query shorter than the grace.

Exactly-once bookkeeping stays intact: only *committed* files are merged — a sink's file
name holds its topic, partition and offset range, and a file is committed when that
partition's progress state has reached its last offset; an intent's files are never
committed, so recovery never deletes a merged one. State files are not touched; a rewrite
of a killed compaction puts the same digest name again. Folders whose newest file is
younger than ``min_age_seconds`` are open (a sink may still add to them) and skipped.
One compaction per table at a time: a ``flock`` on a local destination; on S3 a lock
object created with a conditional put (``If-None-Match: *``) holding a lease, taken over
(``If-Match``) only once its lease ran out — a compactor killed mid-way blocks the table
for at most ``S3_LOCK_LEASE_SECONDS``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from sinks.destinations import Conflict, Destination, LocalDestination, ObjectInfo
from sinks.manifest import Manifest, live_files, load_manifest
from sinks.parquet import parquet_bytes
from sinks.paths import COMPACTED_PREFIX, manifest_key, parse_data_file_name
from sinks.progress import ProgressStore

# Manifest, live_files, load_manifest live in sinks.manifest (re-exported here).
__all__ = [
    "CompactionLocked",
    "CompactionReport",
    "Manifest",
    "compact",
    "live_files",
    "load_manifest",
]


@dataclass
class CompactionReport:
    """What one compaction run did."""

    merged_files: int = 0
    written_files: int = 0
    rows: int = 0
    deleted_files: int = 0
    skipped_open: int = 0
    skipped_uncommitted: int = 0
    outputs: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"merged {self.merged_files} files into {self.written_files} ({self.rows} rows); "
            f"deleted {self.deleted_files} retired files; skipped {self.skipped_open} open "
            f"folders and {self.skipped_uncommitted} uncommitted files"
        )


#: How long an S3 compaction lock holds before another compactor may take it over.
S3_LOCK_LEASE_SECONDS = 900.0


class CompactionLocked(RuntimeError):
    """Another compaction of the table holds its lock."""


@contextlib.contextmanager
def _s3_lock(destination: Destination, table: str) -> Iterator[None]:
    key = manifest_key(table).rsplit("/", 1)[0] + "/.compaction.lock"
    holder = f"{socket.gethostname()}:{os.getpid()}"
    body = orjson.dumps({"holder": holder, "expires": time.time() + S3_LOCK_LEASE_SECONDS})
    raw, version = destination.get_versioned(key)
    if raw is not None:
        held = orjson.loads(raw)
        if held.get("expires", 0) > time.time():
            raise CompactionLocked(
                f"table {table!r} is being compacted by {held.get('holder')} (lock {key}, "
                f"lease until {held.get('expires'):.0f})"
            )
    try:
        destination.put_if(key, body, version)
    except Conflict as exc:
        raise CompactionLocked(f"table {table!r}: another compactor took the lock") from exc
    try:
        yield
    finally:
        destination.delete([key])


@contextlib.contextmanager
def _table_lock(destination: Destination, table: str) -> Iterator[None]:
    if not isinstance(destination, LocalDestination):
        with _s3_lock(destination, table):
            yield
        return
    # The lock file is the manifest folder's .compaction.lock, as before.
    with destination.locked(destination.path(manifest_key(table)).with_name("compaction")):
        yield


def _committed(stores: Sequence[ProgressStore], key: str, cache: dict) -> bool:
    parsed = parse_data_file_name(key.rsplit("/", 1)[-1])
    if parsed is None:
        return key.rsplit("/", 1)[-1].startswith(COMPACTED_PREFIX)
    topic, partition, _first, last = parsed
    if (topic, partition) not in cache:
        best = -1
        for store in stores:
            state = store.state(topic, partition)
            if state is not None:
                best = max(best, state.last_offset)
        cache[(topic, partition)] = best
    return last <= cache[(topic, partition)]


def _groups(files: Sequence[ObjectInfo], target_bytes: int) -> list[list[ObjectInfo]]:
    """Consecutive runs of files (key order) of about ``target_bytes``, two files or more."""
    groups: list[list[ObjectInfo]] = []
    current: list[ObjectInfo] = []
    size = 0
    for info in files:
        if current and size + info.size > target_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(info)
        size += info.size
    if current:
        groups.append(current)
    return [g for g in groups if len(g) > 1]


def _merge(destination: Destination, keys: Sequence[str]) -> pa.Table:
    tables = []
    for key in keys:
        data = destination.get(key)
        if data is None:
            raise FileNotFoundError(f"{key} vanished during compaction")
        tables.append(pq.read_table(io.BytesIO(data)))
    # Like union_by_name: columns missing from older files read null, types widen.
    return pa.concat_tables(tables, promote_options="permissive")


def _collect_garbage(
    destination: Destination,
    manifest: Manifest,
    listing: Sequence[ObjectInfo],
    now: float,
    grace: float,
) -> tuple[int, bool]:
    """Delete files retired a grace ago (and orphaned outputs); forget deleted ones later.

    Returns how many files went and whether the manifest changed.
    """
    doomed = [k for k, at in manifest.retired.items() if now - at >= grace]
    known = set(manifest.active) | set(manifest.retired)
    orphans = [
        i.key
        for i in listing
        if i.key.rsplit("/", 1)[-1].startswith(COMPACTED_PREFIX)
        and i.key not in known
        and now - i.mtime >= grace
    ]
    if doomed or orphans:
        destination.delete(doomed + orphans)
    for key in doomed:
        del manifest.retired[key]
        manifest.deleted[key] = now
    forget = [k for k, at in manifest.deleted.items() if now - at >= grace]
    for key in forget:
        del manifest.deleted[key]
    return len(doomed) + len(orphans), bool(doomed or forget)


def compact(
    destination: Destination,
    table: str,
    stores: Sequence[ProgressStore],
    *,
    target_bytes: int,
    grace_seconds: float,
    min_age_seconds: float = 3600.0,
    folders: Sequence[str] = (),
    compression: str = "zstd",
    clock: Callable[[], float] = time.time,
) -> CompactionReport:
    """Compact a table's closed folders (all, or those starting with one of ``folders``).

    ``stores`` are the progress stores of the sinks writing the table: a file is merged
    only once its partition's state covers it.
    """
    report = CompactionReport()
    with _table_lock(destination, table):
        manifest = load_manifest(destination, table)
        now = clock()
        listing = [i for i in destination.list(f"{table}/") if i.key.endswith(".parquet")]
        report.deleted_files, changed = _collect_garbage(
            destination, manifest, listing, now, grace_seconds
        )
        by_folder: dict[str, list[ObjectInfo]] = {}
        for info in listing:
            if manifest.is_live(info.key):
                by_folder.setdefault(info.key.rsplit("/", 1)[0] + "/", []).append(info)
        cache: dict = {}
        retire: list[str] = []
        for folder, files in sorted(by_folder.items()):
            relative = folder[len(table) + 1 :]
            if folders and not any(relative.startswith(f.strip("/") + "/") for f in folders):
                continue
            if now - max(i.mtime for i in files) < min_age_seconds:
                report.skipped_open += 1
                continue
            committed = [i for i in files if _committed(stores, i.key, cache)]
            report.skipped_uncommitted += len(files) - len(committed)
            for group in _groups(committed, target_bytes):
                keys = [i.key for i in group]
                merged = _merge(destination, keys)
                digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:20]
                output = f"{folder}{COMPACTED_PREFIX}{digest}.parquet"
                destination.put(output, parquet_bytes(merged, compression))  # (1) invisible
                manifest.active = [k for k in manifest.active if k not in keys] + [output]
                retire += keys
                report.merged_files += len(keys)
                report.written_files += 1
                report.rows += merged.num_rows
                report.outputs.append(output)
        for key in retire:
            manifest.retired[key] = now
        if retire or changed:
            manifest.version += 1
            destination.put(manifest_key(table), manifest.to_json())  # (2) the switch
    return report

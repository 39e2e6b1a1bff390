"""The compaction manifest and the live files of a table: the reader's side of compaction.

Readers glob a table's folders, and no filesystem (let alone S3) can remove N files and
add one in a single step, so compaction (``sinks.compaction``) switches a table's files
with a *manifest*, one small JSON object per table (``_firelake/tables/<table>/manifest.json``,
``sinks.paths.manifest_key``) put atomically, and a naming rule:

- a compaction output is named ``compacted-<digest>.parquet``; readers use such a file
  only while the manifest lists it in ``active``;
- a file the manifest lists in ``retired`` (or ``deleted_at``) is never used by readers.

This module is that format and the rule, nothing else: the query side (``queries``) and
compaction both use it, so a query learns the live files without importing the write
path (Parquet writer, sinks, Kafka clients). A reader reads the manifest *before* it lists
the files; that order is what makes the switch atomic for it (see ``sinks.compaction``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sinks.destinations import Destination, ObjectInfo
from sinks.paths import COMPACTED_PREFIX, manifest_key

__all__ = [
    "Manifest",
    "live_files",
    "live_table_files",
    "load_manifest",
]


@dataclass
class Manifest:
    """Which compacted files are live and which files are retired (key -> epoch seconds)."""

    version: int = 0
    active: list[str] = field(default_factory=list)
    retired: dict[str, float] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The stored form: compact JSON (``retired`` also as a sorted key list)."""
        document = {
            "version": self.version,
            "active": sorted(self.active),
            "retired": sorted(self.retired),
            "retired_at": self.retired,
            "deleted_at": self.deleted,
        }
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()

    def is_live(self, key: str) -> bool:
        """Whether readers use this file (given that it exists)."""
        if key in self.retired or key in self.deleted:
            return False
        name = key.rsplit("/", 1)[-1]
        return not name.startswith(COMPACTED_PREFIX) or key in self.active


def load_manifest(destination: Destination, table: str) -> Manifest:
    """A table's manifest, empty before its first compaction."""
    raw = destination.get(manifest_key(table))
    if raw is None:
        return Manifest()
    data = json.loads(raw)
    retired_at = data.get("retired_at") or {}
    return Manifest(
        version=int(data.get("version", 0)),
        active=list(data.get("active", [])),
        retired={k: float(retired_at.get(k, 0.0)) for k in data.get("retired", [])},
        deleted={k: float(v) for k, v in (data.get("deleted_at") or {}).items()},
    )


def live_files(destination: Destination, table: str) -> list[ObjectInfo]:
    """The Parquet files of a table a reader should use now (manifest read first)."""
    manifest = load_manifest(destination, table)
    return [
        info
        for info in destination.list(f"{table}/")
        if info.key.endswith(".parquet") and manifest.is_live(info.key)
    ]


def live_table_files(destination: Destination, table: str) -> list[ObjectInfo]:
    """A table's complete live Parquet files, sorted by key: manifest read, then listed.

    :func:`live_files` applies the manifest; on S3 only a key's last part is checked for a
    leading dot, so files in dot-folders (staging) are dropped here.
    """
    return [
        info
        for info in live_files(destination, table)
        if not any(part.startswith(".") for part in info.key.split("/"))
    ]

"""Table schemas and their versions (Glue's ``Table.StorageDescriptor.Columns`` and
``TableVersion``), crawled from the lake's own files.

A table's columns are its live files' Parquet schemas unified by name (as the query
engine's ``union_by_name`` reads them), then its partition keys (``dt`` DATE, ``hour``
INTEGER, other keys strings). Each change of that schema is a version:

- **Derived** from the files: walking them in the order they were written (mtime, key),
  every file that adds a column, or changes one's type, starts a new version, dated by
  that file.
- **Kept** in the lake's bookkeeping (``_firelake/catalog/<table>/versions.json``) by
  :func:`record_versions`, because compaction folds old files into one with the union
  schema and their history would otherwise disappear. A crawl appends the versions it
  sees that the record does not end with; the record is only ever extended (a put of the
  whole file: two crawlers at once may both append the same version, which is dropped
  when read).

Types are shown the way Athena/Glue name them (``string``, ``bigint``, ``timestamp``,
``array<string>``…), from the Arrow types.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from queries.catalog import ARROW_HIVE_TYPES, TableInfo
from sinks.destinations import Destination
from sinks.paths import STATE_DIR

__all__ = [
    "Column",
    "TableVersion",
    "derive_versions",
    "glue_type",
    "last_update",
    "record_versions",
    "table_columns",
    "versions_key",
]


@dataclass(frozen=True)
class Column:
    """A column as Glue shows it: name, Hive type, and whether it is a partition key."""

    name: str
    type: str
    partition_key: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "partition_key": self.partition_key}


@dataclass(frozen=True)
class TableVersion:
    """One schema of a table: its id (1, 2, …), columns, when it appeared and why."""

    version: int
    columns: tuple[Column, ...]
    created: float
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    first_file: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created": self.created,
            "columns": [c.to_dict() for c in self.columns],
            "added": list(self.added),
            "changed": list(self.changed),
            "first_file": self.first_file,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableVersion:
        return cls(
            version=int(data["version"]),
            columns=tuple(
                Column(c["name"], c["type"], bool(c.get("partition_key"))) for c in data["columns"]
            ),
            created=float(data["created"]),
            added=tuple(data.get("added", ())),
            changed=tuple(data.get("changed", ())),
            first_file=str(data.get("first_file", "")),
        )


def glue_type(kind: pa.DataType) -> str:
    """The Hive/Glue name of an Arrow type."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_int8(kind):
        return "tinyint"
    if pa.types.is_int16(kind):
        return "smallint"
    if pa.types.is_int32(kind) or pa.types.is_uint16(kind):
        return "int"
    if pa.types.is_integer(kind):
        return "bigint"
    if pa.types.is_float32(kind):
        return "float"
    if pa.types.is_floating(kind):
        return "double"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_decimal(kind):
        return f"decimal({kind.precision},{kind.scale})"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "binary"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"array<{glue_type(kind.value_type)}>"
    if pa.types.is_map(kind):
        return f"map<{glue_type(kind.key_type)},{glue_type(kind.item_type)}>"
    if pa.types.is_struct(kind):
        fields = ",".join(f"{f.name}:{glue_type(f.type)}" for f in kind)
        return f"struct<{fields}>"
    return str(kind)


def _partition_columns(info: TableInfo) -> tuple[Column, ...]:
    return tuple(
        Column(key, glue_type(ARROW_HIVE_TYPES.get(key, pa.string())), True) for key in info.layout
    )


def _columns(schema: pa.Schema, info: TableInfo) -> tuple[Column, ...]:
    keys = set(info.layout)
    data = tuple(Column(f.name, glue_type(f.type)) for f in schema if f.name not in keys)
    return data + _partition_columns(info)


def table_columns(info: TableInfo) -> tuple[Column, ...]:
    """The table's columns now: its files' schemas unified by name, then partition keys."""
    schemas = [f.schema for f in info.data_files if f.schema is not None]
    if not schemas:
        return _partition_columns(info)
    return _columns(pa.unify_schemas(schemas, promote_options="permissive"), info)


def last_update(info: TableInfo) -> float | None:
    """When the table's newest live file was written (epoch seconds)."""
    return max((f.mtime for f in info.data_files), default=None)


def _diff(
    before: Mapping[str, object], after: Sequence[tuple[str, object]]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The columns ``after`` adds to ``before``, and those whose type it changes."""
    added = tuple(name for name, _ in after if name not in before)
    changed = tuple(name for name, kind in after if name in before and before[name] != kind)
    return added, changed


def derive_versions(info: TableInfo) -> list[TableVersion]:
    """The schema versions the table's live files show, oldest first."""
    versions: list[TableVersion] = []
    current: pa.Schema | None = None
    for data_file in sorted(info.data_files, key=lambda f: (f.mtime, str(f.path))):
        if data_file.schema is None:
            continue
        merged = (
            data_file.schema
            if current is None
            else pa.unify_schemas([current, data_file.schema], promote_options="permissive")
        )
        if current is not None and merged.equals(current):
            continue
        before = {} if current is None else {f.name: f.type for f in current}
        added, changed = _diff(before, [(f.name, f.type) for f in merged])
        current = merged
        versions.append(
            TableVersion(
                len(versions) + 1,
                _columns(merged, info),
                data_file.mtime,
                () if len(versions) == 0 else added,
                changed,
                str(data_file.path),
            )
        )
    return versions


def versions_key(table: str) -> str:
    """Where a table's version record lives in its root."""
    return f"{STATE_DIR}/catalog/{table}/versions.json"


def _read(destination: Destination, table: str) -> list[TableVersion]:
    raw = destination.get(versions_key(table))
    if not raw:
        return []
    try:
        data = json.loads(raw)
        versions = [TableVersion.from_dict(v) for v in data.get("versions", [])]
    except (ValueError, KeyError, TypeError):
        return []  # a damaged record is rebuilt from the files
    unique: list[TableVersion] = []
    for version in versions:
        if not unique or unique[-1].columns != version.columns:
            unique.append(version)
    return unique


def record_versions(
    destination: Destination | None, info: TableInfo, write: bool = True
) -> list[TableVersion]:
    """The table's version history: the record, extended with what the files show now.

    With ``write`` (and a destination), an extended record is stored back.
    """
    derived = derive_versions(info)
    if destination is None:
        return derived
    stored = _read(destination, info.name)
    if not stored:
        history = derived
    else:
        history = list(stored)
        current = derived[-1] if derived else None
        if current is not None and current.columns != history[-1].columns:
            added, changed = _diff(
                {c.name: c.type for c in history[-1].columns},
                [(c.name, c.type) for c in current.columns],
            )
            history.append(
                TableVersion(
                    history[-1].version + 1,
                    current.columns,
                    current.created or time.time(),
                    added,
                    changed,
                    current.first_file,
                )
            )
    if write and history and history != stored:
        body = {"table": info.name, "versions": [v.to_dict() for v in history]}
        destination.put(versions_key(info.name), json.dumps(body, indent=1).encode())
    return history

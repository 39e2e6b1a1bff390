"""CTAS-style export of a query result: to a file, or into the lake as a new table.

The sandbox forbids ``COPY … TO`` and ``CREATE TABLE … AS`` (user SQL never writes), so
an export is done here, by Firelake, from the result's Arrow table:

- **To a file** (``firelake query … --output top.parquet``): Parquet (zstd), CSV with a
  header, or JSON lines, chosen by ``format`` or the file's extension. The file is written
  beside its target and renamed into place, so a reader never sees half of it.
- **Into the lake** (``--into-table top_content_daily``, Athena's CTAS): Parquet files in
  the lake's Hive layout, so the catalog and every query engine see a new table at their
  next refresh. A result with ``dt`` and ``hour`` columns is partitioned by them (one file
  per partition, the columns moved to the folder names, as Athena's
  ``partitioned_by``); any other result goes to the partition of the moment it was written.
  Files are put atomically through the lake's destination (a local folder or S3). A table
  that already exists is refused unless ``append`` is asked for.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from firelake.grammars.field_types import COLUMN_NAME_RE
from queries.catalog import RESERVED_FOLDERS
from sinks.destinations import Destination

__all__ = ["EXPORT_FORMATS", "ExportError", "ExportReport", "export_file", "export_table"]

#: Formats a result can be written in.
EXPORT_FORMATS = ("parquet", "csv", "json")


class ExportError(ValueError):
    """An export that cannot be done as asked (bad name, existing table, unknown format)."""


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote."""

    target: str
    rows: int
    files: int
    bytes: int

    def __str__(self) -> str:
        return f"{self.rows} rows in {self.files} file(s), {self.bytes} bytes -> {self.target}"


def _serialize(table: pa.Table, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, out, compression="zstd")
    elif fmt == "csv":
        pacsv.write_csv(table, out)
    elif fmt == "json":
        for row in table.to_pylist():
            out.write(orjson.dumps(row, default=str, option=orjson.OPT_NAIVE_UTC) + b"\n")
    else:
        raise ExportError(f"unknown format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})")
    return out.getvalue()


def export_file(table: pa.Table, path: Path | str, fmt: str | None = None) -> ExportReport:
    """Write a result to a local file, atomically; the format defaults to the extension."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower().replace("jsonl", "json").replace("ndjson", "json")
    if fmt not in EXPORT_FORMATS:
        raise ExportError(
            f"{path}: cannot tell the format from the extension; give one of "
            f"{', '.join(EXPORT_FORMATS)}"
        )
    data = _serialize(table, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
    return ExportReport(str(path), table.num_rows, 1, len(data))


def _partitions(table: pa.Table, now: datetime) -> list[tuple[str, int, pa.Table]]:
    """(dt, hour, rows without those columns) groups of a result."""
    names = table.column_names
    if "dt" not in names or "hour" not in names:
        return [(now.strftime("%Y-%m-%d"), now.hour, table)]
    groups: dict[tuple[str, int], list[int]] = {}
    dts = table.column("dt").to_pylist()
    hours = table.column("hour").to_pylist()
    for index, (dt, hour) in enumerate(zip(dts, hours, strict=True)):
        if dt is None or hour is None:
            raise ExportError(f"row {index}: dt and hour partition a table and cannot be NULL")
        day = dt.isoformat() if isinstance(dt, (date, datetime)) else str(dt)
        groups.setdefault((day[:10], int(hour)), []).append(index)
    rest = table.drop_columns(["dt", "hour"])
    return [
        (dt, hour, rest.take(pa.array(indexes))) for (dt, hour), indexes in sorted(groups.items())
    ]


def export_table(
    table: pa.Table,
    destination: Destination,
    name: str,
    existing: set[str] | frozenset[str] = frozenset(),
    append: bool = False,
    now: datetime | None = None,
) -> ExportReport:
    """Write a result into the lake as table ``name`` (Parquet in the Hive layout).

    ``existing`` are the lake's table names: a name among them is refused unless
    ``append``.
    """
    if not COLUMN_NAME_RE.match(name) or name in RESERVED_FOLDERS:
        raise ExportError(f"table name {name!r}: letters, digits and _, not starting with a digit")
    if name in existing and not append:
        raise ExportError(f"table {name!r} already exists in the lake (--append adds rows)")
    if table.num_rows == 0:
        raise ExportError("the result has no rows: a lake table needs at least one file")
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    run = uuid.uuid4().hex[:8]
    files = 0
    written = 0
    for dt, hour, rows in _partitions(table, now):
        data = _serialize(rows, "parquet")
        destination.put(f"{name}/dt={dt}/hour={hour:02d}/ctas-{stamp}-{run}.parquet", data)
        files += 1
        written += len(data)
    return ExportReport(destination.uri(name), table.num_rows, files, written)

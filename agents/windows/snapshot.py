"""A window's open windows as one Parquet file in the lake, for the query service.

Open windows live in the agent's memory and its changelog; the query service reads the
lake only (no Kafka client). So the agent writes what it holds open — the rows
``windows show`` prints, ``is_final`` false — to ``_firelake/windows/<name>/open.parquet``
(:func:`sinks.paths.open_windows_key`), replaced whole through the lake's atomic put
(:mod:`sinks.destinations`: a renamed temporary file locally, one ``PutObject`` on S3), at
most every few seconds and when the agent stops. A reader sees one whole snapshot, never
a part. The query service shows it as the view ``<name>_open`` (:mod:`queries.open_windows`).

The snapshot is bounded: at most ``max_open_windows`` rows (the state's own bound for fixed
windows and sessions; sliding windows keep their newest open results). Tumbling and hopping
windows come straight from their columnar state through DuckDB, so a snapshot of 10 000
open windows costs milliseconds, not a Python row each. Timestamps are
``TIMESTAMP WITH TIME ZONE`` (UTC) like the lake's, and ``snapshot_time`` says when the
agent took it, ``watermark`` how far event time had come.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from agents.windows.processor import WindowProcessor, json_value
from agents.windows.state import FixedState
from agents.windows.watermarks import NO_TIME
from firelake.config import FirelakeConfig
from sinks.destinations import Destination, lake_destination
from sinks.paths import open_windows_key

__all__ = ["SNAPSHOT_SECONDS", "SnapshotWriter", "snapshot_bytes", "snapshot_table"]

log = logging.getLogger("firelake.window")

#: Most often an active window worker replaces its open-windows snapshot in the lake.
SNAPSHOT_SECONDS = 3.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME = pa.timestamp("us", tz="UTC")


def _moment(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def snapshot_table(processor: WindowProcessor, now: float) -> pa.Table:
    """The open windows of ``processor`` now (epoch seconds ``now``) as a table."""
    spec = processor.spec
    state = processor.state
    if isinstance(state, FixedState):
        return _fixed(processor, state, now)
    results = state.open_results()
    limit = spec.max_open_windows
    if len(results) > limit:
        results = sorted(results, key=lambda r: r.end)[-limit:]
    columns: dict[str, list[Any]] = {"window_start": [], "window_end": []}
    for name in (*spec.key, *processor.columns):
        columns[name] = []
    for result in results:
        columns["window_start"].append(_moment(result.start))
        columns["window_end"].append(_moment(result.end))
        for name, value in zip(spec.key, result.key, strict=True):
            columns[name].append(json_value(value))
        for name, value in zip(processor.columns, result.values, strict=True):
            columns[name].append(json_value(value))
    arrays: dict[str, pa.Array] = {}
    for name, values in columns.items():
        if name in ("window_start", "window_end"):
            arrays[name] = pa.array(values, _TIME)
        else:
            try:
                arrays[name] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                # Mixed types in one column (a key that is a number here, text there).
                arrays[name] = pa.array([None if v is None else str(v) for v in values])
            if pa.types.is_null(arrays[name].type):
                arrays[name] = arrays[name].cast(pa.string())
    rows = len(results)
    arrays["event_count"] = pa.array([r.count for r in results], pa.int64())
    arrays["is_final"] = pa.array([False] * rows, pa.bool_())
    return _stamped(processor, pa.table(arrays), now)


def _fixed(processor: WindowProcessor, state: FixedState, now: float) -> pa.Table:
    """Tumbling and hopping windows: the table straight from the columnar state (no row
    in Python), key and aggregate types as DuckDB computed them."""
    spec = processor.spec
    table = state.open_table(spec.key, processor.columns, spec.max_open_windows)
    rows = table.num_rows
    if not rows:
        return _empty(processor)
    for name in ("window_start", "window_end"):
        at = table.schema.get_field_index(name)
        table = table.set_column(at, name, pc.cast(table[name], pa.int64()).cast(_TIME))
    for at, field in enumerate(table.schema):
        if pa.types.is_decimal(field.type) and field.type.scale == 0 and field.type.precision > 18:
            # DuckDB's HUGEINT sums: 64-bit integers when they fit, as the output stream has.
            try:
                table = table.set_column(at, field.name, table[at].cast(pa.int64()))
            except pa.ArrowInvalid:
                pass
    table = table.append_column("is_final", pa.array([False] * rows, pa.bool_()))
    return _stamped(processor, table, now)


def _stamped(processor: WindowProcessor, table: pa.Table, now: float) -> pa.Table:
    mark = processor.watermark()
    watermark = _moment(mark) if mark != NO_TIME else None
    taken = _moment(round(now * 1_000_000))
    rows = table.num_rows
    table = table.append_column("snapshot_time", pa.array([taken] * rows, _TIME))
    return table.append_column("watermark", pa.array([watermark] * rows, _TIME))


def _empty(processor: WindowProcessor) -> pa.Table:
    """No open window: the columns, no rows (types of the generic path's empty table)."""
    spec = processor.spec
    fields = [pa.field("window_start", _TIME), pa.field("window_end", _TIME)]
    fields += [pa.field(name, pa.string()) for name in (*spec.key, *processor.columns)]
    fields += [
        pa.field("event_count", pa.int64()),
        pa.field("is_final", pa.bool_()),
        pa.field("snapshot_time", _TIME),
        pa.field("watermark", _TIME),
    ]
    return pa.schema(fields).empty_table()


def snapshot_bytes(processor: WindowProcessor, now: float) -> bytes:
    """:func:`snapshot_table` as Parquet file bytes (zstd)."""
    sink = io.BytesIO()
    pq.write_table(snapshot_table(processor, now), sink, compression="zstd")
    return sink.getvalue()


class SnapshotWriter:
    """Replaces one window's snapshot in the lake when due (both engines use it).

    A snapshot that cannot be written is logged and tried again later: it is a view for
    readers, never part of the window's exactly-once state."""

    def __init__(
        self, config: FirelakeConfig, name: str, interval: float = SNAPSHOT_SECONDS
    ) -> None:
        self.config = config
        self.name = name
        self.key = open_windows_key(name)
        self.interval = interval
        self.lake: Destination | None = None
        self.next = 0.0

    async def write(self, processor: WindowProcessor | None, force: bool = False) -> bool:
        """Write ``processor``'s open windows if the interval passed (or ``force``);
        whether a snapshot was written."""
        return await self.put(self.take(processor, force))

    def take(self, processor: WindowProcessor | None, force: bool = False) -> bytes | None:
        """The snapshot file of ``processor``'s open windows if one is due (or ``force``),
        else None. Synchronous: a worker takes it under its lock and puts it after, so a
        rebalance never waits for the lake's PUT."""
        now = time.monotonic()
        if processor is None or (not force and now < self.next):
            return None
        self.next = now + self.interval
        try:
            return snapshot_bytes(processor, time.time())
        except Exception as exc:  # a reader's view must not stop the window
            log.warning("window %s: open-windows snapshot not built: %r", self.name, exc)
            return None

    async def put(self, data: bytes | None) -> bool:
        """Replace the lake's snapshot with ``data`` (from :meth:`take`; None: nothing to
        write); whether it was written."""
        if data is None:
            return False
        try:
            if self.lake is None:
                self.lake = lake_destination(self.config)
            await asyncio.to_thread(self.lake.put, self.key, data)
        except Exception as exc:  # a reader's view must not stop the window
            log.warning("window %s: open-windows snapshot not written: %r", self.name, exc)
            return False
        return True

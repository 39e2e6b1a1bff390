"""Records as they arrived, as JSON lines: Firehose without format conversion.

A sink with ``format = "json"`` parses nothing. Each flush writes the records of its
messages byte for byte, one a line, in offset order, as one file under the table's prefix
— gzip by default (Firehose's ``CompressionFormat`` GZIP), or plain (UNCOMPRESSED). The
file is named by the batch's offset range (:func:`sinks.paths.json_file_name`) and written
under the same intent → files → state protocol as Parquet files
(``ProgressStore.commit_flush``), so a crash mid-flush leaves no extra copy: recovery
deletes the unfinished flush's file and the flush is written again under the same name.

Like Firehose, the folder is chosen by arrival time, not by anything inside a record: the
prefix's ``!{timestamp:…}`` is rendered with the batch's latest Kafka timestamp (as the raw
archive does), so one flush is one file.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Sequence
from datetime import UTC, datetime

from firelake.grammars.prefix import render
from sinks.archive import GZIP_LEVEL
from sinks.buffer import Batch
from sinks.parquet import FlushPlan, Layout
from sinks.paths import json_file_name
from sinks.progress import PlannedFile

__all__ = ["jsonlines_bytes", "line_count", "plan_json_flush"]


def _lines(values: Sequence[bytes]) -> bytes:
    # A value is one record or an envelope of records already separated by newlines:
    # each ends with exactly the newline it lacks, nothing else is touched.
    return b"".join(v if v.endswith(b"\n") else v + b"\n" for v in values if v)


def jsonlines_bytes(values: Sequence[bytes], compression: str = "gzip") -> bytes:
    """Message values as one JSON-lines file: gzip, or plain for ``none``."""
    data = _lines(values)
    return gzip.compress(data, compresslevel=GZIP_LEVEL) if compression == "gzip" else data


def line_count(values: Sequence[bytes]) -> int:
    """Records (lines) the values hold, counted the way the file will hold them."""
    return sum(v.count(b"\n") + (0 if v.endswith(b"\n") else 1) for v in values if v)


def plan_json_flush(batch: Batch, layout: Layout, now: datetime | None = None) -> FlushPlan:
    """Plan a batch's one JSON-lines file (none for a batch of empty messages).

    ``now`` is unused (the arrival time places the file); it keeps the signature of
    :func:`sinks.parquet.plan_flush`, so the sink calls either.
    """
    if not batch.values:
        return FlushPlan((), 0, ())
    arrived = datetime.fromtimestamp((batch.max_timestamp_ms or 0) / 1000, UTC)
    folder = render(layout.prefix, when=arrived, table=layout.table)
    name = json_file_name(
        batch.topic,
        batch.partition,
        batch.first_offset,
        batch.last_offset,
        gzip=layout.compression == "gzip",
    )
    planned = PlannedFile(
        f"{layout.table}/{folder}{name}",
        functools.partial(jsonlines_bytes, batch.values, layout.compression),
    )
    return FlushPlan((planned,), line_count(batch.values), ())

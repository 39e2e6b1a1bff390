"""Unit tests of sinks.parquet: conversion, folders, error isolation, flush plans."""

from __future__ import annotations

import base64
import gzip
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from firelake.config import DLQ_SCHEMA, FieldSpec, Schema, SinkConfig
from firelake.grammars.prefix import parse_prefix
from firelake.testing import sample_event
from sinks import parquet
from sinks.archive import decode_entry
from sinks.buffer import Batch
from sinks.parquet import (
    Layout,
    NotAnEventError,
    arrow_schema,
    convert,
    folder_chunks,
    plan_flush,
    rows_by_folder,
    to_table,
)
from sinks.progress import ProgressStore

SCHEMA = Schema(
    name="mixed",
    fields=(
        FieldSpec("id", "string", True),
        FieldSpec("at", "timestamp", True),
        FieldSpec("n", "int"),
        FieldSpec("x", "float"),
        FieldSpec("ok", "bool"),
        FieldSpec("note", "string"),
    ),
    time_field="at",
)


def ndjson(*events: dict) -> bytes:
    return b"\n".join(orjson.dumps(e) for e in events)


def event(i: int, at: str = "2026-11-29T08:15:00.000000Z", **extra) -> dict:
    return {"id": f"e{i}", "at": at, "n": i, "x": i / 2, "ok": i % 2 == 0, **extra}


FALLBACK_MS = int(datetime(2026, 11, 30, 12, 30, tzinfo=UTC).timestamp() * 1000)


def layout(table: str = "t", *, archive: bool = False, **sink) -> Layout:
    spec = SinkConfig(name="s", table=table, archive=archive, **sink)
    return Layout.of(spec, SCHEMA)


def batch(
    values: list[bytes],
    first: int = 0,
    topic: str = "events",
    partition: int = 1,
    schema: Schema = SCHEMA,
    prefix: str = SinkConfig.prefix,
) -> Batch:
    """A batch as the sink buffers it: converted, cut by folder."""
    offsets = tuple(range(first, first + len(values)))
    conversion = convert(values, offsets, schema, [FALLBACK_MS] * len(values))
    chunks, _folders = folder_chunks(
        conversion,
        parse_prefix(prefix),
        time_field=schema.time_field,
        fallback_ms=FALLBACK_MS,
        table="t",
    )
    return Batch(
        topic=topic,
        partition=partition,
        values=tuple(values),
        offsets=offsets,
        first_offset=first,
        last_offset=first + len(values) - 1,
        events=sum(v.count(b"\n") + 1 for v in values),
        nbytes=sum(map(len, values)),
        max_timestamp_ms=FALLBACK_MS,
        chunks=tuple(chunks),
        bad=conversion.bad,
    )


def test_arrow_schema_maps_every_type() -> None:
    assert arrow_schema(SCHEMA) == pa.schema(
        [
            ("id", pa.string()),
            ("at", pa.timestamp("us", tz="UTC")),
            ("n", pa.int64()),
            ("x", pa.float64()),
            ("ok", pa.bool_()),
            ("note", pa.string()),
        ]
    )


def test_to_table_types_values_and_microsecond_utc_timestamps() -> None:
    table = to_table(
        ndjson(
            event(1, at="2026-11-29T08:15:00.123456Z", note="hi"),
            event(2, at="2026-11-29T10:15:00+02:00"),
        ),
        SCHEMA,
    )
    assert table.schema == arrow_schema(SCHEMA)
    rows = table.to_pylist()
    assert rows[0]["at"] == datetime(2026, 11, 29, 8, 15, 0, 123456, tzinfo=UTC)
    assert rows[1]["at"] == datetime(2026, 11, 29, 8, 15, tzinfo=UTC)
    assert (rows[0]["n"], rows[0]["x"], rows[0]["ok"], rows[0]["note"]) == (1, 0.5, False, "hi")
    assert rows[1]["note"] is None


def test_to_table_keeps_schema_order_fills_missing_and_ignores_extra_fields() -> None:
    line = b'{"ok":true,"extra":{"deep":[1]},"at":"2026-11-29T08:00:00Z","id":"a"}'
    table = to_table(line, SCHEMA)
    assert table.column_names == ["id", "at", "n", "x", "ok", "note"]
    assert table.to_pylist()[0] == {
        "id": "a",
        "at": datetime(2026, 11, 29, 8, tzinfo=UTC),
        "n": None,
        "x": None,
        "ok": True,
        "note": None,
    }


def test_to_table_of_nothing_is_an_empty_table_with_the_schema() -> None:
    assert to_table(b"", SCHEMA).schema == arrow_schema(SCHEMA)


# Inputs that could crash pyarrow (a chunk starting with null) are only tried in a child
# process, below, so a regression fails one test instead of killing the session.
@pytest.mark.parametrize("data", [b"[1]", b'"text"', b'{"id":"a"}\nnull', b"{}"])
def test_lines_that_are_no_event_are_refused(data: bytes) -> None:
    with pytest.raises(NotAnEventError):
        to_table(data, SCHEMA)


def test_blank_lines_are_skipped() -> None:
    table = to_table(b'\n{"id":"a"}\n\n  \n{"id":"b"}\n', SCHEMA)
    assert table.column("id").to_pylist() == ["a", "b"]


def test_large_inputs_parse_in_chunks_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet, "CHUNK_SIZE", 200)
    long_note = "x" * 1_000  # a line longer than a chunk makes a longer chunk
    events = [event(i, note=long_note if i == 7 else None) for i in range(60)]
    table = to_table(ndjson(*events), SCHEMA)
    assert table.column("id").to_pylist() == [f"e{i}" for i in range(60)]
    assert table.column("note").to_pylist()[7] == long_note


_NULL_AT_EVERY_POSITION = r"""
import orjson
from firelake.config import FieldSpec, Schema
from sinks import parquet

parquet.CHUNK_SIZE = 48  # about two lines a chunk, so null lands on every chunk start
schema = Schema("s", (FieldSpec("id", "string"), FieldSpec("n", "int")), "")
lines = [orjson.dumps({"id": f"e{i}", "n": i}) for i in range(30)]
for position in range(31):
    for bad in (b"null", b" null", b"{}"):
        value = b"\n".join([*lines[:position], bad, *lines[position:]])
        result = parquet.convert([value], [5], schema)
        assert result.table.num_rows == 30, (position, bad)
        found = [(b.offset, b.index, b.line) for b in result.bad]
        assert found == [(5, position, bad)], (position, bad, found)
print("ok")
"""


def test_null_lines_anywhere_never_crash_and_are_reported() -> None:
    # In a child process: if pyarrow segfaulted, this test fails instead of the session.
    done = subprocess.run(
        [sys.executable, "-c", _NULL_AT_EVERY_POSITION],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]


def test_convert_parses_a_good_batch_in_one_table() -> None:
    values = [ndjson(event(0), event(1)), ndjson(event(2))]
    result = convert(values, [10, 11], SCHEMA)
    assert result.bad == ()
    assert result.table.column("id").to_pylist() == ["e0", "e1", "e2"]


def test_convert_isolates_bad_lines_and_keeps_the_rest_in_order() -> None:
    values = [
        ndjson(event(0), event(1)),
        ndjson(event(2))
        + b'\n{"id":"bad-time","at":"yesterday"}\nnull\n\n'
        + ndjson(event(3), {"id": "bad-int", "at": "2026-11-29T08:00:00Z", "n": "seven"}),
        b"\xff\xfe not json",
        ndjson(event(4)),
    ]
    result = convert(values, [100, 101, 102, 103], SCHEMA)
    assert result.table.column("id").to_pylist() == ["e0", "e1", "e2", "e3", "e4"]
    assert [(b.offset, b.index) for b in result.bad] == [(101, 1), (101, 2), (101, 5), (102, 0)]
    reasons = [b.reason for b in result.bad]
    assert "timestamp" in reasons[0] and "yesterday" in reasons[0]
    assert reasons[1] == "event is not a JSON object"
    assert "n" in reasons[2]
    assert result.bad[3].line == b"\xff\xfe not json"


def test_split_by_hour_across_two_hours_and_two_days() -> None:
    table = to_table(
        ndjson(
            event(0, at="2026-11-29T23:59:59.999999Z"),
            event(1, at="2026-11-30T00:00:00Z"),
            event(2, at="2026-11-29T23:00:00Z"),
            event(3, at="2026-11-30T00:30:00Z"),
            event(4, at="2026-11-29T22:10:00Z"),
        ),
        SCHEMA,
    )
    conversion = parquet.Conversion((table,), ())
    prefix = parse_prefix(SinkConfig.prefix)
    chunks, folders = folder_chunks(conversion, prefix, time_field="at", fallback_ms=0, table="t")
    assert len(folders) == 3
    groups = rows_by_folder(chunks)
    assert {k: [t.column("id").to_pylist() for t in v] for k, v in groups.items()} == {
        "dt=2026-11-29/hour=22/": [["e4"]],
        "dt=2026-11-29/hour=23/": [["e0", "e2"]],
        "dt=2026-11-30/hour=00/": [["e1", "e3"]],
    }


def test_rows_without_a_time_go_to_the_fallback_hour_and_keep_a_null() -> None:
    table = to_table(ndjson(event(0), {"id": "no-time"}), SCHEMA)
    fallback = int(datetime(2026, 12, 1, 5, 59, tzinfo=UTC).timestamp() * 1000)
    conversion = parquet.Conversion((table,), ())
    prefix = parse_prefix(SinkConfig.prefix)
    groups = rows_by_folder(
        folder_chunks(conversion, prefix, time_field="at", fallback_ms=fallback, table="t")[0]
    )
    assert {k: sum(t.num_rows for t in v) for k, v in groups.items()} == {
        "dt=2026-11-29/hour=08/": 1,
        "dt=2026-12-01/hour=05/": 1,
    }
    assert groups["dt=2026-12-01/hour=05/"][0].column("at").to_pylist() == [None]
    no_time = rows_by_folder(
        folder_chunks(conversion, prefix, time_field="", fallback_ms=fallback, table="t")[0]
    )
    assert {k: sum(t.num_rows for t in v) for k, v in no_time.items()} == {
        "dt=2026-12-01/hour=05/": 2
    }


def _normalized(n: int) -> dict:
    evt = sample_event(n, "start")
    evt["event_time"] = evt["event_time"].replace("Z", ".000000Z")
    return evt


def test_a_flush_writes_zstd_parquet_per_hour_that_duckdb_reads(lake: Path) -> None:
    from firelake.config import load_config

    schema = load_config(environ={}).schemas["playback"]
    events = [_normalized(n * 60) for n in range(90)]  # 08:00 .. 09:29
    values = [ndjson(*events[:50]), ndjson(*events[50:])]
    plan = plan_flush(
        batch(values, first=7, schema=schema), Layout.of(SinkConfig(table="playback"), schema)
    )
    assert plan.rows == 90 and plan.bad == ()
    ProgressStore(lake, "s").commit_flush("events", 1, 7, 8, plan.files)

    written = sorted(
        p.relative_to(lake / "playback").as_posix() for p in (lake / "playback").rglob("*")
    )
    name = "part-events-p1-00000000000000000007-00000000000000000008.parquet"
    assert written == [
        "dt=2026-11-29",
        "dt=2026-11-29/hour=08",
        f"dt=2026-11-29/hour=08/{name}",
        "dt=2026-11-29/hour=09",
        f"dt=2026-11-29/hour=09/{name}",
    ]
    meta = pq.ParquetFile(lake / "playback" / "dt=2026-11-29" / "hour=08" / name).metadata
    assert meta.num_rows == 60
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert meta.schema.to_arrow_schema() == arrow_schema(schema)

    glob = f"{lake}/playback/**/*.parquet"
    rows = duckdb.sql(
        f"select hour, count(*), count(distinct event_id), min(event_time), max(position_seconds)"
        f" from read_parquet('{glob}', hive_partitioning=true, hive_types={{'hour': INTEGER}})"
        " group by hour order by hour"
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(8, 60, 60), (9, 30, 30)]
    assert rows[0][3] == datetime(2026, 11, 29, 8, tzinfo=UTC)
    assert rows[1][4] == (89 * 60) % 3600  # sample_event: position_seconds = n % 3600


def test_a_flush_with_bad_lines_writes_them_to_the_error_prefix(lake: Path) -> None:
    values = [ndjson(event(0), {"id": "bad", "at": "nope"}), b"[1,2]"]
    now = datetime(2026, 12, 24, 18, tzinfo=UTC)
    plan = plan_flush(batch(values), layout(), now=now)
    ProgressStore(lake, "s").commit_flush("events", 1, 0, 1, plan.files)
    assert plan.rows == 1
    folder = lake / "_errors" / "t" / "format-conversion-failed" / "dt=2026-12-24"
    (error_file,) = folder.iterdir()
    records = [orjson.loads(line) for line in error_file.read_bytes().splitlines()]
    assert [(r["sourceOffset"], r["sourceIndex"]) for r in records] == [(0, 1), (1, 0)]
    first = records[0]
    # Firehose's error envelope, plus where the record came from.
    assert base64.b64decode(first["rawData"]) == b'{"id":"bad","at":"nope"}'
    assert first["attemptsMade"] == 1 and first["arrivalTimestamp"] == FALLBACK_MS
    assert first["errorCode"] == "DataFormatConversion.MalformedData"
    assert "nope" in first["errorMessage"]
    assert first["sourceTopic"] == "events" and first["sourcePartition"] == 1
    assert records[1]["errorMessage"] == "event is not a JSON object"


def test_the_dlq_schema_converts_dlq_records() -> None:
    record = {
        "failed_at": "2026-11-29T08:00:00.000001Z",
        "router": "r",
        "error_type": "validation",
        "reason": "missing user_id",
        "source_topic": "raw",
        "source_partition": 2,
        "source_offset": 99,
        "source_index": 3,
        "attempts": 1,
        "payload": "{}",
        "payload_base64": None,
    }
    table = to_table(orjson.dumps(record), DLQ_SCHEMA)
    assert table.to_pylist()[0]["failed_at"] == datetime(2026, 11, 29, 8, 0, 0, 1, tzinfo=UTC)
    assert table.to_pylist()[0]["source_offset"] == 99


def test_no_temporary_files_remain_after_a_flush(lake: Path) -> None:
    plan = plan_flush(batch([ndjson(event(0))]), layout())
    ProgressStore(lake, "s").commit_flush("events", 1, 0, 0, plan.files)
    leftovers = [p for p in lake.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_the_archive_holds_every_raw_line_good_or_bad(lake: Path) -> None:
    values = [ndjson(event(0), event(1)), b"[1,2]", ndjson(event(2))]
    plan = plan_flush(batch(values), layout(archive=True))
    ProgressStore(lake, "s").commit_flush("events", 1, 0, 2, plan.files)
    (archive,) = (lake / "_archive" / "t").rglob("*.jsonl.gz")
    assert archive.parent.relative_to(lake).as_posix() == "_archive/t/dt=2026-11-30/hour=12"
    entries = [decode_entry(e) for e in gzip.decompress(archive.read_bytes()).splitlines()]
    assert [(e.value, e.partition, e.offset, e.index) for e in entries] == [
        (orjson.dumps(event(0)), 1, 0, 0),
        (orjson.dumps(event(1)), 1, 0, 1),
        (b"[1,2]", 1, 1, 0),
        (orjson.dumps(event(2)), 1, 2, 0),
    ]


def test_field_partitions_make_one_file_per_folder_with_the_same_name(lake: Path) -> None:
    prefix = "ok=!{partitionKeyFromQuery:ok}/dt=!{timestamp:yyyy-MM-dd}/"
    plan = plan_flush(
        batch([ndjson(*(event(i) for i in range(5)))], prefix=prefix), layout(prefix=prefix)
    )
    keys = [f.key for f in plan.files]
    name = "part-events-p1-00000000000000000000-00000000000000000000.parquet"
    assert keys == [f"t/ok=false/dt=2026-11-29/{name}", f"t/ok=true/dt=2026-11-29/{name}"]
    ProgressStore(lake, "s").commit_flush("events", 1, 0, 0, plan.files)
    rows = duckdb.sql(
        f"select ok, count(*) from read_parquet('{lake}/t/**/*.parquet', hive_partitioning=true) "
        "group by ok order by ok"
    ).fetchall()
    assert rows == [("false", 2), ("true", 3)]  # hive values read as text


def test_inferred_schemas_widen_and_split_when_they_cannot(lake: Path) -> None:
    values = [b'{"a":1,"b":"x"}\n{"a":2.5,"c":[1]}', b'{"a":"text"}']
    result = convert(values, [0, 1], None)
    assert result.bad == ()
    assert sum(t.num_rows for t in result.tables) == 3
    assert len(result.tables) == 2  # int/float widen to double; text cannot
    assert result.tables[0].schema.field("a").type == pa.float64()

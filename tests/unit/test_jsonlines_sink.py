"""JSON-lines sinks (Firehose without format conversion): settings, files, exactly-once."""

from __future__ import annotations

import gzip

import pytest

from firelake.config import ConfigError
from firelake.testing import example_config
from sinks.buffer import Batch
from sinks.destinations import LocalDestination
from sinks.jsonlines import jsonlines_bytes, line_count, plan_json_flush
from sinks.parquet import Layout
from sinks.progress import ProgressStore

#: 2026-11-28 10:15 UTC
ARRIVED_MS = 1_795_860_900_000


def json_sink(**extra: object) -> dict[str, object]:
    return {"raw": {"stream": "raw-events", "table": "raw_json", "format": "json", **extra}}


def config(tmp_path, **extra: object):
    return example_config("127.0.0.1:1", tmp_path, "t", sinks=json_sink(**extra))


def raw_sink(tmp_path, **extra: object):
    """The JSON sink of the example with ``extra`` settings (names get a test suffix)."""
    cfg = config(tmp_path, **extra)
    return next(s for s in cfg.sinks.values() if s.format == "json")


def test_json_sinks_default_to_gzip_and_take_none(tmp_path) -> None:
    assert raw_sink(tmp_path).compression == "gzip"
    assert raw_sink(tmp_path, compression="none").compression == "none"
    parquet = example_config("127.0.0.1:1", tmp_path, "t")
    assert all(s.format == "parquet" for s in parquet.sinks.values())


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ({"compression": "zstd"}, "compression", "gzip or none"),
        ({"format": "csv"}, "format", "parquet"),
        ({"archive": True}, "archive", "raw records already"),
        (
            {"prefix": "p=!{partitionKeyFromQuery:product}/dt=!{timestamp:yyyy-MM-dd}/"},
            "prefix",
            "arrival time",
        ),
    ],
)
def test_json_sink_settings_refused_name_the_key(tmp_path, extra, key, reason) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, **extra)
    assert caught.value.key.startswith("sinks.raw") and caught.value.key.endswith(f".{key}")
    assert reason in caught.value.reason


def batch(values: list[bytes], first: int = 7) -> Batch:
    return Batch(
        topic="raw_events",
        partition=2,
        values=tuple(values),
        offsets=tuple(range(first, first + len(values))),
        first_offset=first,
        last_offset=first + len(values) - 1,
        events=line_count(values),
        nbytes=sum(map(len, values)),
        max_timestamp_ms=ARRIVED_MS,
    )


# Records exactly as sent: key order, spacing and unicode are not normalised.
VALUES = [b'{"b": 1,  "a":"\xc3\xa9"}\n{"a":2}', b'{"z":null}', b'{"a":3}\n']


def test_records_written_byte_for_byte_one_a_line() -> None:
    data = gzip.decompress(jsonlines_bytes(VALUES))
    assert data == b'{"b": 1,  "a":"\xc3\xa9"}\n{"a":2}\n{"z":null}\n{"a":3}\n'
    assert jsonlines_bytes(VALUES, "none") == data
    assert line_count(VALUES) == 4 == data.count(b"\n")


def test_a_flush_is_one_file_under_the_prefix_named_by_its_offsets(tmp_path) -> None:
    spec = raw_sink(tmp_path)
    plan = plan_json_flush(batch(VALUES), Layout.of(spec, None))
    assert plan.rows == 4 and not plan.bad
    (planned,) = plan.files
    assert planned.key == (
        "raw_json/dt=2026-11-28/hour=10/"
        "part-raw_events-p2-00000000000000000007-00000000000000000009.jsonl.gz"
    )
    plain = raw_sink(tmp_path, compression="none")
    (other,) = plan_json_flush(batch(VALUES), Layout.of(plain, None)).files
    assert other.key.endswith("-00000000000000000009.jsonl")
    assert other.data() == gzip.decompress(planned.data())
    assert plan_json_flush(batch([]), Layout.of(spec, None)).files == ()


def test_recovery_deletes_an_unfinished_flush_and_the_rewrite_replaces_it(tmp_path) -> None:
    spec = raw_sink(tmp_path)
    destination = LocalDestination(tmp_path / "lake")
    plan = plan_json_flush(batch(VALUES), Layout.of(spec, None))

    def crash(point: str) -> None:
        if point == "after_files":
            raise KeyboardInterrupt  # stands in for SIGKILL between files and state

    store = ProgressStore(destination, "raw")
    assert store.recover("raw_events", 2) is None
    with pytest.raises(KeyboardInterrupt):
        store.commit_flush("raw_events", 2, 7, 9, plan.files, crash)
    assert (tmp_path / "lake" / plan.files[0].key).exists()
    again = ProgressStore(destination, "raw")
    assert again.recover("raw_events", 2) is None  # no state: resume from the start
    assert not (tmp_path / "lake" / plan.files[0].key).exists()
    state = again.commit_flush("raw_events", 2, 7, 9, plan.files)
    assert state.files == (plan.files[0].key,)
    assert again.recover("raw_events", 2) == 10

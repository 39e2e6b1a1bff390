"""PutRecords parsing, validation against the Kinesis limits, and grouping by partition."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from firelake.config import IngestConfig
from streams.partitioning import partition_for_key
from streams.records import (
    RECORD_FRAMING_BYTES,
    Limits,
    RequestError,
    check_body_size,
    parse_put_records,
)

MiB = 1024 * 1024


def body(records: Any) -> bytes:
    return orjson.dumps({"records": records})


def refused(raw: bytes, partitions: int = 4, limits: Limits | None = None) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_put_records(raw, partitions, limits)
    return info.value


def test_groups_by_partition_in_request_order() -> None:
    records = [{"data": {"n": i, "s": "ä"}, "partition_key": f"user-{i % 7}"} for i in range(40)]
    parsed = parse_put_records(body(records), 4)
    assert parsed.record_count == 40
    seen: list[int] = []
    for batch in parsed.batches:
        assert batch.indexes == sorted(batch.indexes)
        assert len(batch) == len(batch.keys) == len(batch.indexes)
        for line, key, index in zip(batch.lines, batch.keys, batch.indexes, strict=True):
            assert key == records[index]["partition_key"]
            assert partition_for_key(key, 4) == batch.partition
            assert orjson.loads(line) == records[index]["data"]
            assert b"\n" not in line and b" " not in line
        seen.extend(batch.indexes)
    assert sorted(seen) == list(range(40))
    assert len({b.partition for b in parsed.batches}) == len(parsed.batches) > 1
    # Batches come in order of their partition's first record.
    firsts = [b.indexes[0] for b in parsed.batches]
    assert firsts == sorted(firsts)


def test_payload_counts_data_and_key_bytes() -> None:
    parsed = parse_put_records(body([{"data": [1, 2], "partition_key": "ö"}]), 1)
    assert parsed.payload_bytes == len(b"[1,2]") + len("ö".encode())


@pytest.mark.parametrize("data", [None, 0, 1.5, "text", [1, "a"], {"nested": {"x": [True]}}])
def test_any_json_value_is_data(data: Any) -> None:
    parsed = parse_put_records(body([{"data": data, "partition_key": "k"}]), 2)
    assert orjson.loads(parsed.batches[0].lines[0]) == data


def test_pretty_printed_json_becomes_compact_lines() -> None:
    raw = (
        b'{\n  "records": [\n    {"data": {"a": "x\\ny", "b": [1, 2]},\n'
        b' "partition_key": "k"}\n  ]\n}'
    )
    line = parse_put_records(raw, 1).batches[0].lines[0]
    assert line == b'{"a":"x\\ny","b":[1,2]}'


def test_malformed_json_names_the_position() -> None:
    err = refused(b'{"records": [1, 2')
    assert (err.status, err.code) == (400, "InvalidJSON")
    assert "byte 17" in err.message and "line 1" in err.message


def test_empty_body_is_malformed() -> None:
    err = refused(b"")
    assert (err.status, err.code) == (400, "InvalidJSON")
    assert "empty" in err.message


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"[]", "got array"),
        (b'"x"', "got string"),
        (b"{}", "no 'records'"),
        (b'{"records": {}}', "must be an array, got object"),
        (b'{"records": null}', "no 'records'"),
        (b'{"records": []}', "empty"),
        (b'{"records": [], "stream": "x"}', "unknown request field 'stream'"),
    ],
)
def test_request_shape_errors(raw: bytes, fragment: str) -> None:
    err = refused(raw)
    assert (err.status, err.code) == (400, "InvalidRequest")
    assert fragment in err.message


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ("x", "records[1]: must be an object, got string"),
        ([1], "records[1]: must be an object, got array"),
        ({"partition_key": "k"}, "records[1]: missing field 'data'"),
        ({"data": 1}, "records[1]: missing field 'partition_key'"),
        ({"data": 1, "partition_key": "k", "x": 2}, "unknown field 'x'"),
        ({"Data": 1, "PartitionKey": "k"}, "missing field 'data'"),
        ({"data": 1, "partition_key": 7}, "partition_key must be a string, got number"),
        ({"data": 1, "partition_key": None}, "partition_key must be a string, got null"),
        ({"data": 1, "partition_key": ""}, "partition_key must be 1 to 256 characters, got 0"),
        ({"data": 1, "partition_key": "k" * 257}, "1 to 256 characters, got 257"),
    ],
)
def test_invalid_record_refuses_the_whole_request(record: Any, fragment: str) -> None:
    err = refused(body([{"data": 0, "partition_key": "ok"}, record]))
    assert (err.status, err.code) == (400, "InvalidRecord")
    assert fragment in err.message


def test_partition_key_limit_counts_characters_not_bytes() -> None:
    key = "ä" * 256  # 512 UTF-8 bytes, 256 characters: allowed, as in Kinesis
    parsed = parse_put_records(body([{"data": 1, "partition_key": key}]), 3)
    assert parsed.batches[0].keys == [key]


def test_exactly_max_records_is_accepted() -> None:
    records = [{"data": i, "partition_key": str(i)} for i in range(500)]
    assert parse_put_records(body(records), 4).record_count == 500


def test_one_record_over_max_is_refused() -> None:
    records = [{"data": i, "partition_key": str(i)} for i in range(501)]
    err = refused(body(records))
    assert (err.status, err.code) == (400, "TooManyRecords")
    assert "501 records" in err.message and "500" in err.message


def test_record_of_exactly_one_mib_is_accepted() -> None:
    data = "x" * (MiB - 2)  # plus its two quotes: exactly 1 MiB of JSON
    parsed = parse_put_records(body([{"data": data, "partition_key": "k"}]), 1)
    assert len(parsed.batches[0].lines[0]) == MiB


def test_record_one_byte_over_one_mib_is_refused() -> None:
    records = [{"data": 1, "partition_key": "k"}, {"data": "x" * (MiB - 1), "partition_key": "k"}]
    err = refused(body(records))
    assert (err.status, err.code) == (413, "RecordTooLarge")
    assert "records[1]" in err.message and str(MiB + 1) in err.message


def test_payload_over_five_mib_is_refused() -> None:
    # Five records of exactly 1 MiB plus their keys: over 5 MiB, each record within limits.
    records = [{"data": "x" * (MiB - 2), "partition_key": f"k{i}"} for i in range(5)]
    err = refused(body(records))
    assert (err.status, err.code) == (413, "RequestTooLarge")
    assert "data and partition keys" in err.message


def test_payload_of_exactly_five_mib_is_accepted() -> None:
    # Each record: MiB - 1 bytes of JSON (with its quotes) and a one-byte key = 1 MiB.
    records = [{"data": "x" * (MiB - 3), "partition_key": f"{i}"} for i in range(5)]
    parsed = parse_put_records(body(records), 2)
    assert parsed.payload_bytes == 5 * MiB


def test_payload_one_byte_over_five_mib_is_refused() -> None:
    records = [{"data": "x" * (MiB - 3), "partition_key": f"{i}"} for i in range(5)]
    records[4]["partition_key"] = "44"
    err = refused(body(records))
    assert (err.status, err.code) == (413, "RequestTooLarge")
    assert str(5 * MiB + 1) in err.message


def test_body_over_the_hard_limit_is_refused_before_parsing() -> None:
    limits = Limits()
    over = b"x" * (limits.max_body_bytes + 1)  # not JSON: refused for size first
    err = refused(over, limits=limits)
    assert (err.status, err.code) == (413, "RequestTooLarge")
    assert str(limits.max_body_bytes) in err.message


def test_check_body_size() -> None:
    limits = Limits()
    assert limits.max_body_bytes == 5 * MiB + 500 * RECORD_FRAMING_BYTES
    check_body_size(None, limits)
    check_body_size(limits.max_body_bytes, limits)
    with pytest.raises(RequestError) as info:
        check_body_size(50 * MiB, limits)
    assert info.value.status == 413
    assert "52428800 bytes" in info.value.message


def test_limits_from_config() -> None:
    limits = Limits.from_config(
        IngestConfig(max_records=3, max_record_bytes=10, max_request_bytes=25)
    )
    assert (limits.max_records, limits.max_record_bytes, limits.max_request_bytes) == (3, 10, 25)
    four = [{"data": 1, "partition_key": "k"}] * 4
    assert refused(body(four), limits=limits).code == "TooManyRecords"
    big = [{"data": "x" * 9, "partition_key": "k"}]  # 11 bytes of JSON
    assert refused(body(big), limits=limits).code == "RecordTooLarge"
    many = [{"data": "x" * 6, "partition_key": "k"}] * 3  # 3 x (8 + 1) = 27 bytes
    assert refused(body(many), limits=limits).code == "RequestTooLarge"


def test_error_body_shape() -> None:
    err = RequestError(400, "InvalidRecord", "records[0]: bad")
    assert err.body() == {"error": {"code": "InvalidRecord", "message": "records[0]: bad"}}
    assert "400 InvalidRecord" in str(err)

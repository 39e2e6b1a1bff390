"""Kinesis/Firehose record validation, shard choice, the storage plan and the quota."""

from __future__ import annotations

import base64

import pytest

from api.protocol import AwsError, check_content_type, parse_body, parse_target
from api.records import (
    AwsLimits,
    PlannedRecord,
    ShardQuota,
    by_partition,
    firehose_line,
    is_envelope_line,
    parse_firehose_records,
    parse_kinesis_records,
    plan_segments,
)
from streams.partitioning import partition_for_key


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_kinesis_records_pick_shards_by_md5_and_explicit_hash() -> None:
    payload = {
        "Records": [{"Data": b64(b"{}"), "PartitionKey": f"user-{i}"} for i in range(20)]
        + [{"Data": b64(b"x"), "PartitionKey": "k", "ExplicitHashKey": "0"}]
    }
    parsed = parse_kinesis_records(payload, AwsLimits())
    grouped = by_partition(parsed, 4)
    for partition, records in grouped.items():
        for record in records:
            if record.index < 20:
                assert partition_for_key(record.key, 4) == partition
    assert grouped[0][-1].index == 20


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        ({"Records": []}, "ValidationException", "greater than or equal to 1"),
        (
            {"Records": [{"Data": b64(b"x"), "PartitionKey": "k"}] * 501},
            "ValidationException",
            "500",
        ),
        (
            {"Records": [{"Data": b64(b"x" * 11), "PartitionKey": "k"}]},
            "ValidationException",
            "records.1.member.data",
        ),
        (
            {"Records": [{"Data": b64(b"x"), "PartitionKey": ""}]},
            "ValidationException",
            "partitionKey",
        ),
        ({"Records": [{"Data": "%%", "PartitionKey": "k"}]}, "SerializationException", "base64"),
        (
            {"Records": [{"Data": b64(b"x"), "PartitionKey": "k", "ExplicitHashKey": "01"}]},
            "ValidationException",
            "explicitHashKey",
        ),
        (
            {"Records": [{"Data": b64(b"x" * 8), "PartitionKey": "k"}] * 3},
            "InvalidArgumentException",
            "size exceeds",
        ),
        ({"Records": ["x"]}, "SerializationException", "must be an object"),
    ],
)
def test_kinesis_refusals_name_the_field(payload: dict, code: str, fragment: str) -> None:
    limits = AwsLimits(max_records=500, max_record_bytes=10, max_request_bytes=20)
    with pytest.raises(AwsError) as info:
        parse_kinesis_records(payload, limits)
    assert (info.value.status, info.value.code) == (400, code)
    assert fragment in info.value.message


def test_plan_keeps_order_with_envelopes_and_singles() -> None:
    datas = [b'{"a":1}', b'{"b":2}', b"\x00bin\n", b'{"c":3}', b"[1]", b'{"d":\n4}']
    records = [PlannedRecord(i, d, "k") for i, d in enumerate(datas)]
    segments = plan_segments(2, records, batch=True)
    assert [(s.envelope, s.raw, [r.index for r in s.records]) for s in segments] == [
        (True, False, [0, 1]),
        (False, True, [2]),
        (True, False, [3]),
        (False, False, [4]),
        (False, False, [5]),
    ]
    assert all(not s.envelope for s in plan_segments(0, records, batch=False))
    assert is_envelope_line(b'{"x":"\\n"}') and not is_envelope_line(b'{"x":1')


def test_firehose_records_and_normalisation() -> None:
    out = parse_firehose_records({"Records": [{"Data": b64(b'{"a": 1}\n')}]})
    assert out == [b'{"a": 1}\n']
    assert firehose_line(b'{"a": 1}\n') == b'{"a": 1}'
    assert firehose_line(b'{\n "a": 1\n}\n') == b'{"a":1}'
    assert firehose_line(b"text\nmore\n") == b"text\nmore"
    with pytest.raises(AwsError, match="4 MiB"):
        parse_firehose_records({"Records": [{"Data": b64(b"x" * 1_000_000)}] * 5})
    with pytest.raises(AwsError, match="1024000"):
        parse_firehose_records({"Record": {"Data": b64(b"x" * 1_024_001)}}, single=True)


def test_shard_quota_refills() -> None:
    now = [0.0]
    quota = ShardQuota(bytes_per_s=100, records_per_s=2, clock=lambda: now[0])
    assert quota.admit("s", 0, 10) and quota.admit("s", 0, 10)
    assert not quota.admit("s", 0, 10)
    assert quota.admit("s", 1, 10)  # per shard
    now[0] = 0.5
    assert quota.admit("s", 0, 10) and not quota.admit("s", 0, 10)
    now[0] = 10
    assert not quota.admit("s", 0, 101)  # bigger than a second's bytes


def test_protocol_checks() -> None:
    assert parse_target("Kinesis_20131202.PutRecords", {"Kinesis_20131202": 1}) == (
        "Kinesis_20131202",
        "PutRecords",
    )
    for bad in (None, "nodot", "Other_1.Op"):
        with pytest.raises(AwsError) as info:
            parse_target(bad, {"Kinesis_20131202": 1})
        assert info.value.code == "UnknownOperationException"
    check_content_type("application/x-amz-json-1.1; charset=utf-8")
    with pytest.raises(AwsError, match="AWS_CBOR_DISABLE"):
        check_content_type("application/x-amz-cbor-1.1")
    assert parse_body(b"") == {}
    with pytest.raises(AwsError, match="JSON object"):
        parse_body(b"[]")


@pytest.mark.parametrize(
    "blob",
    ["", "YQ==", "YR==", "YWJj", "YQ==YQ==", "=YQ==", "YQ=", "YQ", "Y===", "YQ=\n=", " YQ==",
     "YQ== ", "YQ=a", "é", "YW\nJj", "YWJj\n", "-_8=", "+/8="],
)  # fmt: skip
def test_fast_blob_decoding_accepts_and_refuses_what_binascii_strict_does(blob: str) -> None:
    # The fast path decodes with pybase64; a blob is accepted (with the same bytes) or
    # refused (with binascii's message) exactly as the strict binascii decoding says.
    import binascii

    try:
        expected: bytes | None = binascii.a2b_base64(blob, strict_mode=True)
    except (binascii.Error, ValueError):
        expected = None
    payload = {"Records": [{"Data": blob, "PartitionKey": "k"}]}
    if expected is None:
        with pytest.raises(AwsError, match="is not valid base64"):
            parse_kinesis_records(payload, AwsLimits())
    else:
        [(record, _)] = parse_kinesis_records(payload, AwsLimits())
        assert record.data == expected

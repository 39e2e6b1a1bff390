"""Property test: malformed, truncated and oversized requests at every AWS target.

Whatever arrives, the answer is an AWS-shaped JSON body with a 2xx/4xx status (503 only
if Kafka fails) — never a 500, never a dropped connection — and every record answered as
written is in Kafka with exactly its bytes.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.backend import AwsOptions
from api.records import firehose_line
from api.server import IngestThread
from firelake.testing import example_config, unique_suffix
from streams import envelope
from streams.sequence import decode_sequence
from streams.topics import delete_topics

pytestmark = pytest.mark.kafka

SUFFIX = unique_suffix()
RAW = f"raw-events-{SUFFIX}"
DELIVERY = f"fz-{SUFFIX}"
NAMES = [RAW, f"fz0-{SUFFIX}", f"fz1-{SUFFIX}", f"page-events-{SUFFIX}", "", "x" * 200, "bad name"]

KINESIS = [
    "CreateStream",
    "DeleteStream",
    "ListStreams",
    "DescribeStream",
    "DescribeStreamSummary",
    "ListShards",
    "PutRecord",
    "PutRecords",
    "GetShardIterator",
    "GetRecords",
    "IncreaseStreamRetentionPeriod",
    "DecreaseStreamRetentionPeriod",
    "MergeShards",
]
FIREHOSE = [
    "CreateDeliveryStream",
    "DescribeDeliveryStream",
    "ListDeliveryStreams",
    "DeleteDeliveryStream",
    "PutRecord",
    "PutRecordBatch",
]
GLUE = ["CreateTable", "GetTable", "DeleteTable"]
TARGETS = (
    [f"Kinesis_20131202.{op}" for op in KINESIS]
    + [f"Firehose_20150804.{op}" for op in FIREHOSE]
    + [f"AWSGlue.{op}" for op in GLUE]
)


class State:
    """The server, a persistent connection, and every write answered as successful."""

    def __init__(self, server: IngestThread) -> None:
        self.server = server
        url = urlparse(server.url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self.written: list[tuple[str, str, bytes]] = []  # (topic, sequence, bytes)
        self.iterators: list[str] = []

    def post(self, target: str | None, body: bytes, content_type: str) -> tuple[int, Any]:
        headers = {"Content-Type": content_type}
        if target is not None:
            headers["X-Amz-Target"] = target
        for attempt in range(2):
            try:
                self.conn.request("POST", "/", body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # The server may close a connection after refusing an oversized body
                # unread; that answer still arrived. Only a second failure is a fault.
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt:
                    raise
        assert data, f"empty answer ({response.status}) to {target}"
        return response.status, json.loads(data)


blobs = st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode())
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
anything = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
# Mostly well-formed values (so that writes happen and get checked), sometimes anything.
stream_names = st.sampled_from([RAW] * 6 + NAMES)
keys = st.text(min_size=1, max_size=20)
kinesis_record = st.fixed_dictionaries(
    {
        "Data": st.one_of(blobs, blobs, anything),
        "PartitionKey": st.one_of(keys, keys, st.text(max_size=260), anything),
    },
    optional={"ExplicitHashKey": st.one_of(st.integers(0, 2**129).map(str), anything)},
)
firehose_record = st.fixed_dictionaries({"Data": st.one_of(blobs, blobs, anything)})
good_kinesis_record = st.fixed_dictionaries({"Data": blobs, "PartitionKey": keys})
good_firehose_record = st.fixed_dictionaries({"Data": blobs})


@st.composite
def payloads(draw: st.DrawFn, target: str) -> dict[str, Any]:
    """A body shaped like the target's input, with any field possibly wrong."""
    op = target.split(".", 1)[1]
    body: dict[str, Any] = {}
    if target.startswith("Kinesis"):
        body["StreamName"] = draw(st.one_of(stream_names, anything))
        if op == "PutRecords":
            valid = st.lists(good_kinesis_record, min_size=1, max_size=12)
            body["Records"] = draw(st.one_of(valid, valid, st.lists(kinesis_record), anything))
        elif op == "PutRecord":
            body.update(draw(st.one_of(good_kinesis_record, kinesis_record)))
        elif op == "CreateStream":
            body["ShardCount"] = draw(st.one_of(st.integers(-2, 3), st.just(10**6), anything))
            body["StreamName"] = draw(st.sampled_from([f"fz0-{SUFFIX}", f"fz1-{SUFFIX}", "_x"]))
        elif op == "GetShardIterator":
            body["ShardId"] = draw(
                st.one_of(st.sampled_from(["shardId-000000000001", "0", "9"]), anything)
            )
            body["ShardIteratorType"] = draw(
                st.one_of(
                    st.sampled_from(
                        [
                            "TRIM_HORIZON",
                            "LATEST",
                            "AT_SEQUENCE_NUMBER",
                            "AFTER_SEQUENCE_NUMBER",
                            "AT_TIMESTAMP",
                        ]
                    ),
                    anything,
                )
            )
            body["StartingSequenceNumber"] = draw(
                st.one_of(st.integers(0, 2**80).map(str), anything)
            )
            body["Timestamp"] = draw(st.one_of(st.floats(0, 4e9), anything))
        elif op == "GetRecords":
            body = {
                "ShardIterator": draw(st.one_of(st.text(max_size=600), anything)),
                "Limit": draw(st.one_of(st.integers(-1, 20_000), anything)),
            }
        elif "Retention" in op:
            body["RetentionPeriodHours"] = draw(st.one_of(st.integers(0, 10_000), anything))
        elif op in ("ListStreams", "ListShards", "DescribeStream"):
            body.update(
                draw(
                    st.dictionaries(
                        st.sampled_from(
                            [
                                "Limit",
                                "NextToken",
                                "ExclusiveStartShardId",
                                "MaxResults",
                                "ExclusiveStartStreamName",
                                "ShardFilter",
                            ]
                        ),
                        anything,
                        max_size=3,
                    )
                )
            )
    elif target.startswith("Firehose"):
        body["DeliveryStreamName"] = draw(st.sampled_from([DELIVERY] * 4 + ["nope", "", 5]))
        if op == "DeleteDeliveryStream" and body["DeliveryStreamName"] == DELIVERY:
            # Deleting it would fail the writes of the checks that run after the fuzzer.
            body["DeliveryStreamName"] = "nope"
        if op == "PutRecordBatch":
            valid = st.lists(good_firehose_record, min_size=1, max_size=12)
            body["Records"] = draw(st.one_of(valid, valid, st.lists(firehose_record), anything))
        elif op == "PutRecord":
            body["Record"] = draw(st.one_of(good_firehose_record, firehose_record, anything))
        elif op == "CreateDeliveryStream":
            body["DeliveryStreamName"] = f"fzd-{SUFFIX}"
            body["ExtendedS3DestinationConfiguration"] = draw(
                st.one_of(
                    anything,
                    st.fixed_dictionaries(
                        {
                            "RoleARN": st.just("arn:aws:iam::000000000000:role/r"),
                            "BucketARN": st.just("arn:aws:s3:::b"),
                            "Prefix": st.one_of(st.just(f"fz_{SUFFIX}/"), st.text(max_size=30)),
                            "BufferingHints": anything,
                            "DataFormatConversionConfiguration": anything,
                        }
                    ),
                )
            )
    else:
        body = draw(
            st.dictionaries(
                st.sampled_from(["DatabaseName", "Name", "TableInput"]), anything, max_size=3
            )
        )
    return body


@st.composite
def requests(draw: st.DrawFn) -> tuple[str | None, bytes, str]:
    # Header values are printable ASCII on the wire; anything else is the client's error.
    printable = st.characters(min_codepoint=33, max_codepoint=126)
    puts = st.sampled_from(
        [
            "Kinesis_20131202.PutRecords",
            "Kinesis_20131202.PutRecord",
            "Firehose_20150804.PutRecordBatch",
            "Firehose_20150804.PutRecord",
        ]
    )
    target = draw(
        st.one_of(
            puts,
            st.sampled_from(TARGETS),
            st.sampled_from(TARGETS),
            st.none(),
            st.text(alphabet=printable, max_size=40),
        )
    )
    content_type = draw(
        st.sampled_from(
            ["application/x-amz-json-1.1"] * 8 + ["text/plain", "", "application/x-amz-cbor-1.1"]
        )
    )
    if target in TARGETS:
        body = json.dumps(draw(payloads(target))).encode()
    else:
        body = json.dumps(draw(anything)).encode()
    how = draw(st.sampled_from(["whole"] * 6 + ["truncated", "garbage", "empty"]))
    if how == "truncated" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif how == "garbage":
        body = draw(st.binary(max_size=200))
    elif how == "empty":
        body = b""
    return target, body, content_type


def _remember(state: State, target: str, body: bytes, answer: dict[str, Any]) -> None:
    """Record what a 200 answer claims was written, to check it against Kafka later."""
    sent = json.loads(body) if body.strip() else {}
    if target == "Kinesis_20131202.PutRecords":
        for record, result in zip(sent["Records"], answer["Records"], strict=True):
            if "SequenceNumber" in result:
                state.written.append(
                    (sent["StreamName"], result["SequenceNumber"], base64.b64decode(record["Data"]))
                )
    elif target == "Kinesis_20131202.PutRecord":
        state.written.append(
            (sent["StreamName"], answer["SequenceNumber"], base64.b64decode(sent["Data"]))
        )
    elif target == "Firehose_20150804.PutRecordBatch":
        for record, result in zip(sent["Records"], answer["RequestResponses"], strict=True):
            if "RecordId" in result:
                data = firehose_line(base64.b64decode(record["Data"]))
                state.written.append((f"firehose-{DELIVERY}", result["RecordId"], data))
    elif target == "Firehose_20150804.PutRecord":
        data = firehose_line(base64.b64decode(sent["Record"]["Data"]))
        state.written.append((f"firehose-{DELIVERY}", answer["RecordId"], data))
    elif target == "Kinesis_20131202.GetShardIterator":
        state.iterators.append(answer["ShardIterator"])


@pytest.fixture(scope="module")
def state(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[State]:
    lake = tmp_path_factory.mktemp("fuzz-lake")
    cfg = example_config(kafka_bootstrap, lake, SUFFIX)
    registry_topic = f"_firelake_registry-{SUFFIX}"
    server = IngestThread(cfg, port=0, aws=AwsOptions(registry_topic=registry_topic))
    server.start()
    fuzz = State(server)
    status, answer = fuzz.post(
        "Firehose_20150804.CreateDeliveryStream",
        json.dumps(
            {
                "DeliveryStreamName": DELIVERY,
                "ExtendedS3DestinationConfiguration": {
                    "RoleARN": "arn:aws:iam::000000000000:role/r",
                    "BucketARN": "arn:aws:s3:::b",
                    "Prefix": f"fzt_{SUFFIX}/",
                    "DataFormatConversionConfiguration": {
                        "SchemaConfiguration": {"TableName": "page"}
                    },
                },
            }
        ).encode(),
        "application/x-amz-json-1.1",
    )
    assert status == 200, answer
    try:
        yield fuzz
    finally:
        fuzz.conn.close()
        server.stop()
        delete_topics(
            kafka_bootstrap,
            [
                registry_topic,
                *cfg.streams,
                f"fz0-{SUFFIX}",
                f"fz1-{SUFFIX}",
                f"firehose-{DELIVERY}",
                f"firehose-fzd-{SUFFIX}",
            ],
        )


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(request=requests())
def test_any_request_gets_an_aws_shaped_answer(
    state: State, request: tuple[str | None, bytes, str]
) -> None:
    target, body, content_type = request
    status, answer = state.post(target, body, content_type)
    assert status in (200, 400, 403, 503), (status, answer)
    if status != 200:
        assert set(answer) == {"__type", "message"} and answer["message"], answer
        if status == 503:
            assert answer["__type"] == "ServiceUnavailableException", answer
    elif target in TARGETS:
        _remember(state, target, body, answer)


def test_oversized_and_reused_iterators(state: State) -> None:
    """Oversized bodies at every put target; then GetRecords with the iterators handed out."""
    huge = json.dumps(
        {
            "StreamName": RAW,
            "DeliveryStreamName": DELIVERY,
            "Records": [{"Data": "QUFB" * (3 * 1024 * 1024), "PartitionKey": "k"}],
        }
    ).encode()
    for target in (
        "Kinesis_20131202.PutRecords",
        "Kinesis_20131202.PutRecord",
        "Firehose_20150804.PutRecordBatch",
        "AWSGlue.CreateTable",
    ):
        status, answer = state.post(target, huge, "application/x-amz-json-1.1")
        assert status == 400 and answer["__type"] == "InvalidArgumentException", answer
    for iterator in state.iterators[:20]:
        status, answer = state.post(
            "Kinesis_20131202.GetRecords",
            json.dumps({"ShardIterator": iterator, "Limit": 50}).encode(),
            "application/x-amz-json-1.1",
        )
        assert status in (200, 400), answer


def test_every_record_answered_as_written_is_in_kafka(state: State, kafka_bootstrap: str) -> None:
    """Runs after the property test (file order): check each success against Kafka."""
    # Seeded, varied valid writes on top of what the fuzzer got through (it shrinks
    # towards tiny records): JSON lines, binary, embedded newlines, empty data.
    rng = random.Random(3)
    samples = [b"", b"{}", b'{"a":1}', b'{"a":\n1}', b"\x00\xff\n", b"plain text", b"[1,2]"]
    for round_ in range(20):
        records = [
            rng.choice(samples) + (str(rng.random()).encode() if rng.random() < 0.5 else b"")
            for _ in range(rng.randint(1, 40))
        ]
        if round_ % 2:
            target = "Kinesis_20131202.PutRecords"
            body = {
                "StreamName": RAW,
                "Records": [
                    {"Data": base64.b64encode(r).decode(), "PartitionKey": f"k{rng.randint(0, 9)}"}
                    for r in records
                ],
            }
        else:
            target = "Firehose_20150804.PutRecordBatch"
            body = {
                "DeliveryStreamName": DELIVERY,
                "Records": [{"Data": base64.b64encode(r).decode()} for r in records],
            }
        raw = json.dumps(body).encode()
        status, answer = state.post(target, raw, "application/x-amz-json-1.1")
        assert status == 200, answer
        _remember(state, target, raw, answer)
    written = state.written
    assert len(written) >= 200

    async def check() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            for topic, sequence, data in written:
                position = decode_sequence(sequence)
                tp = TopicPartition(topic, position.partition)
                consumer.assign([tp])
                consumer.seek(tp, position.offset)
                batch = (await consumer.getmany(tp, timeout_ms=5000, max_records=1)).get(tp, [])
                assert batch and batch[0].offset == position.offset, (topic, sequence)
                message = batch[0]
                lines = envelope.decode(message.value, message.headers, message.key).lines
                assert lines[position.index] == data, (topic, sequence)
        finally:
            await consumer.stop()

    asyncio.run(asyncio.wait_for(check(), 120))

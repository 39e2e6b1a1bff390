"""Kinesis Data Streams operations (``Kinesis_20131202.*``) over Kafka topics.

A stream is a topic and shard ``shardId-00000000000N`` is partition N. Streams declared in
firelake.toml are listed and readable; CreateStream makes a topic with the conventions of
:mod:`streams.topics` (message size, retention) and records it in the registry so that
every Firelake process sees it. Puts are validated and planned by
:mod:`api.records` (envelopes for single-line JSON objects, single messages for
other bytes — see its docstring); each record's sequence number encodes partition, offset
and envelope index (:mod:`streams.sequence`), so AT/AFTER_SEQUENCE_NUMBER resume exactly.

GetRecords de-aggregates envelopes into single records, like the KCL does with KPL
aggregates, and is bounded like Kinesis: at most ``Limit`` (≤ 10 000) records and about
10 MiB per call. It reads with a pooled consumer assigned to the one partition, so no
consumer group is involved.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from api.backend import ACCOUNT_ID, AwsBackend, Operation, RequestContext
from api.protocol import (
    AwsError,
    encode_blob,
    opt_int,
    opt_object,
    opt_string,
    opt_timestamp,
    req_string,
)
from api.records import (
    HEADER_DATA,
    RAW_BYTES,
    PlannedRecord,
    Segment,
    by_partition,
    parse_kinesis_records,
    plan_segments,
)
from api.shard_iterators import (
    ShardPosition,
    decode_iterator,
    encode_iterator,
    parse_shard_id,
    shard_id,
    shard_ranges,
)
from firelake.config import FirelakeConfig, StreamConfig
from streams import envelope
from streams.deadline import remaining, unknown
from streams.kafka_errors import THROTTLED, record_failure, settle
from streams.resources import DELIVERY_TOPIC_PREFIX, StreamEntry, stream_key
from streams.sequence import decode_sequence, encode_sequence
from streams.topics import TopicMismatchError, delete_topics, ensure_topics, topic_configs

__all__ = [
    "GET_RECORDS_MAX_BYTES",
    "GET_RECORDS_MAX_RECORDS",
    "MAX_SHARDS",
    "THROTTLED",
    "KinesisApi",
    "record_error",
    "send_segments",
    "write_segments",
]

MiB = 1024 * 1024

#: GetRecords bounds (Kinesis: 10 000 records, 10 MiB).
GET_RECORDS_MAX_RECORDS = 10_000
GET_RECORDS_MAX_BYTES = 10 * MiB
#: Most shards a stream may have here.
MAX_SHARDS = 10_000
#: Retention bounds of the Kinesis API, in hours.
MIN_RETENTION_HOURS = 24
MAX_RETENTION_HOURS = 8760
#: Shards of an ON_DEMAND stream (Kinesis starts those with 4).
ON_DEMAND_SHARDS = 4
#: How long one GetRecords waits for data it knows is there.
FETCH_WAIT_S = 2.0


_STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]+")
_STREAM_ARN = re.compile(r"arn:aws.*:kinesis:.*:\d{12}:stream/(\S+)")


def record_error(exc: BaseException) -> dict[str, str]:
    """A per-record failure as Kinesis reports it."""
    code, message = record_failure(exc)
    return {"ErrorCode": code, "ErrorMessage": message}


async def send_segments(
    producer: AIOKafkaProducer,
    topic: str,
    segments: list[Segment],
    arrival_ms: int,
    with_keys: bool = True,
) -> list[Any]:
    """Produce segments in order; per segment its record metadata or its exception.

    All sends are queued before any ack is awaited, so one request's messages travel in
    the same producer batches; the idempotent producer keeps their order per partition.
    """
    pending: list[Any] = []
    # send() waits for metadata or buffer space while the broker is away: bounded by the
    # request's answer deadline (streams.deadline), like the acknowledgements in settle().
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(remaining()):
            for segment in segments:
                records = segment.records
                try:
                    if segment.envelope:
                        value, headers = envelope.encode(
                            [r.data for r in records],
                            [r.key for r in records] if with_keys else None,
                            arrival_ms,
                            arrival_ms,
                        )
                    else:
                        value = records[0].data
                        headers = [(HEADER_DATA, RAW_BYTES)] if segment.raw else []
                    key = records[0].key.encode("utf-8") if with_keys else None
                    pending.append(
                        await producer.send(
                            topic,
                            value,
                            key=key,
                            partition=segment.partition,
                            timestamp_ms=arrival_ms,
                            headers=headers,
                        )
                    )
                except Exception as exc:
                    pending.append(exc)
    pending += [unknown() for _ in range(len(segments) - len(pending))]
    return await settle(pending)


async def write_segments(
    producer: AIOKafkaProducer,
    topic: str,
    segments: list[Segment],
    arrival_ms: int,
    with_keys: bool = True,
) -> dict[int, tuple[int, int, int] | BaseException]:
    """:func:`send_segments`, per record: request index -> (partition, offset, index)."""
    outcomes = await send_segments(producer, topic, segments, arrival_ms, with_keys)
    results: dict[int, tuple[int, int, int] | BaseException] = {}
    for segment, outcome in zip(segments, outcomes, strict=True):
        for position, record in enumerate(segment.records):
            if isinstance(outcome, BaseException):
                results[record.index] = outcome
            else:
                results[record.index] = (outcome.partition, outcome.offset, position)
    return results


def _sequences(partition: int, offset: int, count: int) -> list[str]:
    """The sequence numbers of records 0..count-1 of the message at (partition, offset).

    An envelope's numbers are evenly spaced (the index is a field of the number), so they
    are computed by addition instead of ``count`` calls of encode_sequence; the last one
    is checked against encode_sequence, which also range-checks the index, so a change of
    the encoding cannot go unnoticed here.
    """
    first = encode_sequence(partition, offset, 0)
    if count == 1:
        return [first]
    start = int(first)
    step = int(encode_sequence(partition, offset, 1)) - start
    sequences = [str(start + i * step) for i in range(count)]
    if sequences[-1] != encode_sequence(partition, offset, count - 1):
        return [encode_sequence(partition, offset, i) for i in range(count)]
    return sequences


def _name_from(payload: Mapping[str, Any]) -> str:
    """The stream a request names by StreamName or StreamARN."""
    name = opt_string(payload, "StreamName", min_len=1, max_len=128, pattern=_STREAM_NAME)
    if name is not None:
        return name
    arn = opt_string(payload, "StreamARN", min_len=1, max_len=2048)
    if arn is not None:
        match = _STREAM_ARN.fullmatch(arn)
        if match is None:
            raise AwsError(
                400, "InvalidArgumentException", f"StreamARN {arn!r} is not a stream ARN"
            )
        return match[1]
    raise AwsError(
        400, "InvalidArgumentException", "Either StreamName or StreamARN should be provided."
    )


def _token(data: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode("ascii")


def _untoken(token: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, orjson.JSONDecodeError):
        raise AwsError(
            400, "InvalidArgumentException", f"NextToken {token[:40]!r} is not valid"
        ) from None


class KinesisApi:
    """The Kinesis operations of one backend."""

    def __init__(self, backend: AwsBackend) -> None:
        self.backend = backend

    @property
    def operations(self) -> dict[str, Operation]:
        return {
            "CreateStream": self.create_stream,
            "DeleteStream": self.delete_stream,
            "ListStreams": self.list_streams,
            "DescribeStream": self.describe_stream,
            "DescribeStreamSummary": self.describe_stream_summary,
            "ListShards": self.list_shards,
            "PutRecord": self.put_record,
            "PutRecords": self.put_records,
            "GetShardIterator": self.get_shard_iterator,
            "GetRecords": self.get_records,
            "IncreaseStreamRetentionPeriod": self.increase_retention,
            "DecreaseStreamRetentionPeriod": self.decrease_retention,
        }

    # ----------------------------------------------------------------- stream admin

    def _created_s(self, name: str) -> float:
        entry = self.backend.registry.streams.get(name)
        return (entry.created_ms if entry else self.backend.started_ms) / 1000

    def _summary(self, spec: StreamConfig, ctx: RequestContext) -> dict[str, Any]:
        return {
            "StreamName": spec.name,
            "StreamARN": ctx.stream_arn(spec.name),
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": {"StreamMode": "PROVISIONED"},
            "RetentionPeriodHours": spec.retention_hours,
            "StreamCreationTimestamp": self._created_s(spec.name),
            "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
            "EncryptionType": "NONE",
        }

    async def create_stream(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        name = req_string(payload, "StreamName", min_len=1, max_len=128, pattern=_STREAM_NAME)
        if not name[0].isalnum() or name.startswith(DELIVERY_TOPIC_PREFIX):
            raise AwsError(
                400,
                "InvalidArgumentException",
                f"StreamName {name!r}: Firelake stream names start with a letter or digit and "
                f"do not start with {DELIVERY_TOPIC_PREFIX!r} (delivery stream topics)",
            )
        mode = opt_object(payload, "StreamModeDetails").get("StreamMode", "PROVISIONED")
        if mode not in ("PROVISIONED", "ON_DEMAND"):
            raise AwsError(400, "InvalidArgumentException", f"StreamMode {mode!r} is unknown")
        shards = opt_int(payload, "ShardCount", low=1)
        if shards is None:
            if mode == "PROVISIONED":
                raise AwsError(
                    400,
                    "InvalidArgumentException",
                    "ShardCount is required for a PROVISIONED stream",
                )
            shards = ON_DEMAND_SHARDS
        if shards > MAX_SHARDS:
            raise AwsError(
                400,
                "LimitExceededException",
                f"ShardCount {shards} exceeds the limit of {MAX_SHARDS} shards per stream",
            )
        await self.backend.refresh(force=True)
        if name in self.backend.streams():
            raise AwsError(
                400,
                "ResourceInUseException",
                f"Stream {name} under account {ACCOUNT_ID} already exists.",
            )
        entry = StreamEntry(
            name=name,
            partitions=shards,
            retention_hours=MIN_RETENTION_HOURS,
            created_ms=time.time_ns() // 1_000_000,
        )
        # The backend's [kafka] settings: client id prefix and replication factor.
        kafka = self.backend.config.kafka
        single = FirelakeConfig(kafka=kafka, streams={name: entry.stream_config()})
        try:
            await asyncio.to_thread(ensure_topics, single, self.backend.bootstrap)
        except TopicMismatchError as exc:
            raise AwsError(
                400,
                "ResourceInUseException",
                f"a Kafka topic {name!r} with {exc.actual} partitions exists already; delete "
                f"it or create the stream with ShardCount {exc.actual}",
            ) from exc
        await self.backend.store.put(stream_key(name), entry.to_json())
        return {}

    def _registry_stream(self, name: str, action: str) -> StreamEntry:
        entry = self.backend.registry.streams.get(name)
        if entry is None:
            raise AwsError(
                400,
                "ResourceInUseException",
                f"Stream {name} is declared in {self.backend.config.source}; {action} it there",
            )
        return entry

    async def delete_stream(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        name = _name_from(payload)
        await self.backend.stream(name)
        self._registry_stream(name, "remove")
        users = [d.name for d in self.backend.registry.deliveries.values() if d.topic == name]
        if users:
            raise AwsError(
                400,
                "ResourceInUseException",
                f"Stream {name} is the source of delivery stream(s) {', '.join(users)}; "
                "delete them first",
            )
        await asyncio.to_thread(delete_topics, self.backend.bootstrap, [name])
        await self.backend.store.put(stream_key(name), None)
        return {}

    async def list_streams(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        limit = opt_int(payload, "Limit", low=1, high=10_000) or 100
        start = opt_string(payload, "ExclusiveStartStreamName", min_len=1, max_len=128)
        token = opt_string(payload, "NextToken", min_len=1)
        if token is not None:
            start = str(_untoken(token))
        await self.backend.refresh()
        names = sorted(self.backend.streams())
        if start is not None:
            names = [n for n in names if n > start]
        page, more = names[:limit], len(names) > limit
        answer: dict[str, Any] = {
            "StreamNames": page,
            "HasMoreStreams": more,
            "StreamSummaries": [
                {
                    "StreamName": n,
                    "StreamARN": ctx.stream_arn(n),
                    "StreamStatus": "ACTIVE",
                    "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                    "StreamCreationTimestamp": self._created_s(n),
                }
                for n in page
            ],
        }
        if more:
            answer["NextToken"] = _token(page[-1])
        return answer

    async def describe_stream(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        spec = await self.backend.stream(_name_from(payload))
        limit = opt_int(payload, "Limit", low=1, high=10_000) or 100
        start = opt_string(payload, "ExclusiveStartShardId", min_len=1, max_len=128)
        shards = shard_ranges(spec.partitions)
        if start is not None:
            shards = [s for s in shards if str(s["ShardId"]) > start]
        description = self._summary(spec, ctx)
        description.update({"Shards": shards[:limit], "HasMoreShards": len(shards) > limit})
        return {"StreamDescription": description}

    async def describe_stream_summary(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        spec = await self.backend.stream(_name_from(payload))
        summary = self._summary(spec, ctx)
        summary.update({"OpenShardCount": spec.partitions, "ConsumerCount": 0})
        return {"StreamDescriptionSummary": summary}

    async def list_shards(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        token = opt_string(payload, "NextToken", min_len=1)
        start = opt_string(payload, "ExclusiveStartShardId", min_len=1, max_len=128)
        if token is not None:
            if payload.get("StreamName") or payload.get("StreamARN"):
                raise AwsError(
                    400,
                    "InvalidArgumentException",
                    "NextToken and StreamName cannot be provided together.",
                )
            decoded = _untoken(token)
            if not (isinstance(decoded, list) and len(decoded) == 2):
                raise AwsError(400, "InvalidArgumentException", "NextToken is not valid")
            name, start = str(decoded[0]), str(decoded[1])
        else:
            name = _name_from(payload)
        spec = await self.backend.stream(name)
        limit = opt_int(payload, "MaxResults", low=1, high=10_000) or 1000
        shard_filter = opt_object(payload, "ShardFilter")
        if shard_filter.get("Type") == "AFTER_SHARD_ID" and shard_filter.get("ShardId"):
            start = str(shard_filter["ShardId"])
        shards = shard_ranges(spec.partitions)
        if start is not None:
            shards = [s for s in shards if str(s["ShardId"]) > start]
        answer: dict[str, Any] = {"Shards": shards[:limit]}
        if len(shards) > limit:
            answer["NextToken"] = _token([name, shards[limit - 1]["ShardId"]])
        return answer

    async def _retention(self, payload: dict[str, Any], increase: bool) -> dict[str, Any]:
        name = _name_from(payload)
        hours = opt_int(payload, "RetentionPeriodHours")
        if hours is None:
            raise AwsError(400, "InvalidArgumentException", "RetentionPeriodHours is required")
        await self.backend.stream(name)
        entry = self._registry_stream(name, "change streams.<name>.retention_hours")
        word = "Increase" if increase else "Decrease"
        if not MIN_RETENTION_HOURS <= hours <= MAX_RETENTION_HOURS:
            raise AwsError(
                400,
                "InvalidArgumentException",
                f"Minimum allowed retention period is {MIN_RETENTION_HOURS} hours and maximum is "
                f"{MAX_RETENTION_HOURS} hours; got {hours}",
            )
        if (increase and hours < entry.retention_hours) or (
            not increase and hours > entry.retention_hours
        ):
            raise AwsError(
                400,
                "InvalidArgumentException",
                f"Requested retention period ({hours} hours) for stream {name} can not be "
                f"{'shorter' if increase else 'longer'} than existing retention period "
                f"({entry.retention_hours} hours). Use {'Decrease' if increase else 'Increase'}"
                f"StreamRetentionPeriod API instead of {word}StreamRetentionPeriod.",
            )
        updated = StreamEntry(
            name=entry.name,
            partitions=entry.partitions,
            retention_hours=hours,
            envelope=entry.envelope,
            created_ms=entry.created_ms,
        )
        await asyncio.to_thread(_alter_topic, self.backend.bootstrap, updated)
        await self.backend.store.put(stream_key(name), updated.to_json())
        return {}

    async def increase_retention(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        return await self._retention(payload, increase=True)

    async def decrease_retention(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        return await self._retention(payload, increase=False)

    # ----------------------------------------------------------------- puts

    async def _writable(self, payload: dict[str, Any]) -> StreamConfig:
        spec = await self.backend.stream(_name_from(payload))
        if spec.schema:
            raise AwsError(
                400,
                "AccessDeniedException",
                f"Stream {spec.name} carries {spec.schema!r} events written by routers; put "
                "records into a stream without a schema",
            )
        return spec

    async def _put(
        self, payload: dict[str, Any], single: bool
    ) -> tuple[StreamConfig, list[dict[str, str]]]:
        parsed = parse_kinesis_records(payload, self.backend.limits, single=single)
        spec = await self._writable(payload)
        results: list[dict[str, str]] = [{}] * len(parsed)
        quota = self.backend.options.quota
        segments: list[Segment] = []
        for partition, records in by_partition(parsed, spec.partitions).items():
            admitted: list[PlannedRecord] = []
            for record in records:
                if quota is not None and not quota.admit(spec.name, partition, len(record.data)):
                    results[record.index] = {
                        "ErrorCode": THROTTLED,
                        "ErrorMessage": f"Rate exceeded for shard {shard_id(partition)} in stream "
                        f"{spec.name} under account {ACCOUNT_ID}.",
                    }
                else:
                    admitted.append(record)
            if admitted:
                segments.extend(plan_segments(partition, admitted, spec.envelope == "batch"))
        arrival_ms = time.time_ns() // 1_000_000
        outcomes = await send_segments(self.backend.producer, spec.name, segments, arrival_ms)
        for segment, outcome in zip(segments, outcomes, strict=True):
            records = segment.records
            if isinstance(outcome, BaseException):
                error = record_error(outcome)
                for record in records:
                    results[record.index] = error
                continue
            shard = shard_id(outcome.partition)
            sequences = _sequences(outcome.partition, outcome.offset, len(records))
            for record, sequence in zip(records, sequences, strict=True):
                results[record.index] = {"SequenceNumber": sequence, "ShardId": shard}
        self.backend.count_records("kinesis", results)
        return spec, results

    async def put_records(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        _, results = await self._put(payload, single=False)
        failed = sum(1 for r in results if "ErrorCode" in r)
        return {"FailedRecordCount": failed, "Records": results, "EncryptionType": "NONE"}

    async def put_record(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        opt_string(payload, "SequenceNumberForOrdering")  # order is per shard anyway
        _, results = await self._put(payload, single=True)
        result = results[0]
        if "ErrorCode" in result:
            status = 400 if result["ErrorCode"] == THROTTLED else 503
            code = result["ErrorCode"] if status == 400 else "InternalFailureException"
            raise AwsError(status, code, result["ErrorMessage"])
        return {**result, "EncryptionType": "NONE"}

    # ----------------------------------------------------------------- reads

    async def get_shard_iterator(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        spec = await self.backend.stream(_name_from(payload))
        shard = req_string(payload, "ShardId", min_len=1, max_len=128)
        partition = parse_shard_id(shard, spec.name, spec.partitions)
        kind = req_string(payload, "ShardIteratorType")
        tp = TopicPartition(spec.name, partition)
        index = 0
        if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            sequence = payload.get("StartingSequenceNumber")
            if not isinstance(sequence, str):
                raise AwsError(
                    400,
                    "InvalidArgumentException",
                    f"StartingSequenceNumber is required for {kind}",
                )
            try:
                position = decode_sequence(sequence)
            except ValueError:
                raise AwsError(
                    400,
                    "InvalidArgumentException",
                    f"StartingSequenceNumber {sequence[:80]} used in GetShardIterator on shard "
                    f"{shard_id(partition)} in stream {spec.name} under account {ACCOUNT_ID} "
                    "is invalid.",
                ) from None
            if position.partition != partition:
                raise AwsError(
                    400,
                    "InvalidArgumentException",
                    f"StartingSequenceNumber {sequence} belongs to "
                    f"{shard_id(position.partition)}, not to {shard_id(partition)} of stream "
                    f"{spec.name}",
                )
            offset = position.offset
            index = position.index + (1 if kind == "AFTER_SEQUENCE_NUMBER" else 0)
        elif kind == "TRIM_HORIZON":
            offset = 0  # GetRecords moves it to the first offset Kafka still holds
        elif kind in ("LATEST", "AT_TIMESTAMP"):
            async with self.backend.pool.acquire() as consumer:
                if kind == "LATEST":
                    offset = (await consumer.end_offsets([tp]))[tp]
                else:
                    seconds = opt_timestamp(payload, "Timestamp")
                    if seconds is None:
                        raise AwsError(
                            400,
                            "InvalidArgumentException",
                            "Timestamp is required for AT_TIMESTAMP",
                        )
                    found = await consumer.offsets_for_times({tp: int(seconds * 1000)})
                    hit = found.get(tp)
                    offset = (
                        hit.offset if hit is not None else (await consumer.end_offsets([tp]))[tp]
                    )
        else:
            raise AwsError(
                400,
                "InvalidArgumentException",
                f"ShardIteratorType {kind!r} is not one of AT_SEQUENCE_NUMBER, "
                "AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP",
            )
        token = encode_iterator(
            ShardPosition(spec.name, partition, offset, index, time.time_ns() // 1_000_000)
        )
        return {"ShardIterator": token}

    async def get_records(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        token = req_string(payload, "ShardIterator", min_len=1, max_len=512)
        limit = opt_int(payload, "Limit", low=1, high=GET_RECORDS_MAX_RECORDS)
        limit = limit or GET_RECORDS_MAX_RECORDS
        now_ms = time.time_ns() // 1_000_000
        position = decode_iterator(token, now_ms)
        spec = await self.backend.stream(position.stream)
        if position.partition >= spec.partitions:
            raise AwsError(
                400,
                "ResourceNotFoundException",
                f"Shard {shard_id(position.partition)} in stream {spec.name} does not exist",
            )
        async with self.backend.pool.acquire() as consumer:
            records, offset, index, behind = await _fetch(
                consumer, TopicPartition(spec.name, position.partition), position, limit
            )
        next_token = encode_iterator(
            ShardPosition(spec.name, position.partition, offset, index, time.time_ns() // 1_000_000)
        )
        return {"Records": records, "NextShardIterator": next_token, "MillisBehindLatest": behind}


async def _fetch(
    consumer: AIOKafkaConsumer, tp: TopicPartition, position: ShardPosition, limit: int
) -> tuple[list[dict[str, Any]], int, int, int]:
    """Read records from ``position``: (records, next offset, next index, ms behind)."""
    consumer.assign([tp])
    begin = (await consumer.beginning_offsets([tp]))[tp]
    end = (await consumer.end_offsets([tp]))[tp]
    offset, index = position.offset, position.index
    if offset < begin:
        # Trimmed by retention: like Kinesis, continue at the oldest record still held.
        offset, index = begin, 0
    records: list[dict[str, Any]] = []
    nbytes = 0
    last_ts = 0
    full = False
    if offset < end:
        consumer.seek(tp, offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FETCH_WAIT_S
        while not full and offset < end:
            wait_ms = int(max(0.0, deadline - loop.time()) * 1000)
            batch = (await consumer.getmany(tp, timeout_ms=wait_ms, max_records=limit)).get(tp, [])
            if not batch:
                if loop.time() >= deadline:
                    break
                continue
            for message in batch:
                if message.offset < offset:
                    continue
                if message.offset > offset:
                    offset, index = message.offset, 0  # a gap (compaction, markers)
                lines, keys = _records_of(message)
                for i in range(index, len(lines)):
                    data = lines[i]
                    if len(records) >= limit or (
                        records and nbytes + len(data) > GET_RECORDS_MAX_BYTES
                    ):
                        offset, index, full = message.offset, i, True
                        break
                    nbytes += len(data)
                    records.append(
                        {
                            "SequenceNumber": encode_sequence(tp.partition, message.offset, i),
                            "ApproximateArrivalTimestamp": message.timestamp / 1000,
                            "Data": encode_blob(data),
                            "PartitionKey": keys[i] if keys is not None else "",
                            "EncryptionType": "NONE",
                        }
                    )
                    last_ts = message.timestamp
                if full:
                    break
                offset, index = message.offset + 1, 0
    behind = 0
    if offset < end and last_ts:
        behind = max(0, time.time_ns() // 1_000_000 - last_ts)
    return records, offset, index, behind


def _records_of(message: Any) -> tuple[tuple[bytes, ...], tuple[str, ...] | None]:
    """The records a Kafka message holds, and their partition keys (None if unknown)."""
    try:
        env = envelope.decode(message.value, message.headers, message.key)
    except envelope.EnvelopeError:
        # Not a well-formed envelope (an outside producer): its bytes are one record.
        key = message.key.decode("utf-8", "replace") if message.key is not None else None
        return (message.value or b"",), (key,) if key is not None else None
    keys = env.keys
    if keys is None and message.key is not None:
        keys = (message.key.decode("utf-8", "replace"),) * len(env.lines)
    return env.lines, keys


def _alter_topic(bootstrap: str, entry: StreamEntry) -> None:
    """Set a topic's retention (with every other Firelake topic setting, since
    AlterConfigs replaces the whole set)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    from streams.admin import admin_client

    with admin_client(bootstrap, "firelake-aws-admin") as admin:
        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    entry.name,
                    configs=topic_configs(entry.stream_config()),
                )
            ]
        )

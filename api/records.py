"""Records put through the Kinesis and Firehose APIs: validation, shard choice, storage plan.

Pure logic, no Kafka. A PutRecords / PutRecord / PutRecordBatch body becomes a list of
:class:`Segment` per target partition, in request order; each segment is one Kafka
message.

How raw Kinesis bytes are stored (the encoding decision)
--------------------------------------------------------
Kinesis data is arbitrary bytes, but a line of an NDJSON envelope (:mod:`streams.envelope`)
must hold no ``\\n`` and is read by routers and sinks as one JSON event. So, per partition
and in request order:

* a record whose bytes are **one JSON object on one line** (first byte ``{``, no ``\\n``,
  valid UTF-8 JSON) joins an envelope *as is*, byte for byte — the common case, and the
  one routers and sinks want;
* **any other record** (binary, text, JSON that is not an object, JSON spread over several
  lines) is its own single Kafka message whose value is exactly its bytes. Such a message
  has no ``fl-format`` header, so every reader already takes its value as one event;
  a ``fl-data: bytes`` header marks values that are not JSON at all, so a router can send
  them to its DLQ with that reason instead of failing to parse them;
* consecutive envelope-able records form one envelope, so a mixed request keeps its order
  within the shard (envelope, single, envelope, ...), and sequence numbers stay
  increasing in request order.

GetRecords therefore returns exactly the bytes that were put, whichever way they were
stored. ``envelope = "single"`` streams store every record as its own message, marked the
same way.

Firehose records are never read back, only converted to Parquet, so a Firehose record is
normalised instead: trailing whitespace (the ``\\n`` producers add as a delimiter for S3)
is dropped and a JSON object spread over several lines is re-serialised compactly; what
still is not a JSON object is stored as a single marked message and ends in the table's
error output with the sink's reason.
"""

from __future__ import annotations

import binascii
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pybase64

from api.protocol import (
    AwsError,
    decode_blob,
    field_path,
    opt_string,
    req_list,
    validation_error,
)
from streams.partitioning import HASH_KEY_MAX, cached_hash_key, hash_key

__all__ = [
    "FIREHOSE_MAX_RECORDS",
    "FIREHOSE_MAX_RECORD_BYTES",
    "FIREHOSE_MAX_REQUEST_BYTES",
    "HEADER_DATA",
    "RAW_BYTES",
    "AwsLimits",
    "PlannedRecord",
    "Segment",
    "ShardQuota",
    "by_partition",
    "firehose_line",
    "is_envelope_line",
    "is_json",
    "parse_firehose_records",
    "parse_kinesis_records",
    "plan_segments",
]

MiB = 1024 * 1024

#: Firehose PutRecordBatch: 500 records, 1,000 KiB each, 4 MiB in all.
FIREHOSE_MAX_RECORDS = 500
FIREHOSE_MAX_RECORD_BYTES = 1_024_000
FIREHOSE_MAX_REQUEST_BYTES = 4 * MiB

#: Header that marks a single message whose value is not JSON (see the module docstring).
HEADER_DATA = "fl-data"
RAW_BYTES = b"bytes"

_HASH_KEY_RE = re.compile(r"0|[1-9]\d{0,38}")


@dataclass(frozen=True, slots=True)
class AwsLimits:
    """Bounds of the AWS put operations (Kinesis' by default; [ingest] may lower them)."""

    max_records: int = 500
    max_record_bytes: int = MiB
    max_request_bytes: int = 5 * MiB


@dataclass(slots=True)
class PlannedRecord:
    """One record of a request: its request index, stored bytes and partition key."""

    index: int
    data: bytes
    key: str


@dataclass(slots=True)
class Segment:
    """One Kafka message to write: an envelope of several records, or one single record."""

    partition: int
    records: list[PlannedRecord] = field(default_factory=list)
    envelope: bool = True
    raw: bool = False


def is_json(data: bytes) -> bool:
    """Whether bytes are one valid JSON document."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def is_envelope_line(data: bytes) -> bool:
    """Whether a record can be an envelope line as is: one JSON object on one line."""
    if data[:1] != b"{" or b"\n" in data:
        return False
    try:
        return type(orjson.loads(data)) is dict
    except orjson.JSONDecodeError:
        return False


def plan_segments(partition: int, records: list[PlannedRecord], batch: bool) -> list[Segment]:
    """Split one partition's records, in order, into envelope runs and single messages."""
    segments: list[Segment] = []
    current: list[PlannedRecord] | None = None
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for record in records:
        data = record.data
        # is_envelope_line inlined (this runs once per record): the byte checks first, so
        # that only a candidate pays for the parse that proves it is one JSON object.
        if batch and data[:1] == b"{" and b"\n" not in data:
            try:
                envelopable = type(loads(data)) is dict
            except decode_error:
                envelopable = False
            if envelopable:
                if current is None:
                    current = []
                    segments.append(Segment(partition, current))
                current.append(record)
                continue
        current = None
        segments.append(Segment(partition, [record], envelope=False, raw=not is_json(data)))
    return segments


def _hash_of(entry: dict[str, Any], position: tuple[str | int, ...]) -> tuple[str, int]:
    """The partition key and the 128-bit hash key that picks the record's shard."""
    key_path = field_path(*position, "partitionKey")
    key = opt_string(entry, "PartitionKey", path=key_path, min_len=1, max_len=256)
    if key is None:
        raise validation_error(key_path, None, "Member must not be null")
    explicit = entry.get("ExplicitHashKey")
    if explicit is None:
        return key, hash_key(key)
    where = field_path(*position, "explicitHashKey")
    if not isinstance(explicit, str) or not _HASH_KEY_RE.fullmatch(explicit):
        raise validation_error(
            where, explicit, "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})"
        )
    value = int(explicit)
    if value > HASH_KEY_MAX:
        raise AwsError(
            400,
            "InvalidArgumentException",
            f"ExplicitHashKey {explicit} at '{where}' is outside the hash key range "
            f"0..{HASH_KEY_MAX}",
        )
    return key, value


def _record_too_large(where: str, size: int, limit: int) -> AwsError:
    return validation_error(
        where, f"<{size} bytes>", f"Member must have length less than or equal to {limit}"
    )


def parse_kinesis_records(
    payload: dict[str, Any], limits: AwsLimits, single: bool = False
) -> list[tuple[PlannedRecord, int]]:
    """Validate a PutRecords body (or one PutRecord with ``single``).

    Returns each record with the hash key that picks its shard (see
    :func:`by_partition`). A request that breaks a limit is refused whole, like Kinesis:
    ``ValidationException`` for a field's constraint, ``InvalidArgumentException`` for the
    5 MiB request total. Nothing here needs the stream, so a malformed request is refused
    as such before its stream is looked up.
    """
    if single:
        entries: list[Any] = [payload]
        prefix: tuple[str | int, ...] = ()
    else:
        entries = req_list(payload, "Records", min_len=1, max_len=limits.max_records)
        prefix = ("records",)
    out: list[tuple[PlannedRecord, int]] = []
    total = 0
    max_record = limits.max_record_bytes
    # pybase64 (SIMD) decodes a ~300-character blob about twice as fast as binascii, and
    # with validate=True it refuses everything binascii's strict mode refuses; whatever it
    # refuses goes to the slow path, which decodes with binascii and names the fault, so
    # the errors are binascii's as before.
    b64decode = pybase64.b64decode
    for index, entry in enumerate(entries):
        # Fast path for the common well-formed record: the per-record cost of the ingest.
        # Anything unusual takes the slow path below, which names the fault.
        if type(entry) is dict and "ExplicitHashKey" not in entry:
            raw, key = entry.get("Data"), entry.get("PartitionKey")
            if type(raw) is str and type(key) is str and 0 < len(key) <= 256:
                try:
                    data = b64decode(raw, validate=True)
                except (binascii.Error, ValueError):
                    pass
                else:
                    if len(data) <= max_record:
                        encoded = key.encode("utf-8")
                        total += len(data) + len(encoded)
                        hashed = cached_hash_key(key)
                        out.append((PlannedRecord(index, data, key), hashed))
                        continue
        position = (*prefix, index) if not single else ()
        if not isinstance(entry, dict):
            raise AwsError(
                400,
                "SerializationException",
                f"'{field_path(*position) or 'record'}' must be an object, "
                f"got {type(entry).__name__}",
            )
        data_path = field_path(*position, "data")
        if entry.get("Data") is None:
            raise validation_error(data_path, None, "Member must not be null")
        data = decode_blob(entry["Data"], data_path)
        if len(data) > max_record:
            raise _record_too_large(data_path, len(data), max_record)
        key, hashed = _hash_of(entry, position)
        total += len(data) + len(key.encode("utf-8"))
        out.append((PlannedRecord(index, data, key), hashed))
    if total > limits.max_request_bytes:
        raise AwsError(
            400,
            "InvalidArgumentException",
            f"Records size exceeds {limits.max_request_bytes // MiB} MB limit: the request "
            f"holds {total} bytes of data and partition keys",
        )
    return out


def by_partition(
    records: list[tuple[PlannedRecord, int]], partitions: int
) -> dict[int, list[PlannedRecord]]:
    """Records grouped by the partition of their hash key, request order kept."""
    if partitions < 1:
        raise ValueError(f"a stream has at least one partition, got {partitions}")
    # partition_for_hash inlined: this runs once per record.
    size = (HASH_KEY_MAX + 1) // partitions
    last = partitions - 1
    grouped: dict[int, list[PlannedRecord]] = {}
    for record, hashed in records:
        partition = hashed // size
        grouped.setdefault(partition if partition < last else last, []).append(record)
    return grouped


def firehose_line(data: bytes) -> bytes:
    """A Firehose record as stored: trailing whitespace dropped, a JSON object compacted."""
    stripped = data.rstrip(b" \t\r\n")
    if b"\n" in stripped and stripped[:1] == b"{":
        try:
            parsed = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            return stripped
        if type(parsed) is dict:
            return orjson.dumps(parsed)
    return stripped


def parse_firehose_records(payload: dict[str, Any], single: bool = False) -> list[bytes]:
    """Validate a PutRecordBatch body (or PutRecord with ``single``): the records' bytes."""
    if single:
        record = payload.get("Record")
        if record is None:
            raise validation_error("record", None, "Member must not be null")
        entries: list[Any] = [record]
    else:
        entries = req_list(payload, "Records", min_len=1, max_len=FIREHOSE_MAX_RECORDS)
    out: list[bytes] = []
    total = 0
    for index, entry in enumerate(entries):
        position: tuple[str | int, ...] = ("record",) if single else ("records", index)
        where = field_path(*position, "data")
        if not isinstance(entry, dict):
            raise AwsError(
                400,
                "SerializationException",
                f"'{field_path(*position)}' must be an object, got {type(entry).__name__}",
            )
        if entry.get("Data") is None:
            raise validation_error(where, None, "Member must not be null")
        data = decode_blob(entry["Data"], where)
        if len(data) > FIREHOSE_MAX_RECORD_BYTES:
            raise _record_too_large(where, len(data), FIREHOSE_MAX_RECORD_BYTES)
        total += len(data)
        out.append(data)
    if total > FIREHOSE_MAX_REQUEST_BYTES:
        raise AwsError(
            400,
            "InvalidArgumentException",
            f"Records size exceeds 4 MiB limit: the batch holds {total} bytes",
        )
    return out


class ShardQuota:
    """Kinesis' per-shard write quota (1 MiB/s and 1 000 records/s), as token buckets.

    Off unless the ingest is given one. A record over the quota fails alone with
    ``ProvisionedThroughputExceededException``; the rest of the request goes on.
    """

    def __init__(
        self,
        bytes_per_s: int = MiB,
        records_per_s: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if bytes_per_s < 1 or records_per_s < 1:
            raise ValueError("a shard quota allows at least 1 byte and 1 record per second")
        self.bytes_per_s = bytes_per_s
        self.records_per_s = records_per_s
        self.clock = clock
        # (stream, partition) -> [bytes left, records left, time of last refill]
        self._buckets: dict[tuple[str, int], list[float]] = {}

    def admit(self, stream: str, partition: int, nbytes: int) -> bool:
        """Take one record of ``nbytes`` from the shard's buckets if both have room."""
        now = self.clock()
        bucket = self._buckets.get((stream, partition))
        if bucket is None:
            bucket = self._buckets[(stream, partition)] = [
                float(self.bytes_per_s),
                float(self.records_per_s),
                now,
            ]
        elapsed = max(0.0, now - bucket[2])
        bucket[0] = min(float(self.bytes_per_s), bucket[0] + elapsed * self.bytes_per_s)
        bucket[1] = min(float(self.records_per_s), bucket[1] + elapsed * self.records_per_s)
        bucket[2] = now
        if bucket[0] < nbytes or bucket[1] < 1:
            return False
        bucket[0] -= nbytes
        bucket[1] -= 1
        return True

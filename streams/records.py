"""PutRecords requests: parse, validate against the Kinesis limits, group by partition.

Pure logic with no Kafka client, so the ingest's rules are unit tested directly. A request
body is ``{"records": [{"data": <any JSON value>, "partition_key": "<str>"}, ...]}``.
Like Kinesis PutRecords, a request that breaks a limit or holds a malformed record is
refused whole (:class:`RequestError`, carrying the HTTP status, a code and a message that
names the offending record and field); only Kafka failures are reported per record.

A valid request becomes one :class:`PartitionBatch` per target partition, each holding the
compact JSON lines, partition keys and request indexes of its records in request order —
exactly what one envelope needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from firelake.config import IngestConfig
from streams.partitioning import cached_partition_for_key

__all__ = [
    "MAX_PARTITION_KEY_CHARS",
    "READ_TIMEOUT_S",
    "RECORD_FRAMING_BYTES",
    "Limits",
    "PartitionBatch",
    "PutRequest",
    "RequestError",
    "check_body_size",
    "check_content_type",
    "parse_put_records",
]

MiB = 1024 * 1024
#: How long reading one request body may take (native and AWS APIs alike).
READ_TIMEOUT_S = 30.0

#: Kinesis: a partition key is 1 to 256 Unicode characters.
MAX_PARTITION_KEY_CHARS = 256

#: Body bytes allowed per record beyond its data and key: the JSON framing
#: ``{"data": ..., "partition_key": "..."}`` plus whitespace. Kinesis' 5 MiB counts data and
#: keys only, so the body may exceed it by this much before it is refused unread.
RECORD_FRAMING_BYTES = 1024

_RECORD_FIELDS = frozenset(("data", "partition_key"))


class RequestError(Exception):
    """A request refused whole: the HTTP status, a short code and a message naming the fault."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{status} {code}: {message}")

    def body(self) -> dict[str, Any]:
        """The JSON error body every Firelake HTTP error uses."""
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds a PutRecords request must respect (Kinesis' by default)."""

    max_records: int = 500
    max_record_bytes: int = MiB
    max_request_bytes: int = 5 * MiB
    max_key_chars: int = MAX_PARTITION_KEY_CHARS

    @classmethod
    def from_config(cls, ingest: IngestConfig) -> Limits:
        """The limits of the ``[ingest]`` section."""
        return cls(
            max_records=ingest.max_records,
            max_record_bytes=ingest.max_record_bytes,
            max_request_bytes=ingest.max_request_bytes,
        )

    @property
    def max_body_bytes(self) -> int:
        """Largest HTTP body read at all: the payload bound plus JSON framing per record."""
        return self.max_request_bytes + self.max_records * RECORD_FRAMING_BYTES


@dataclass(slots=True)
class PartitionBatch:
    """The records of one request bound for one partition, in request order."""

    partition: int
    lines: list[bytes] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lines)


@dataclass(frozen=True, slots=True)
class PutRequest:
    """A validated request: its batches (by first appearance) and its sizes."""

    batches: tuple[PartitionBatch, ...]
    record_count: int
    payload_bytes: int


def _mib(size: int) -> str:
    return f"{size} bytes ({size / MiB:.2f} MiB)"


def check_body_size(size: int | None, limits: Limits) -> None:
    """Refuse (413) a body whose declared or read size exceeds what is ever read."""
    if size is not None and size > limits.max_body_bytes:
        raise RequestError(
            413,
            "RequestTooLarge",
            f"request body is {_mib(size)}; the limit is {_mib(limits.max_body_bytes)} "
            f"({_mib(limits.max_request_bytes)} of data and partition keys plus framing)",
        )


def check_content_type(content_type: str) -> None:
    """Refuse (415) a body not declared as JSON: ``application/json`` or ``…+json``.

    A form or plain-text post is far more often a misdirected client than an event source.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise RequestError(
        415,
        "UnsupportedMediaType",
        f"Content-Type must be application/json, got {content_type or '(none)'!r}",
    )


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
    }.get(type(value), type(value).__name__)


def _invalid_record(index: int, message: str) -> RequestError:
    return RequestError(400, "InvalidRecord", f"records[{index}]: {message}")


class _FastRecord(msgspec.Struct, forbid_unknown_fields=True):
    data: msgspec.Raw
    partition_key: str


class _FastBody(msgspec.Struct, forbid_unknown_fields=True):
    records: list[_FastRecord]


_decode_fast = msgspec.json.Decoder(_FastBody).decode


def _fast_batches(body: bytes, partitions: int, limits: Limits) -> PutRequest | None:
    """The common case without re-encoding: a well-formed body whose records are
    ``{"data": <JSON>, "partition_key": "<str>"}`` in valid UTF-8. Each record's ``data`` is
    kept as the very bytes it arrived as (re-encoded compact only when it holds
    whitespace). None when anything is off, so :func:`parse_put_records` takes the careful
    path that names the fault, or when a limit is near, where that path decides exactly."""
    try:
        body.decode("utf-8")  # msgspec does not check the UTF-8 of a skipped (Raw) value
        records = _decode_fast(body).records
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if not records or len(records) > limits.max_records:
        return None
    # Column-wise: one C-level pass per check instead of a Python loop body per record.
    keys = [record.partition_key for record in records]
    lines = [bytes(record.data) for record in records]
    if b" " in body or b"\n" in body or b"\r" in body or b"\t" in body:
        # JSON whitespace: never raw inside a string but a space, so a value without any
        # of these four bytes is compact JSON already; the others are re-encoded compact.
        for index, line in enumerate(lines):
            if b" " in line or b"\n" in line or b"\r" in line or b"\t" in line:
                try:
                    lines[index] = orjson.dumps(orjson.loads(line))
                except orjson.JSONDecodeError:
                    return None
    key_chars = list(map(len, keys))
    if min(key_chars) < 1 or max(key_chars) > limits.max_key_chars:
        return None
    sizes = list(map(len, lines))
    if max(sizes) > limits.max_record_bytes:
        return None
    key_bytes = sum(key_chars) if body.isascii() else sum(len(k.encode("utf-8")) for k in keys)
    payload = sum(sizes) + key_bytes
    if payload > limits.max_request_bytes:
        return None
    groups: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        partition = cached_partition_for_key(key, partitions)
        group = groups.get(partition)
        if group is None:
            groups[partition] = [index]
        else:
            group.append(index)
    batches = tuple(
        PartitionBatch(
            partition,
            [lines[i] for i in indexes],
            [keys[i] for i in indexes],
            indexes,
        )
        for partition, indexes in groups.items()
    )
    return PutRequest(batches=batches, record_count=len(records), payload_bytes=payload)


def parse_put_records(body: bytes, partitions: int, limits: Limits | None = None) -> PutRequest:
    """Parse and validate a PutRecords body and group its records by target partition.

    The partition of a record is :func:`streams.partitioning.partition_for_key` of its key.
    Raises :class:`RequestError` (400 or 413) naming the first fault found.
    """
    limits = limits or Limits()
    check_body_size(len(body), limits)
    fast = _fast_batches(body, partitions, limits)
    if fast is not None:
        return fast
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            400,
            "InvalidJSON",
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno} (byte {exc.pos})",
        ) from exc
    if not isinstance(parsed, dict):
        raise RequestError(
            400,
            "InvalidRequest",
            f'request body must be a JSON object {{"records": [...]}}, got {_type_name(parsed)}',
        )
    unknown = set(parsed) - {"records"}
    if unknown:
        raise RequestError(
            400,
            "InvalidRequest",
            f"unknown request field {sorted(unknown)[0]!r} (known: records)",
        )
    records = parsed.get("records")
    if records is None:
        raise RequestError(400, "InvalidRequest", "request has no 'records' field")
    if not isinstance(records, list):
        raise RequestError(
            400, "InvalidRequest", f"'records' must be an array, got {_type_name(records)}"
        )
    if not records:
        raise RequestError(400, "InvalidRequest", "'records' is empty; send 1 or more records")
    if len(records) > limits.max_records:
        raise RequestError(
            400,
            "TooManyRecords",
            f"request has {len(records)} records; the limit is {limits.max_records}",
        )

    by_partition: dict[int, PartitionBatch] = {}
    payload = 0
    max_record = limits.max_record_bytes
    max_key = limits.max_key_chars
    dumps = orjson.dumps
    # One pass, only the checks the limits need: this loop is the ingest's per-record cost.
    for index, record in enumerate(records):
        if type(record) is not dict:
            raise _invalid_record(index, f"must be an object, got {_type_name(record)}")
        if len(record) != 2 or record.keys() != _RECORD_FIELDS:
            missing = _RECORD_FIELDS - record.keys()
            if missing:
                raise _invalid_record(index, f"missing field {sorted(missing)[0]!r}")
            extra = sorted(record.keys() - _RECORD_FIELDS)
            raise _invalid_record(index, f"unknown field {extra[0]!r} (known: data, partition_key)")
        key = record["partition_key"]
        if type(key) is not str:
            raise _invalid_record(index, f"partition_key must be a string, got {_type_name(key)}")
        if not key or len(key) > max_key:
            raise _invalid_record(
                index,
                f"partition_key must be 1 to {max_key} characters, got {len(key)}",
            )
        line = dumps(record["data"])
        if len(line) > max_record:
            raise RequestError(
                413,
                "RecordTooLarge",
                f"records[{index}]: data is {_mib(len(line))} as compact JSON; "
                f"the limit is {_mib(max_record)}",
            )
        payload += len(line) + len(key.encode("utf-8"))
        partition = cached_partition_for_key(key, partitions)
        batch = by_partition.get(partition)
        if batch is None:
            batch = by_partition[partition] = PartitionBatch(partition)
        batch.lines.append(line)
        batch.keys.append(key)
        batch.indexes.append(index)
    if payload > limits.max_request_bytes:
        raise RequestError(
            413,
            "RequestTooLarge",
            f"records hold {_mib(payload)} of data and partition keys; "
            f"the limit is {_mib(limits.max_request_bytes)}",
        )
    return PutRequest(
        batches=tuple(by_partition.values()), record_count=len(records), payload_bytes=payload
    )

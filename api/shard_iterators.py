"""Shards and shard iterators: ids, hash-key ranges and opaque, expiring iterator tokens.

Shard ``shardId-000000000003`` is Kafka partition 3; each shard owns the equal slice of the
128-bit MD5 hash-key space that :mod:`streams.partitioning` gives its partition.

A shard iterator is an opaque token that says where the next GetRecords starts: stream,
partition, Kafka offset and the index inside the envelope at that offset, plus the time it
was issued. It is URL-safe base64 of a small JSON array followed by a keyed BLAKE2b check,
so a truncated or edited token is refused (``InvalidArgumentException``) instead of read
at a wrong position; the key is fixed so that every ingest process accepts the tokens of
every other. Like Kinesis, a token is good for 5 minutes after it is issued
(``ExpiredIteratorException``); GetRecords hands out a fresh one each call.

Pure logic: no Kafka.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

import orjson

from api.protocol import AwsError
from streams.partitioning import hash_ranges
from streams.sequence import MAX_INDEX

__all__ = [
    "ITERATOR_TTL_MS",
    "ShardPosition",
    "decode_iterator",
    "encode_iterator",
    "parse_shard_id",
    "shard_id",
    "shard_ranges",
]

#: How long a shard iterator may be used after it is issued (Kinesis: 5 minutes).
ITERATOR_TTL_MS = 5 * 60 * 1000

_VERSION = 1
_CHECK_BYTES = 10
# Detects corruption and casual editing, not a determined forger: reading a shard needs no
# secret anyway (whoever can call GetShardIterator can make a token).
_KEY = b"firelake-shard-iterator-v1"
_SHARD_RE = re.compile(r"^(?:shardId-)?(\d{1,12})$")


def shard_id(partition: int) -> str:
    """Kinesis' shard id of a partition: ``shardId-`` and 12 digits."""
    return f"shardId-{partition:012d}"


def parse_shard_id(text: str, stream: str, partitions: int) -> int:
    """The partition of a shard id (``shardId-000000000002`` or ``2``); 404 if none."""
    match = _SHARD_RE.match(text)
    if match is None or int(match[1]) >= partitions:
        raise AwsError(
            400,
            "ResourceNotFoundException",
            f"Shard {text} in stream {stream} under account 000000000000 does not exist "
            f"(shards: {shard_id(0)} to {shard_id(partitions - 1)})",
        )
    return int(match[1])


def shard_ranges(partitions: int) -> list[dict[str, object]]:
    """The ``Shards`` entries of DescribeStream / ListShards, with their hash-key ranges."""
    return [
        {
            "ShardId": shard_id(partition),
            "HashKeyRange": {"StartingHashKey": str(start), "EndingHashKey": str(end)},
            # Sequence numbers of partition p start at p (offset 0, index 0): see
            # streams.sequence.
            "SequenceNumberRange": {"StartingSequenceNumber": str(partition)},
        }
        for partition, (start, end) in enumerate(hash_ranges(partitions))
    ]


@dataclass(frozen=True, slots=True)
class ShardPosition:
    """Where a shard iterator points: the record at (offset, index) of one partition."""

    stream: str
    partition: int
    offset: int
    index: int
    issued_ms: int


def _check(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_CHECK_BYTES, key=_KEY).digest()


def encode_iterator(position: ShardPosition) -> str:
    """The opaque token of a position."""
    payload = orjson.dumps(
        [
            _VERSION,
            position.stream,
            position.partition,
            position.offset,
            position.index,
            position.issued_ms,
        ]
    )
    return base64.urlsafe_b64encode(payload + _check(payload)).decode("ascii").rstrip("=")


def _invalid(token: str, reason: str) -> AwsError:
    shown = token if len(token) <= 40 else token[:40] + "..."
    return AwsError(400, "InvalidArgumentException", f"Invalid ShardIterator {shown!r}: {reason}")


def decode_iterator(token: str, now_ms: int, ttl_ms: int = ITERATOR_TTL_MS) -> ShardPosition:
    """The position of a token; refuses garbage and tokens older than ``ttl_ms``."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise _invalid(token, "not a Firelake shard iterator") from None
    payload, check = raw[:-_CHECK_BYTES], raw[-_CHECK_BYTES:]
    if len(raw) <= _CHECK_BYTES or not hmac.compare_digest(check, _check(payload)):
        raise _invalid(token, "not a Firelake shard iterator (checksum mismatch)")
    try:
        version, stream, partition, offset, index, issued = orjson.loads(payload)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        raise _invalid(token, "not a Firelake shard iterator") from None
    if (
        version != _VERSION
        or not isinstance(stream, str)
        or not all(isinstance(v, int) for v in (partition, offset, index, issued))
        or partition < 0
        or offset < 0
        or not 0 <= index <= MAX_INDEX + 1
    ):
        raise _invalid(token, "unknown iterator version or fields")
    age = now_ms - issued
    if age > ttl_ms:
        raise AwsError(
            400,
            "ExpiredIteratorException",
            f"Iterator expired. The iterator was created at time {issued} ms while right now "
            f"it is {now_ms} ms, which is further in the future than the tolerated delay of "
            f"{ttl_ms} milliseconds.",
        )
    return ShardPosition(stream, partition, offset, index, issued)

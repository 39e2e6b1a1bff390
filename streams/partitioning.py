"""Partition keys to partitions, exactly as Kinesis maps partition keys to shards.

Kinesis hashes a partition key with MD5 into a 128-bit integer and gives each shard an
equal slice of that space; ``ExplicitHashKey`` skips the hash. Firelake's partitions are
the shards, so producers that pick keys for Kinesis get the same spread here.
"""

from __future__ import annotations

import functools
import hashlib

__all__ = [
    "HASH_KEY_MAX",
    "cached_hash_key",
    "cached_partition_for_key",
    "hash_key",
    "hash_ranges",
    "partition_for_hash",
    "partition_for_key",
]

HASH_KEY_MAX = 2**128 - 1


def hash_key(partition_key: str) -> int:
    """The 128-bit hash key Kinesis derives from a partition key (MD5 of its UTF-8 bytes)."""
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def hash_ranges(partitions: int) -> list[tuple[int, int]]:
    """Inclusive (start, end) hash-key range of each partition, equal slices, last to 2^128-1."""
    if partitions < 1:
        raise ValueError("a stream has at least one partition")
    size = (HASH_KEY_MAX + 1) // partitions
    ranges = [(i * size, (i + 1) * size - 1) for i in range(partitions)]
    ranges[-1] = (ranges[-1][0], HASH_KEY_MAX)
    return ranges


def partition_for_hash(hash_value: int, partitions: int) -> int:
    """The partition whose range holds a hash key."""
    if partitions < 1:
        raise ValueError(f"a stream has at least one partition, got {partitions}")
    if not 0 <= hash_value <= HASH_KEY_MAX:
        raise ValueError(f"hash key {hash_value} is outside 0..2^128-1")
    size = (HASH_KEY_MAX + 1) // partitions
    return min(hash_value // size, partitions - 1)


def partition_for_key(partition_key: str, partitions: int) -> int:
    """The partition of a partition key."""
    return partition_for_hash(hash_key(partition_key), partitions)


@functools.lru_cache(maxsize=65_536)
def cached_partition_for_key(partition_key: str, partitions: int) -> int:
    """:func:`partition_for_key`, memoized within a bound: keys repeat a lot (users,
    devices), and the MD5 and the 128-bit division are an ingest's and a router's largest
    per-event costs after JSON."""
    return partition_for_key(partition_key, partitions)


@functools.lru_cache(maxsize=65_536)
def cached_hash_key(partition_key: str) -> int:
    """:func:`hash_key`, memoized within a bound (the Kinesis endpoint's per-record MD5)."""
    return hash_key(partition_key)

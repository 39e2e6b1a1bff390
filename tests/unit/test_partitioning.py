"""Kinesis' partition key -> shard mapping: MD5 hash keys and equal hash ranges."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.partitioning import (
    HASH_KEY_MAX,
    hash_key,
    hash_ranges,
    partition_for_hash,
    partition_for_key,
)


def test_hash_key_is_md5_of_utf8_as_big_endian_integer() -> None:
    assert hash_key("") == 0xD41D8CD98F00B204E9800998ECF8427E
    assert hash_key("ä") == int(hashlib.md5("ä".encode()).hexdigest(), 16)


def test_ranges_match_what_kinesis_creates() -> None:
    # Starting hash keys of CreateStream with 3 and 2 shards, as Kinesis reports them.
    assert hash_ranges(3) == [
        (0, 113427455640312821154458202477256070484),
        (113427455640312821154458202477256070485, 226854911280625642308916404954512140969),
        (226854911280625642308916404954512140970, HASH_KEY_MAX),
    ]
    assert hash_ranges(2)[1][0] == 2**127
    assert hash_ranges(1) == [(0, HASH_KEY_MAX)]


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 7, 64, 10_000])
def test_ranges_cover_the_space_without_gaps(partitions: int) -> None:
    ranges = hash_ranges(partitions)
    assert len(ranges) == partitions
    assert ranges[0][0] == 0 and ranges[-1][1] == HASH_KEY_MAX
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert start == end + 1


@pytest.mark.parametrize("partitions", [1, 3, 4, 7])
def test_range_edges_map_to_their_partition(partitions: int) -> None:
    for index, (start, end) in enumerate(hash_ranges(partitions)):
        assert partition_for_hash(start, partitions) == index
        assert partition_for_hash(end, partitions) == index


@given(st.text(max_size=256), st.integers(1, 500))
def test_partition_for_key_lies_in_its_range(key: str, partitions: int) -> None:
    partition = partition_for_key(key, partitions)
    start, end = hash_ranges(partitions)[partition]
    assert start <= hash_key(key) <= end


def test_keys_spread_over_partitions() -> None:
    counts = [0] * 4
    for n in range(4000):
        counts[partition_for_key(f"user-{n}", 4)] += 1
    assert min(counts) > 800


def test_refuses_out_of_range_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        partition_for_hash(HASH_KEY_MAX + 1, 4)
    with pytest.raises(ValueError, match="outside"):
        partition_for_hash(-1, 4)
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for_hash(0, 0)
    with pytest.raises(ValueError, match="at least one partition"):
        hash_ranges(0)

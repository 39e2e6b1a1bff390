"""Shard ids, hash ranges and iterator tokens."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.protocol import AwsError
from api.shard_iterators import (
    ITERATOR_TTL_MS,
    ShardPosition,
    decode_iterator,
    encode_iterator,
    parse_shard_id,
    shard_id,
    shard_ranges,
)
from streams.partitioning import HASH_KEY_MAX


def test_shard_ids_and_ranges() -> None:
    assert shard_id(3) == "shardId-000000000003"
    assert parse_shard_id("shardId-000000000003", "s", 4) == 3
    assert parse_shard_id("2", "s", 4) == 2
    with pytest.raises(AwsError, match="does not exist"):
        parse_shard_id("shardId-000000000004", "s", 4)
    ranges = shard_ranges(3)
    assert ranges[0]["HashKeyRange"]["StartingHashKey"] == "0"  # type: ignore[index]
    assert ranges[-1]["HashKeyRange"]["EndingHashKey"] == str(HASH_KEY_MAX)  # type: ignore[index]


@given(
    st.text(min_size=1, max_size=128),
    st.integers(0, 65535),
    st.integers(0, 2**50),
    st.integers(0, 2**20),
)
def test_tokens_round_trip(stream: str, partition: int, offset: int, index: int) -> None:
    position = ShardPosition(stream, partition, offset, index, 1_000)
    token = encode_iterator(position)
    assert len(token) <= 512
    assert decode_iterator(token, 1_000 + ITERATOR_TTL_MS) == position


def test_expired_and_tampered_tokens() -> None:
    token = encode_iterator(ShardPosition("s", 0, 5, 0, 0))
    with pytest.raises(AwsError) as info:
        decode_iterator(token, ITERATOR_TTL_MS + 1)
    assert info.value.code == "ExpiredIteratorException"
    for bad in (token[:-2], token[:10] + ("A" if token[10] != "A" else "B") + token[11:], "!!", ""):
        with pytest.raises(AwsError) as info:
            decode_iterator(bad, 0)
        assert info.value.code == "InvalidArgumentException"

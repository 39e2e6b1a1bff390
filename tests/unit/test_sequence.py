"""Sequence numbers: encode (partition, offset, index) and decode them back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.sequence import (
    MAX_INDEX,
    MAX_PARTITIONS,
    RecordPosition,
    decode_sequence,
    encode_sequence,
)


@given(st.integers(0, MAX_PARTITIONS - 1), st.integers(0, 2**63 - 1), st.integers(0, MAX_INDEX))
def test_round_trip(partition: int, offset: int, index: int) -> None:
    sequence = encode_sequence(partition, offset, index)
    assert sequence.isdigit()
    assert decode_sequence(sequence) == RecordPosition(partition, offset, index)


@given(
    st.integers(0, MAX_PARTITIONS - 1),
    st.tuples(st.integers(0, 2**40), st.integers(0, MAX_INDEX)),
    st.tuples(st.integers(0, 2**40), st.integers(0, MAX_INDEX)),
)
def test_order_within_a_partition_follows_offset_then_index(
    partition: int, a: tuple[int, int], b: tuple[int, int]
) -> None:
    sa, sb = encode_sequence(partition, *a), encode_sequence(partition, *b)
    assert (int(sa) < int(sb)) == (a < b)


def test_known_values() -> None:
    assert encode_sequence(0, 0, 0) == "0"
    assert encode_sequence(3, 0, 1) == str((1 << 16) | 3)
    assert encode_sequence(1, 1, 0) == str(1 << 36 | 1)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((-1, 0, 0), "partition -1"),
        ((MAX_PARTITIONS, 0, 0), "partition 65536"),
        ((0, 0, MAX_INDEX + 1), "index"),
        ((0, 0, -1), "index"),
        ((0, -1, 0), "offset -1"),
    ],
)
def test_encode_refuses_out_of_range(args: tuple[int, int, int], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        encode_sequence(*args)


@pytest.mark.parametrize("text", ["", "-1", "12a", " 1", "1" * 61, "\u0663", "\uff11\uff12"])
def test_decode_refuses_what_is_not_a_sequence(text: str) -> None:
    with pytest.raises(ValueError, match="not a sequence number"):
        decode_sequence(text)

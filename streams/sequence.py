"""Kinesis-style sequence numbers that say where a record lives.

A sequence number is a decimal string that encodes the Kafka offset of the message, the
record's index inside its envelope and the partition. Within one partition they are unique
and increase with (offset, index), so a reader can resume at or after any record exactly.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["MAX_INDEX", "MAX_PARTITIONS", "RecordPosition", "decode_sequence", "encode_sequence"]

_INDEX_BITS = 20
_PARTITION_BITS = 16
MAX_INDEX = (1 << _INDEX_BITS) - 1
MAX_PARTITIONS = 1 << _PARTITION_BITS


class RecordPosition(NamedTuple):
    """Where a record lives: Kafka partition and offset, and index inside the envelope."""

    partition: int
    offset: int
    index: int


def encode_sequence(partition: int, offset: int, index: int) -> str:
    """The sequence number of the record at (partition, offset, index)."""
    if not 0 <= partition < MAX_PARTITIONS:
        raise ValueError(f"partition {partition} out of range")
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"envelope index {index} out of range")
    if offset < 0:
        raise ValueError(f"offset {offset} is negative")
    return str((((offset << _INDEX_BITS) | index) << _PARTITION_BITS) | partition)


def decode_sequence(sequence: str) -> RecordPosition:
    """The position a sequence number encodes; ValueError if it is not one of ours."""
    # isascii: str.isdigit() also accepts other scripts' digits, which int() would take.
    if not (sequence.isascii() and sequence.isdigit()) or len(sequence) > 60:
        raise ValueError(f"not a sequence number: {sequence!r}")
    value = int(sequence)
    partition = value & (MAX_PARTITIONS - 1)
    value >>= _PARTITION_BITS
    return RecordPosition(partition, value >> _INDEX_BITS, value & MAX_INDEX)

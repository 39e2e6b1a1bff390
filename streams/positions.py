"""Starting positions as Kafka offsets: where a reader begins a partition it has no
progress for (a Lambda event source mapping's, and a Firehose sink's, StartingPosition).

``TRIM_HORIZON`` is the earliest retained record, ``LATEST`` the end of the log now and
``AT_TIMESTAMP`` the first record Kafka stamped at or after the time (the end when none
is). The consumer asks the broker for the offsets rather than seeking to the beginning or
end, because a seek to either waits for the fetcher — which, inside a rebalance callback,
waits for the callback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from firelake.config import StartingPosition, starting_timestamp_ms

__all__ = ["offsets_at", "starting_offsets"]


async def offsets_at(
    consumer: Any, tps: Sequence[Any], ms: int, ends: dict[Any, int] | None = None
) -> dict[Any, int]:
    """Each partition's first offset Kafka stamped at or after epoch ``ms``, else its end
    (``ends`` if the caller holds them already)."""
    found = await consumer.offsets_for_times({tp: ms for tp in tps})
    if ends is None:
        ends = await consumer.end_offsets(list(tps))
    return {tp: (hit.offset if (hit := found.get(tp)) is not None else ends[tp]) for tp in tps}


async def starting_offsets(
    consumer: Any, tps: Sequence[Any], position: StartingPosition, timestamp: str = ""
) -> dict[Any, int]:
    """Each partition's first offset to read for ``position`` (``timestamp`` is the
    ISO-8601 ``starting_timestamp`` of AT_TIMESTAMP). ``consumer`` is an
    ``AIOKafkaConsumer``; ``tps`` its ``TopicPartition`` objects."""
    if not tps:
        return {}
    if position == "LATEST":
        return dict(await consumer.end_offsets(list(tps)))
    if position == "AT_TIMESTAMP":
        return await offsets_at(consumer, tps, starting_timestamp_ms(timestamp))
    return dict(await consumer.beginning_offsets(list(tps)))

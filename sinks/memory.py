"""One memory budget across all of a sink's buffers, and the open-partition bound.

Buffers hold converted rows (Arrow tables, sized exactly by their buffers) until a
buffering hint flushes them. Without a global bound, many partitions each below their
own hint add up without limit — exactly where the Kafka Connect S3 sink runs out of
memory. So after every poll the sink asks :func:`evictions` which buffers to flush early:

- **Memory**: when all buffers together reach ``memory_limit``, the largest flush first
  until the total is at most ``low_water`` of the limit (hysteresis: one flush frees
  room for many polls instead of one flush per poll at the edge).
- **Open partitions**: the output folders (``dt=…/product=…``) the buffers hold, counted
  together. Above ``max_open_partitions`` the *oldest* buffers flush until the count is
  within the bound (Firehose's active-partition limit; the outcome is a flush, never a
  refusal, so nothing is dropped and the stream never stalls).

Pure logic, no clocks or I/O: the caller passes what each buffer holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["LOW_WATER", "BufferUsage", "Eviction", "evictions"]

#: Share of the limit memory is brought down to once it is reached.
LOW_WATER = 0.5


@dataclass(frozen=True, slots=True)
class BufferUsage:
    """What one buffer holds: its key, bytes, when it started (clock s), its folders."""

    key: int
    memory: int
    started_at: float
    folders: frozenset[str]


@dataclass(frozen=True, slots=True)
class Eviction:
    """A buffer to flush now, and why ('memory' or 'open_partitions')."""

    key: int
    reason: str


def evictions(
    usages: Iterable[BufferUsage],
    memory_limit: int,
    max_open_partitions: int,
    low_water: float = LOW_WATER,
) -> list[Eviction]:
    """The buffers to flush early, in order; empty when both bounds hold."""
    remaining = [u for u in usages if u.memory > 0 or u.folders]
    out: list[Eviction] = []
    total = sum(u.memory for u in remaining)
    if total >= memory_limit:
        target = memory_limit * low_water
        for usage in sorted(remaining, key=lambda u: (-u.memory, u.key)):
            if total <= target:
                break
            out.append(Eviction(usage.key, "memory"))
            total -= usage.memory
    chosen = {e.key for e in out}
    remaining = [u for u in remaining if u.key not in chosen]
    open_folders: dict[str, int] = {}
    for usage in remaining:
        for folder in usage.folders:
            open_folders[folder] = open_folders.get(folder, 0) + 1
    for usage in sorted(remaining, key=lambda u: (u.started_at, u.key)):
        if len(open_folders) <= max_open_partitions:
            break
        out.append(Eviction(usage.key, "open_partitions"))
        for folder in usage.folders:
            open_folders[folder] -= 1
            if not open_folders[folder]:
                del open_folders[folder]
    return out

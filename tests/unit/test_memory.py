"""Unit tests of sinks.memory: the global memory budget and the open-partition bound."""

from __future__ import annotations

from sinks.memory import BufferUsage, Eviction, evictions


def usage(
    key: int, memory: int, started: float = 0.0, folders: tuple[str, ...] = ()
) -> BufferUsage:
    return BufferUsage(key, memory, started, frozenset(folders))


def test_below_both_bounds_nothing_flushes() -> None:
    assert evictions([usage(0, 40), usage(1, 59)], memory_limit=100, max_open_partitions=5) == []


def test_at_the_limit_the_largest_flush_down_to_the_low_water_mark() -> None:
    usages = [usage(0, 10), usage(1, 50), usage(2, 25), usage(3, 15)]
    out = evictions(usages, memory_limit=100, max_open_partitions=99)
    # 100 >= limit: flush 50 (-> 50 <= 50, the low water mark) and stop.
    assert out == [Eviction(1, "memory")]
    out = evictions(usages, memory_limit=90, max_open_partitions=99)
    assert out == [Eviction(1, "memory"), Eviction(2, "memory")]


def test_too_many_open_partitions_flush_the_oldest_buffers() -> None:
    usages = [
        usage(0, 1, started=5.0, folders=("a", "b")),
        usage(1, 1, started=1.0, folders=("c",)),
        usage(2, 1, started=3.0, folders=("a", "d")),
    ]
    # Open: a b c d = 4 > 2: oldest first: 1 (c) -> a b d = 3, then 2 -> a b = 2.
    assert evictions(usages, memory_limit=1000, max_open_partitions=2) == [
        Eviction(1, "open_partitions"),
        Eviction(2, "open_partitions"),
    ]


def test_a_shared_folder_stays_open_while_any_buffer_holds_it() -> None:
    usages = [usage(0, 1, 1.0, ("a",)), usage(1, 1, 2.0, ("a", "b"))]
    assert evictions(usages, memory_limit=1000, max_open_partitions=1) == [
        Eviction(0, "open_partitions"),
        Eviction(1, "open_partitions"),
    ]


def test_memory_evictions_count_towards_the_open_bound() -> None:
    usages = [usage(0, 90, 9.0, ("a", "b")), usage(1, 5, 1.0, ("c",))]
    assert evictions(usages, memory_limit=50, max_open_partitions=1) == [Eviction(0, "memory")]

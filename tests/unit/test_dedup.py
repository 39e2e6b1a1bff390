"""Idempotency window with a fixed clock: repeats within the window are refused once."""

from __future__ import annotations

from agents.dedup import DedupWindow


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_repeat_within_the_window_is_a_duplicate_after_it_is_new_again() -> None:
    clock = Clock()
    window = DedupWindow(10, clock=clock)
    assert window.check("raw", 0, "a") is True
    assert window.check("raw", 0, "a") is False
    assert window.check("raw", 1, "a") is True  # per partition
    clock.now += 10.5
    assert window.check("raw", 0, "a") is True


def test_memory_is_bounded_oldest_first_and_partitions_can_be_dropped() -> None:
    clock = Clock()
    window = DedupWindow(1000, max_entries=3, clock=clock)
    for event_id in "abcd":
        clock.now += 1
        assert window.check("raw", 0, event_id)
    assert len(window) == 3
    assert window.check("raw", 0, "a") is True  # forgotten: the oldest went first
    assert window.check("raw", 0, "d") is False
    window.drop_partition("raw", 0)
    assert len(window) == 0


def test_a_zero_window_is_off() -> None:
    window = DedupWindow(0)
    assert not window.enabled
    assert window.check("raw", 0, "a") and window.check("raw", 0, "a")


def test_ids_read_back_from_the_log_expire_by_time() -> None:
    # remember() did not note the oldest id: the next check() took "now" as the oldest,
    # and read-back ids outlived their window by up to another window.
    clock = Clock()
    window = DedupWindow(10, clock=clock)
    window.remember("raw", 0, "old", seen_at=clock.now - 5)
    assert window.check("raw", 0, "old") is False
    clock.now += 6  # "old" is 11 s old now
    assert window.check("raw", 0, "new") is True
    assert len(window) == 1 and window.check("raw", 0, "old") is True

"""Fencing on a local destination: conditional puts, owner epochs, the compaction lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from sinks.compaction import CompactionLocked, _s3_lock
from sinks.destinations import ABSENT, Conflict, LocalDestination
from sinks.progress import Fenced, PlannedFile, ProgressStore

TOPIC = "playback-events"


def test_conditional_puts_create_once_and_replace_only_the_version_read(tmp_path: Path) -> None:
    dest = LocalDestination(tmp_path)
    first = dest.put_if("a/b.json", b"1", ABSENT)
    with pytest.raises(Conflict):
        dest.put_if("a/b.json", b"2", ABSENT)  # exists already
    second = dest.put_if("a/b.json", b"2", first)
    with pytest.raises(Conflict):
        dest.put_if("a/b.json", b"3", first)  # stale version
    assert dest.get_versioned("a/b.json") == (b"2", second)
    assert dest.list("a/") and all(not i.key.endswith(".lock") for i in dest.list("a/"))


def _file(name: str) -> list[PlannedFile]:
    return [PlannedFile(f"playback/dt=2026-11-29/hour=08/{name}.parquet", lambda: b"x")]


def test_a_zombie_owner_can_neither_commit_nor_overwrite_the_new_owners_state(
    tmp_path: Path,
) -> None:
    zombie, owner = ProgressStore(tmp_path, "s"), ProgressStore(tmp_path, "s")
    assert zombie.recover(TOPIC, 0) is None  # claims epoch 1
    zombie.commit_flush(TOPIC, 0, 0, 9, _file("a"))
    assert owner.recover(TOPIC, 0) == 10  # claims epoch 2: the first is fenced
    with pytest.raises(Fenced, match="superseded"):
        zombie.commit_flush(TOPIC, 0, 10, 19, _file("b"))
    assert zombie.intent(TOPIC, 0) is None  # refused before it wrote anything
    state = owner.commit_flush(TOPIC, 0, 10, 19, _file("c"))
    assert state.epoch == 2 and owner.state(TOPIC, 0).epoch == 2  # type: ignore[union-attr]
    # A state put racing a claim is refused too, even after the zombie's checks passed.
    owner_version = owner._owned[(TOPIC, 0)]
    ProgressStore(tmp_path, "s").claim(TOPIC, 0)  # epoch 3 meanwhile
    assert owner._owned[(TOPIC, 0)] == owner_version
    with pytest.raises(Fenced):
        owner.commit_flush(TOPIC, 0, 20, 29, _file("d"))


def test_one_compaction_lock_per_table_with_a_lease(tmp_path: Path) -> None:
    dest = LocalDestination(tmp_path)
    with _s3_lock(dest, "playback"):
        with pytest.raises(CompactionLocked, match="being compacted"):
            with _s3_lock(dest, "playback"):
                pass
        with _s3_lock(dest, "page"):  # another table: its own lock
            pass
    with _s3_lock(dest, "playback"):  # released on exit
        pass

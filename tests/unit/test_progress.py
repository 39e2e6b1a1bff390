"""Unit tests of sinks.progress: the flush protocol and recovery from each crash point.

A crash is simulated by a checkpoint that raises :class:`SimulatedCrash` (a
BaseException, so nothing in the protocol catches it): the flush stops exactly where a
kill would stop it, then ``recover`` runs as a restarted sink would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sinks.paths import data_file_name, intent_path, partition_dir, state_path, tmp_path
from sinks.progress import (
    CRASH_POINTS,
    PlannedFile,
    ProgressError,
    ProgressStore,
    atomic_write,
    atomic_write_bytes,
)

TOPIC = "events"


class SimulatedCrash(BaseException):
    """Stands for SIGKILL at a checkpoint."""


def crash_at(point: str):
    def checkpoint(name: str) -> None:
        if name == point:
            raise SimulatedCrash(name)

    return checkpoint


def _writer(body: bytes):
    return lambda target: target.write_bytes(body)


def planned(
    lake: Path, first: int, last: int, hours: tuple[int, ...] = (8, 9)
) -> list[PlannedFile]:
    name = data_file_name(TOPIC, 0, first, last)
    return [
        PlannedFile(
            partition_dir(lake, "t", "2026-11-29", hour) / name,
            _writer(f"{first}-{last}@{hour}".encode()),
        )
        for hour in hours
    ]


def data_files(lake: Path) -> list[str]:
    return sorted(p.relative_to(lake).as_posix() for p in (lake / "t").rglob("*") if p.is_file())


def test_a_flush_writes_files_then_state_and_removes_its_intent(lake: Path) -> None:
    store = ProgressStore(lake, "s")
    assert store.recover(TOPIC, 0) is None
    passed: list[str] = []
    state = store.commit_flush(TOPIC, 0, 0, 9, planned(lake, 0, 9), passed.append)
    assert passed == list(CRASH_POINTS)
    assert state.last_offset == 9
    assert store.state(TOPIC, 0) is not None
    assert store.state(TOPIC, 0).files == state.files
    assert len(data_files(lake)) == 2
    assert not intent_path(lake, "s", TOPIC, 0).exists()
    assert store.recover(TOPIC, 0) == 10


def test_crash_after_intent_leaves_nothing_to_keep(lake: Path) -> None:
    store = ProgressStore(lake, "s")
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 0, 9, planned(lake, 0, 9), crash_at("after_intent"))
    assert intent_path(lake, "s", TOPIC, 0).exists()
    assert store.recover(TOPIC, 0) is None  # no state: start from Kafka's offset
    assert not intent_path(lake, "s", TOPIC, 0).exists()
    assert data_files(lake) == []


def test_crash_after_files_deletes_the_uncommitted_files(lake: Path) -> None:
    store = ProgressStore(lake, "s")
    store.commit_flush(TOPIC, 0, 0, 9, planned(lake, 0, 9, hours=(7,)))
    committed = data_files(lake)
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 10, 19, planned(lake, 10, 19), crash_at("after_files"))
    assert len(data_files(lake)) == 3
    assert store.recover(TOPIC, 0) == 10
    assert data_files(lake) == committed
    assert not intent_path(lake, "s", TOPIC, 0).exists()


def test_after_recovery_a_flush_with_other_boundaries_leaves_no_duplicate(lake: Path) -> None:
    store = ProgressStore(lake, "s")
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 0, 19, planned(lake, 0, 19), crash_at("after_files"))
    assert store.recover(TOPIC, 0) is None
    store.commit_flush(TOPIC, 0, 0, 9, planned(lake, 0, 9, hours=(8,)))
    store.commit_flush(TOPIC, 0, 10, 19, planned(lake, 10, 19, hours=(8,)))
    names = [Path(f).name for f in data_files(lake)]
    assert names == [data_file_name(TOPIC, 0, 0, 9), data_file_name(TOPIC, 0, 10, 19)]


def test_crash_while_writing_files_removes_the_partial_tmp_file(lake: Path) -> None:
    store = ProgressStore(lake, "s")
    files = planned(lake, 0, 9)

    def dies_half_way(target: Path) -> None:
        target.write_bytes(b"half")
        raise SimulatedCrash("during_files")

    files[1] = PlannedFile(files[1].path, dies_half_way)
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 0, 9, files)
    # A real kill leaves the temporary file behind, unlike the exception above.
    tmp_path(files[1].path).write_bytes(b"half")
    assert store.recover(TOPIC, 0) is None
    assert not tmp_path(files[1].path).exists()
    assert data_files(lake) == []


def test_crash_after_state_keeps_the_committed_files(lake: Path) -> None:
    store = ProgressStore(lake, "s")
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 0, 9, planned(lake, 0, 9), crash_at("after_state"))
    assert intent_path(lake, "s", TOPIC, 0).exists()
    assert store.recover(TOPIC, 0) == 10
    assert len(data_files(lake)) == 2
    assert not intent_path(lake, "s", TOPIC, 0).exists()


def test_recover_is_idempotent(lake: Path) -> None:
    store = ProgressStore(lake, "s")
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 0, 9, planned(lake, 0, 9), crash_at("after_files"))
    assert store.recover(TOPIC, 0) is None
    assert store.recover(TOPIC, 0) is None


def test_partitions_and_sinks_have_separate_progress(lake: Path) -> None:
    store = ProgressStore(lake, "s")
    store.commit_flush(TOPIC, 0, 0, 9, planned(lake, 0, 9))
    assert store.recover(TOPIC, 1) is None
    assert ProgressStore(lake, "other").recover(TOPIC, 0) is None


def test_an_overlapping_flush_is_refused(lake: Path) -> None:
    store = ProgressStore(lake, "s")
    store.commit_flush(TOPIC, 0, 0, 9, planned(lake, 0, 9))
    with pytest.raises(ProgressError, match="overlaps offsets up to 9"):
        store.commit_flush(TOPIC, 0, 5, 12, planned(lake, 5, 12))


def test_a_flush_before_recovery_is_refused(lake: Path) -> None:
    store = ProgressStore(lake, "s")
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 0, 9, planned(lake, 0, 9), crash_at("after_files"))
    with pytest.raises(ProgressError, match="recovered first"):
        store.commit_flush(TOPIC, 0, 0, 9, planned(lake, 0, 9))


def test_a_damaged_state_file_is_refused_not_ignored(lake: Path) -> None:
    store = ProgressStore(lake, "s")
    path = state_path(lake, "s", TOPIC, 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{not json")
    with pytest.raises(ProgressError, match="not valid JSON") as info:
        store.recover(TOPIC, 0)
    assert info.value.path == path


def test_files_outside_the_lake_are_refused(lake: Path, tmp_path: Path) -> None:
    store = ProgressStore(lake, "s")
    outside = PlannedFile(tmp_path / "elsewhere.parquet", lambda target: target.write_bytes(b""))
    with pytest.raises(ValueError, match="outside the lake"):
        store.commit_flush(TOPIC, 0, 0, 0, [outside])


def test_atomic_write_replaces_whole_files_and_leaves_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.json"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    atomic_write_bytes(path, b"old")

    def fails(target: Path) -> None:
        target.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fails)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]

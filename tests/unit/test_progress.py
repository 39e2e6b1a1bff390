"""Unit tests of sinks.progress: the flush protocol and recovery from each crash point.

Every test runs twice: on a local folder and on a real S3 HTTP endpoint (moto's server on
127.0.0.1) — the protocol uses only atomic puts, gets and deletes, so both must behave the
same. A crash is simulated by a checkpoint that raises :class:`SimulatedCrash` (a
BaseException, so nothing in the protocol catches it): the flush stops exactly where a
kill would stop it, then ``recover`` runs as a restarted sink would.
"""

# ruff: noqa: F811  (test parameters name the fixtures imported from sinks.testing)
from __future__ import annotations

from pathlib import Path

import pytest

from sinks.destinations import Destination, LocalDestination
from sinks.paths import data_file_name, intent_key, state_key
from sinks.progress import CRASH_POINTS, PlannedFile, ProgressError, ProgressStore
from sinks.testing import dest, s3  # noqa: F401 (pytest fixtures, shared)

TOPIC = "events"


class SimulatedCrash(BaseException):
    """Stands for SIGKILL at a checkpoint."""


def crash_at(point: str):
    def checkpoint(name: str) -> None:
        if name == point:
            raise SimulatedCrash(name)

    return checkpoint


def _body(data: bytes):
    return lambda: data


def planned(first: int, last: int, hours: tuple[int, ...] = (8, 9)) -> list[PlannedFile]:
    name = data_file_name(TOPIC, 0, first, last)
    return [
        PlannedFile(
            f"t/dt=2026-11-29/hour={hour:02d}/{name}", _body(f"{first}-{last}@{hour}".encode())
        )
        for hour in hours
    ]


def data_files(dest: Destination) -> list[str]:
    return [info.key for info in dest.list("t/")]


def has_intent(dest: Destination) -> bool:
    return dest.get(intent_key("s", TOPIC, 0)) is not None


def test_a_flush_writes_files_then_state_and_removes_its_intent(dest: Destination) -> None:
    store = ProgressStore(dest, "s")
    assert store.recover(TOPIC, 0) is None
    passed: list[str] = []
    state = store.commit_flush(TOPIC, 0, 0, 9, planned(0, 9), passed.append)
    assert passed == list(CRASH_POINTS)
    assert state.last_offset == 9
    assert store.state(TOPIC, 0).files == state.files
    assert len(data_files(dest)) == 2
    assert dest.get(planned(0, 9)[1].key) == b"0-9@9"
    assert not has_intent(dest)
    assert store.recover(TOPIC, 0) == 10


def test_crash_after_intent_leaves_nothing_to_keep(dest: Destination) -> None:
    store = ProgressStore(dest, "s")
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 0, 9, planned(0, 9), crash_at("after_intent"))
    assert has_intent(dest)
    assert store.recover(TOPIC, 0) is None  # no state: start from Kafka's offset
    assert not has_intent(dest)
    assert data_files(dest) == []


@pytest.mark.parametrize("point", ["during_files", "after_files"])
def test_crash_while_or_after_writing_deletes_the_uncommitted_files(
    dest: Destination, point: str
) -> None:
    store = ProgressStore(dest, "s")
    store.commit_flush(TOPIC, 0, 0, 9, planned(0, 9, hours=(7,)))
    committed = data_files(dest)
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 10, 19, planned(10, 19), crash_at(point))
    assert len(data_files(dest)) == (2 if point == "during_files" else 3)
    assert store.recover(TOPIC, 0) == 10
    assert data_files(dest) == committed
    assert not has_intent(dest)


def test_after_recovery_a_flush_with_other_boundaries_leaves_no_duplicate(
    dest: Destination,
) -> None:
    store = ProgressStore(dest, "s")
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 0, 19, planned(0, 19), crash_at("after_files"))
    assert store.recover(TOPIC, 0) is None
    store.commit_flush(TOPIC, 0, 0, 9, planned(0, 9, hours=(8,)))
    store.commit_flush(TOPIC, 0, 10, 19, planned(10, 19, hours=(8,)))
    names = [key.rsplit("/", 1)[1] for key in data_files(dest)]
    assert names == [data_file_name(TOPIC, 0, 0, 9), data_file_name(TOPIC, 0, 10, 19)]


def test_a_killed_local_put_leaves_only_a_hidden_tmp_that_recovery_removes(
    tmp_path: Path,
) -> None:
    dest = LocalDestination(tmp_path / "lake")
    store = ProgressStore(dest, "s")
    files = planned(0, 9)
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 0, 9, files, crash_at("after_intent"))
    # What a kill in the middle of the put leaves: the temporary sibling, half written.
    target = dest.path(files[0].key)
    target.parent.mkdir(parents=True)
    (target.parent / f".{target.name}.tmp").write_bytes(b"half")
    assert data_files(dest) == []  # hidden from listings (and from *.parquet globs)
    assert store.recover(TOPIC, 0) is None
    assert list(target.parent.iterdir()) == []


def test_crash_after_state_keeps_the_committed_files(dest: Destination) -> None:
    store = ProgressStore(dest, "s")
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 0, 9, planned(0, 9), crash_at("after_state"))
    assert has_intent(dest)
    assert store.recover(TOPIC, 0) == 10
    assert len(data_files(dest)) == 2
    assert not has_intent(dest)


def test_recover_is_idempotent(dest: Destination) -> None:
    store = ProgressStore(dest, "s")
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 0, 9, planned(0, 9), crash_at("after_files"))
    assert store.recover(TOPIC, 0) is None
    assert store.recover(TOPIC, 0) is None


def test_partitions_and_sinks_have_separate_progress(dest: Destination) -> None:
    store = ProgressStore(dest, "s")
    store.commit_flush(TOPIC, 0, 0, 9, planned(0, 9))
    assert store.recover(TOPIC, 1) is None
    assert ProgressStore(dest, "other").recover(TOPIC, 0) is None


def test_an_overlapping_flush_is_refused(dest: Destination) -> None:
    store = ProgressStore(dest, "s")
    store.commit_flush(TOPIC, 0, 0, 9, planned(0, 9))
    with pytest.raises(ProgressError, match="overlaps offsets up to 9"):
        store.commit_flush(TOPIC, 0, 5, 12, planned(5, 12))


def test_a_flush_before_recovery_is_refused(dest: Destination) -> None:
    store = ProgressStore(dest, "s")
    with pytest.raises(SimulatedCrash):
        store.commit_flush(TOPIC, 0, 0, 9, planned(0, 9), crash_at("after_files"))
    with pytest.raises(ProgressError, match="recovered first"):
        store.commit_flush(TOPIC, 0, 0, 9, planned(0, 9))


def test_a_damaged_state_file_is_refused_not_ignored(dest: Destination) -> None:
    store = ProgressStore(dest, "s")
    dest.put(state_key("s", TOPIC, 0), b"{not json")
    with pytest.raises(ProgressError, match="not valid JSON") as info:
        store.recover(TOPIC, 0)
    assert info.value.key == state_key("s", TOPIC, 0)


def test_keys_that_escape_the_destination_are_refused(dest: Destination) -> None:
    store = ProgressStore(dest, "s")
    outside = PlannedFile("../elsewhere.parquet", lambda: b"")
    with pytest.raises(ValueError, match="bad key"):
        store.commit_flush(TOPIC, 0, 0, 0, [outside])


def test_a_failed_local_put_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = LocalDestination(tmp_path)
    dest.put("a/b.json", b"old")

    def disk_full(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("sinks.destinations.os.fsync", disk_full)
    with pytest.raises(OSError, match="disk full"):
        dest.put("a/b.json", b"new")
    assert dest.get("a/b.json") == b"old"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]

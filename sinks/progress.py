"""Exactly-once files: the lake, not Kafka, records how far each sink has written.

For every (sink, topic, partition) a small JSON *state* file in the lake holds the last
source offset whose events are in the lake. A flush follows one protocol:

a. write an *intent* file naming the data files about to be written and their offset
   range (atomically);
b. write the data files, each to a temporary name, fsync, rename into place;
c. write the state file with the new last offset — the commit point;
d. delete the intent;
e. (the caller) commit the Kafka offset, which is only advisory (it shows lag).

On start, :meth:`ProgressStore.recover` finishes or undoes whatever a crash interrupted:
an intent beyond the state is a flush that never committed, so the files it names are
deleted; an intent at or below the state committed already and is just removed. The sink
then resumes at ``state + 1``. Since file names are a function of the offset range (see
``sinks.paths``), a crash at any point leaves every event in the lake exactly once.

Every file here is replaced atomically: written to a temporary sibling, fsynced, renamed
with ``os.replace``, and the folder fsynced so the rename itself survives a power cut.
This module touches only the filesystem; it knows nothing of Kafka or Parquet.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from sinks.paths import intent_path, state_path, tmp_path

__all__ = [
    "CRASH_POINTS",
    "Checkpoint",
    "Intent",
    "PartitionState",
    "PlannedFile",
    "ProgressError",
    "ProgressStore",
    "atomic_write",
    "atomic_write_bytes",
    "fsync_dir",
]

#: Named moments of a flush where a test hook may kill the process (see ``Checkpoint``).
CRASH_POINTS = ("after_intent", "after_files", "after_state")

#: Called with each crash point name as a flush passes it; the sink uses it for crash tests.
Checkpoint = Callable[[str], None]


class ProgressError(RuntimeError):
    """Progress bookkeeping that cannot be trusted or would break exactly-once."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """A file a flush will write: its final path and a function writing it to a given path."""

    path: Path
    write: Callable[[Path], None]


@dataclass(frozen=True, slots=True)
class Intent:
    """A flush in progress: offset range and files (relative to the lake root)."""

    first_offset: int
    last_offset: int
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PartitionState:
    """What the lake holds for one (sink, topic, partition): offsets up to ``last_offset``."""

    last_offset: int
    first_offset: int
    files: tuple[str, ...]
    updated_at: str


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new or deleted file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write a file all-or-nothing: ``write(tmp)``, fsync, rename to ``path``, fsync folder.

    A reader (or a crash) sees either the old file or the complete new one, never a part.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """:func:`atomic_write` of a bytes value."""
    atomic_write(path, lambda target: target.write_bytes(data))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class ProgressStore:
    """The progress files of one sink in one lake."""

    def __init__(self, lake: Path, sink: str) -> None:
        self.lake = Path(lake)
        self.sink = sink

    def _relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.lake).as_posix()
        except ValueError as exc:
            raise ValueError(f"{path} is outside the lake {self.lake}") from exc

    def _load(self, path: Path) -> dict | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            # Files here are only ever replaced atomically, so this is outside damage:
            # refuse to guess rather than re-write or skip data.
            raise ProgressError(path, f"not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ProgressError(path, "must hold a JSON object")
        return data

    def state(self, topic: str, partition: int) -> PartitionState | None:
        """The committed progress of a partition, None before its first flush."""
        path = state_path(self.lake, self.sink, topic, partition)
        data = self._load(path)
        if data is None:
            return None
        try:
            return PartitionState(
                last_offset=int(data["last_offset"]),
                first_offset=int(data["first_offset"]),
                files=tuple(str(f) for f in data["files"]),
                updated_at=str(data["updated_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProgressError(path, f"malformed state ({exc!r})") from exc

    def intent(self, topic: str, partition: int) -> Intent | None:
        """The flush a crash interrupted, None when there is none."""
        path = intent_path(self.lake, self.sink, topic, partition)
        data = self._load(path)
        if data is None:
            return None
        try:
            return Intent(
                first_offset=int(data["first_offset"]),
                last_offset=int(data["last_offset"]),
                files=tuple(str(f) for f in data["files"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProgressError(path, f"malformed intent ({exc!r})") from exc

    def recover(self, topic: str, partition: int) -> int | None:
        """Undo an unfinished flush and return the offset to resume at (None: no state).

        Safe to call any number of times; call it before the first flush of a partition.
        """
        state = self.state(topic, partition)
        intent = self.intent(topic, partition)
        if intent is not None:
            if state is None or intent.last_offset > state.last_offset:
                self._delete_files(intent.files)
            path = intent_path(self.lake, self.sink, topic, partition)
            path.unlink(missing_ok=True)
            fsync_dir(path.parent)
        return None if state is None else state.last_offset + 1

    def _delete_files(self, files: Sequence[str]) -> None:
        folders: set[Path] = set()
        for name in files:
            path = self.lake / name
            # The temporary name too: a crash in the middle of (b) leaves one behind.
            for candidate in (path, tmp_path(path)):
                try:
                    candidate.unlink()
                    folders.add(candidate.parent)
                except FileNotFoundError:
                    pass
        for folder in folders:
            fsync_dir(folder)

    def commit_flush(
        self,
        topic: str,
        partition: int,
        first_offset: int,
        last_offset: int,
        files: Sequence[PlannedFile],
        checkpoint: Checkpoint | None = None,
    ) -> PartitionState:
        """Write a flush's files and move the partition's state to ``last_offset``.

        Raises :class:`ProgressError` if the range overlaps what the lake holds already or
        an interrupted flush was not recovered first — either would duplicate events.
        """
        if last_offset < first_offset:
            raise ValueError(f"empty offset range {first_offset}..{last_offset}")
        state_file = state_path(self.lake, self.sink, topic, partition)
        intent_file = intent_path(self.lake, self.sink, topic, partition)
        state = self.state(topic, partition)
        if state is not None and first_offset <= state.last_offset:
            raise ProgressError(
                state_file,
                f"flush of offsets {first_offset}..{last_offset} overlaps offsets up to "
                f"{state.last_offset} already in the lake",
            )
        if intent_file.exists():
            raise ProgressError(intent_file, "an interrupted flush must be recovered first")
        names = tuple(self._relative(f.path) for f in files)

        intent = {"first_offset": first_offset, "last_offset": last_offset, "files": names}
        atomic_write_bytes(intent_file, orjson.dumps(intent))  # (a)
        if checkpoint:
            checkpoint("after_intent")
        for planned in files:  # (b)
            atomic_write(planned.path, planned.write)
        if checkpoint:
            checkpoint("after_files")
        new_state = PartitionState(
            last_offset=last_offset, first_offset=first_offset, files=names, updated_at=_now_iso()
        )
        record = {
            "sink": self.sink,
            "topic": topic,
            "partition": partition,
            "first_offset": first_offset,
            "last_offset": last_offset,
            "files": names,
            "updated_at": new_state.updated_at,
        }
        atomic_write_bytes(state_file, orjson.dumps(record))  # (c) the commit point
        if checkpoint:
            checkpoint("after_state")
        intent_file.unlink()  # (d)
        fsync_dir(intent_file.parent)
        return new_state

"""Exactly-once files: the destination, not Kafka, records how far each sink has written.

For every (sink, topic, partition) a small JSON *state* file in the destination (the lake
folder or the S3 prefix, next to the data) holds the last source offset whose events are
stored. A flush follows one protocol, using only atomic puts (S3 has no rename):

a. put an *intent* naming the files about to be written and their offset range;
b. put the files (data, errors, archive), each atomically;
c. put the state with the new last offset — the commit point;
d. delete the intent;
e. (the caller) commit the Kafka offset, which is only advisory (it shows lag).

On start, :meth:`ProgressStore.recover` finishes or undoes whatever a crash interrupted:
an intent beyond the state is a flush that never committed, so the files it names are
deleted; an intent at or below the state committed already and is just removed. The sink
then resumes at ``state + 1``. File names are a function of the offset range (see
``sinks.paths``), and a killed put leaves no object (S3) or only a hidden temporary file
(local, deleted here too), so a kill at any point leaves every event stored exactly once.
Between a kill and the recovery a reader may see an uncommitted file: its events are in
no other file, so a count is never doubled, and recovery removes it before the re-write.

**Fencing.** A sink cut off from Kafka (stalled, paused, partitioned away) may wake up
after its partitions moved to a new owner and go on with a flush. Each owner therefore
claims a partition in :meth:`ProgressStore.recover` by rewriting its state with the next
*owner epoch* (a conditional put: only if the state is still what it read), and puts every
intent (only if none exists) and state (only if the state is still the version it claimed
or last wrote itself) conditionally, carrying its epoch. A zombie's next intent or state
put is refused with :class:`Fenced`: it can neither commit a flush nor overwrite the new
owner's progress, and since it only deletes after its own state put succeeded, nor delete
the new owner's files. Its data files, if it wrote them before the new owner recovered,
are named in its own intent, which that recovery removes with them. Not covered: a zombie
paused between its intent and its data file puts, resuming after the new owner's recovery,
puts files no intent or state names (its state put is then refused); readers that glob the
folders see them until they are cleaned up by hand. Closing that window needs readers that
trust only committed files, or a zombie that re-checks its intent after its puts.

This module knows nothing of Kafka or Parquet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from os import PathLike

import orjson

from sinks.destinations import ABSENT, Conflict, Destination, LocalDestination
from sinks.paths import intent_key, state_key

__all__ = [
    "CRASH_POINTS",
    "Checkpoint",
    "Fenced",
    "Intent",
    "PartitionState",
    "PlannedFile",
    "ProgressError",
    "ProgressStore",
]

#: Named moments of a flush where a test hook may kill the process (see ``Checkpoint``).
CRASH_POINTS = ("after_intent", "during_files", "after_files", "after_state")

#: Called with each crash point name as a flush passes it; the sink uses it for crash tests.
Checkpoint = Callable[[str], None]


class ProgressError(RuntimeError):
    """Progress bookkeeping that cannot be trusted or would break exactly-once."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


class Fenced(ProgressError):
    """Another owner claimed the partition: this process must not write it any more.

    Transient for the sink (``retriable``): it drops its buffers and rejoins its group.
    """

    retriable = True


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """A file a flush will put: its key and a function producing its bytes."""

    key: str
    data: Callable[[], bytes]


@dataclass(frozen=True, slots=True)
class Intent:
    """A flush in progress: offset range and file keys."""

    first_offset: int
    last_offset: int
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PartitionState:
    """What the destination holds for one (sink, topic, partition): offsets to ``last_offset``."""

    last_offset: int
    first_offset: int
    files: tuple[str, ...]
    updated_at: str
    #: The owner epoch that wrote it (0 before epochs existed).
    epoch: int = 0


#: Threads putting one flush's files at once (per process, shared by every sink).
PUT_THREADS = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _put_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=PUT_THREADS, thread_name_prefix="firelake-put")
        return _pool


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class ProgressStore:
    """The progress files of one sink in one destination (a local root may be given as a path)."""

    def __init__(self, destination: Destination | str | PathLike[str], sink: str) -> None:
        if isinstance(destination, (str, PathLike)):
            destination = LocalDestination(destination)
        self.destination: Destination = destination
        self.sink = sink
        #: (topic, partition) -> (owner epoch, version of the state file we claimed or
        #: wrote last): what this process's next conditional state put expects.
        self._owned: dict[tuple[str, int], tuple[int, str]] = {}

    def _load(self, key: str) -> dict | None:
        return self._parse(key, self.destination.get(key))

    def _parse(self, key: str, raw: bytes | None) -> dict | None:
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            # Files here are only ever put atomically, so this is outside damage: refuse
            # to guess rather than re-write or skip data.
            raise ProgressError(key, f"not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ProgressError(key, "must hold a JSON object")
        return data

    def _state_of(self, key: str, data: dict | None) -> PartitionState | None:
        # A claim before the first flush leaves a state without offsets: no progress yet.
        if data is None or data.get("last_offset") is None:
            return None
        try:
            return PartitionState(
                last_offset=int(data["last_offset"]),
                first_offset=int(data["first_offset"]),
                files=tuple(str(f) for f in data["files"]),
                updated_at=str(data["updated_at"]),
                epoch=int(data.get("epoch", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProgressError(key, f"malformed state ({exc!r})") from exc

    def state(self, topic: str, partition: int) -> PartitionState | None:
        """The committed progress of a partition, None before its first flush."""
        key = state_key(self.sink, topic, partition)
        return self._state_of(key, self._load(key))

    def claim(self, topic: str, partition: int) -> int:
        """Become the partition's owner: rewrite its state with the next epoch; the epoch.

        From then on a process that claimed earlier is fenced. Raises :class:`Fenced` if
        another process claimed or wrote it at the same moment.
        """
        return self._claim(topic, partition)[0]

    def _claim(self, topic: str, partition: int) -> tuple[int, PartitionState | None]:
        """:meth:`claim`, also returning the progress the claimed state holds."""
        key = state_key(self.sink, topic, partition)
        raw, version = self.destination.get_versioned(key)
        data = self._parse(key, raw) or {
            "sink": self.sink,
            "topic": topic,
            "partition": partition,
            "last_offset": None,
        }
        epoch = int(data.get("epoch", 0)) + 1
        data["epoch"] = epoch
        data["claimed_at"] = _now_iso()
        try:
            version = self.destination.put_if(key, orjson.dumps(data), version)
        except Conflict as exc:
            raise Fenced(key, f"claimed by another owner at the same time ({exc})") from exc
        self._owned[(topic, partition)] = (epoch, version)
        return epoch, self._state_of(key, data)

    def intent(self, topic: str, partition: int) -> Intent | None:
        """The flush a crash interrupted, None when there is none."""
        key = intent_key(self.sink, topic, partition)
        data = self._load(key)
        if data is None:
            return None
        try:
            return Intent(
                first_offset=int(data["first_offset"]),
                last_offset=int(data["last_offset"]),
                files=tuple(str(f) for f in data["files"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProgressError(key, f"malformed intent ({exc!r})") from exc

    def recover(self, topic: str, partition: int) -> int | None:
        """Undo an unfinished flush and return the offset to resume at (None: no state).

        Safe to call any number of times; call it before the first flush of a partition.
        It first claims the partition (:meth:`claim`), fencing every earlier owner.
        """
        _, state = self._claim(topic, partition)
        intent = self.intent(topic, partition)
        if intent is not None:
            if state is None or intent.last_offset > state.last_offset:
                self.destination.delete(intent.files)
            self.destination.delete([intent_key(self.sink, topic, partition)])
        return None if state is None else state.last_offset + 1

    def _put(self, planned: PlannedFile) -> None:
        self.destination.put(planned.key, planned.data())

    def commit_flush(
        self,
        topic: str,
        partition: int,
        first_offset: int,
        last_offset: int,
        files: Sequence[PlannedFile],
        checkpoint: Checkpoint | None = None,
    ) -> PartitionState:
        """Put a flush's files and move the partition's state to ``last_offset``.

        Raises :class:`ProgressError` if the range overlaps what is stored already or an
        interrupted flush was not recovered first — either would duplicate events.
        """
        if last_offset < first_offset:
            raise ValueError(f"empty offset range {first_offset}..{last_offset}")
        skey = state_key(self.sink, topic, partition)
        ikey = intent_key(self.sink, topic, partition)
        raw, version = self.destination.get_versioned(skey)
        current = self._parse(skey, raw)
        owned = self._owned.get((topic, partition))
        if owned is not None and owned[1] != version:
            raise Fenced(
                skey,
                f"owner epoch {owned[0]} was superseded (now epoch "
                f"{(current or {}).get('epoch', '?')}); this process must not write it",
            )
        epoch = owned[0] if owned is not None else int((current or {}).get("epoch", 0))
        state = self._state_of(skey, current)
        if state is not None and first_offset <= state.last_offset:
            raise ProgressError(
                skey,
                f"flush of offsets {first_offset}..{last_offset} overlaps offsets up to "
                f"{state.last_offset} already stored",
            )
        if self.destination.get(ikey) is not None:
            raise ProgressError(ikey, "an interrupted flush must be recovered first")
        names = tuple(f.key for f in files)
        if len(set(names)) != len(names):
            raise ValueError(f"a flush names one file twice: {names}")

        intent = {
            "first_offset": first_offset,
            "last_offset": last_offset,
            "files": names,
            "epoch": epoch,
        }
        try:
            self.destination.put_if(ikey, orjson.dumps(intent), ABSENT)  # (a)
        except Conflict as exc:
            raise Fenced(ikey, f"another flush's intent is there ({exc})") from exc
        if checkpoint:
            checkpoint("after_intent")
        if files:  # (b): the first alone (a crash point), the rest concurrently
            self._put(files[0])
            if checkpoint and len(files) > 1:
                checkpoint("during_files")
            if len(files) > 1:
                # Many folders make many files: serialise (zstd releases the GIL) and put
                # them in parallel; all are in before the state, whatever their order.
                list(_put_pool().map(self._put, files[1:]))
        if checkpoint:
            checkpoint("after_files")
        new_state = PartitionState(
            last_offset=last_offset,
            first_offset=first_offset,
            files=names,
            updated_at=_now_iso(),
            epoch=epoch,
        )
        record = {
            "sink": self.sink,
            "topic": topic,
            "partition": partition,
            "first_offset": first_offset,
            "last_offset": last_offset,
            "files": names,
            "updated_at": new_state.updated_at,
            "epoch": epoch,
        }
        try:  # (c) the commit point, only if no other owner wrote the state meanwhile
            version = self.destination.put_if(skey, orjson.dumps(record), version)
        except Conflict as exc:
            raise Fenced(skey, f"owner epoch {epoch} was superseded ({exc})") from exc
        if owned is not None:
            self._owned[(topic, partition)] = (epoch, version)
        if checkpoint:
            checkpoint("after_state")
        self.destination.delete([ikey])  # (d)
        return new_state

"""Quiescence: every consumer of a pipeline has read everything its streams hold.

A replay test may query the lake only when nothing is left in flight. Each agent commits
its consumer group's offsets after its output is safe — a router in the transaction that
writes its output, a sink after the lake holds the flush — so the pipeline is quiescent
when, for every group and every partition it reads, no record lies at or after the
group's committed offset. Transactional writers leave commit markers behind their data,
so "committed < end offset" is not enough to say a record is pending: the gap is read
with a ``read_committed`` consumer, and only records (never markers) count.

One look can race a record that is between hops — and a transaction's commit reaches the
group's offsets and the output partitions at slightly different moments — so
:func:`wait_quiescent` asks for looks that find every group caught up and no end offset
moved for ``settle_s`` on end. A look that Kafka cannot answer yet (a group coordinator
still loading on a fresh broker, a bootstrap that timed out on a busy machine: retriable
errors) counts as a busy look, until the deadline.
Administration and tooling use kafka-python (see DESIGN.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

__all__ = ["GroupSpec", "Quiescence", "QuiescenceTimeout", "wait_quiescent"]


class QuiescenceTimeout(TimeoutError):
    """The pipeline was still busy at the deadline: names the groups that lag."""


@dataclass(frozen=True)
class GroupSpec:
    """A consumer group and the topics it reads."""

    name: str
    topics: tuple[str, ...]


class Quiescence:
    """Looks at a pipeline's consumer groups and says what is still pending."""

    def __init__(self, bootstrap: str, groups: Sequence[GroupSpec], timeout_s: float = 10.0):
        self.groups = list(groups)
        ms = int(timeout_s * 1000)
        self.admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="firelake-test-quiesce",
            request_timeout_ms=ms,
        )
        self._reader: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": "firelake-test-quiesce",
            "enable_auto_commit": False,
            "isolation_level": "read_committed",
            "request_timeout_ms": max(ms, 11_000),
        }
        try:
            self.consumer = KafkaConsumer(**self._reader)
        except BaseException:
            self.admin.close()
            raise
        topics = sorted({t for g in self.groups for t in g.topics})
        self.tps: list[TopicPartition] = []
        for topic in topics:
            parts = self.consumer.partitions_for_topic(topic) or set()
            self.tps.extend(TopicPartition(topic, p) for p in sorted(parts))
        #: (tp, committed, end) gaps already read and found to hold markers only.
        self._markers_only: set[tuple[TopicPartition, int, int]] = set()

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()

    def __enter__(self) -> Quiescence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _with_records(self, gaps: Mapping[TopicPartition, tuple[int, int]]) -> set[TopicPartition]:
        """The partitions whose gap [start, end) holds a record a consumer would see.

        One short-lived consumer reads the gaps of a look (a long-lived one that seeks back
        and forth was seen to stall); a gap found to hold only markers is remembered, so
        each gap is read once.
        """
        todo = {tp: g for tp, g in gaps.items() if (tp, *g) not in self._markers_only}
        found: set[TopicPartition] = set()
        if not todo:
            return found
        reader = KafkaConsumer(**self._reader)
        try:
            reader.assign(list(todo))
            for tp, (start, _) in todo.items():
                reader.seek(tp, start)
            deadline = time.monotonic() + 5.0
            while todo and time.monotonic() < deadline:
                polled = reader.poll(timeout_ms=200, max_records=100)
                for tp, records in polled.items():
                    start, end = todo.get(tp, (0, -1))
                    if any(start <= r.offset < end for r in records):
                        found.add(tp)
                        del todo[tp]
                for tp, (start, end) in list(todo.items()):
                    if reader.position(tp) >= end:
                        self._markers_only.add((tp, start, end))
                        del todo[tp]
            return found | set(todo)  # undecided at the deadline: still pending
        finally:
            reader.close()

    def pending(self, full: bool = True) -> tuple[dict[str, int], dict[TopicPartition, int]]:
        """Partitions each group has yet to read (by group), and the end offsets seen.

        Groups are looked at in the given order (upstream first); without ``full`` the
        look stops at the first group that lags, which is all a wait needs to know.
        """
        ends: dict[TopicPartition, int] = self.consumer.end_offsets(self.tps) if self.tps else {}
        wanted = {g.name: [tp for tp in self.tps if tp.topic in g.topics] for g in self.groups}
        offsets = self.admin.list_group_offsets(wanted) if wanted else {}
        lagging: dict[str, int] = {}
        for spec in self.groups:
            tps = wanted[spec.name]
            committed: Mapping[TopicPartition, object] = offsets.get(spec.name) or {}
            gaps = {}
            for tp in tps:
                end = ends.get(tp, 0)
                meta = committed.get(tp)
                start = max(getattr(meta, "offset", -1) if meta is not None else -1, 0)
                if start < end:
                    gaps[tp] = (start, end)
            behind = len(self._with_records(gaps))
            if behind:
                lagging[spec.name] = behind
                if not full:
                    break
        return lagging, ends


def wait_quiescent(
    bootstrap: str,
    groups: Sequence[GroupSpec],
    timeout_s: float,
    alive: Callable[[], str | None] = lambda: None,
    interval_s: float = 0.1,
    settle_s: float = 1.5,
) -> float:
    """Wait until looks find nothing pending for ``settle_s``; the seconds it took.

    ``alive`` returns a reason to give up (a pipeline process that died), or None.
    Raises :class:`QuiescenceTimeout` naming the lagging groups at the deadline.
    """
    began = time.monotonic()
    deadline = began + timeout_s
    previous: dict[TopicPartition, int] | None = None
    since = 0.0
    lagging: dict[str, int] = {}
    look: Quiescence | None = None
    unanswered: KafkaError | None = None
    try:
        while True:
            problem = alive()
            if problem:
                raise QuiescenceTimeout(problem)
            try:
                look = look or Quiescence(bootstrap, groups)
                lagging, ends = look.pending(full=False)
                unanswered = None
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                unanswered, lagging, ends = exc, {"(Kafka did not answer)": 1}, {}
            now = time.monotonic()
            if lagging or previous != ends:
                previous, since = (None if lagging else ends), now
            elif now - since >= settle_s:
                return now - began
            if time.monotonic() > deadline:
                if unanswered is not None:
                    raise QuiescenceTimeout(
                        f"pipeline not quiescent after {timeout_s:.0f} s: Kafka did not "
                        f"answer the last look ({type(unanswered).__name__}: {unanswered})"
                    ) from unanswered
                assert look is not None
                lagging, _ = look.pending()
                detail = ", ".join(f"{g} ({n} partitions behind)" for g, n in lagging.items())
                raise QuiescenceTimeout(
                    f"pipeline not quiescent after {timeout_s:.0f} s: "
                    f"{detail or 'end offsets still moving'}"
                )
            time.sleep(interval_s)
    finally:
        if look is not None:
            look.close()

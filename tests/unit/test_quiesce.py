"""wait_quiescent's loop: busy looks, looks Kafka could not answer yet, the deadline.

The looks themselves are read from a real broker in the replay tests; here a scripted
look stands in for :class:`cases.quiesce.Quiescence` so the loop's decisions are exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka import TopicPartition
from kafka.errors import (
    CoordinatorNotAvailableError,
    KafkaTimeoutError,
    TopicAuthorizationFailedError,
)

import cases.quiesce as quiesce
from cases.quiesce import GroupSpec, QuiescenceTimeout, wait_quiescent

TP = TopicPartition("events", 0)
QUIET = ({}, {TP: 10})


class ScriptedLook:
    """A look whose construction and answers follow scripts (an error in one is raised)."""

    starts: Iterator[BaseException | None] = iter(())
    answers: Iterator[object] = iter(())
    made = 0
    closed = 0

    def __init__(self, bootstrap: str, groups: list[GroupSpec]) -> None:
        failure = next(self.starts, None)
        if failure is not None:
            raise failure
        type(self).made += 1

    def pending(self, full: bool = True) -> tuple[dict[str, int], dict[TopicPartition, int]]:
        answer = next(self.answers)
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[return-value]

    def close(self) -> None:
        type(self).closed += 1


@pytest.fixture
def look(monkeypatch: pytest.MonkeyPatch) -> type[ScriptedLook]:
    class Look(ScriptedLook):
        pass

    monkeypatch.setattr(quiesce, "Quiescence", Look)
    return Look


def wait(timeout_s: float = 5.0) -> float:
    return wait_quiescent("b", [], timeout_s=timeout_s, interval_s=0.001, settle_s=0.01)


def test_a_coordinator_not_ready_yet_is_a_busy_look(look: type[ScriptedLook]) -> None:
    # The first look on a fresh broker: the group coordinator is still loading.
    look.answers = iter([CoordinatorNotAvailableError("loading"), *[QUIET] * 100])
    assert wait() < 5
    assert (look.made, look.closed) == (1, 1)


def test_a_bootstrap_timeout_is_retried_with_a_new_look(look: type[ScriptedLook]) -> None:
    look.starts = iter([KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1"), None])
    look.answers = iter([QUIET] * 100)
    wait()
    assert (look.made, look.closed) == (1, 1)


def test_kafka_never_answering_names_the_error_at_the_deadline(look: type[ScriptedLook]) -> None:
    look.answers = iter([CoordinatorNotAvailableError("still loading")] * 100_000)
    with pytest.raises(QuiescenceTimeout, match="CoordinatorNotAvailableError"):
        wait(timeout_s=0.05)
    assert look.closed == 1


def test_a_terminal_kafka_error_is_raised_at_once(look: type[ScriptedLook]) -> None:
    look.answers = iter([TopicAuthorizationFailedError("no read on events")])
    with pytest.raises(TopicAuthorizationFailedError):
        wait()
    assert look.closed == 1


def test_end_offsets_must_hold_still_before_the_wait_ends(look: type[ScriptedLook]) -> None:
    busy = ({"firelake-router-x": 1}, {TP: 10})
    moved = ({}, {TP: 12})
    look.answers = iter([busy, busy, QUIET, moved, *[moved] * 100])
    wait()
    assert next(look.answers) == moved  # it settled on the moved offsets, not the first quiet


def test_lagging_at_the_deadline_names_the_group(look: type[ScriptedLook]) -> None:
    busy = ({"firelake-router-x": 2}, {TP: 10})
    look.answers = iter([busy] * 100_000)
    with pytest.raises(QuiescenceTimeout, match=r"firelake-router-x \(2 partitions behind\)"):
        wait(timeout_s=0.05)

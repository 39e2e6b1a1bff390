"""The ingest's answer deadline: every request is answered within a bound, whatever Kafka does.

A broker that is killed or stalled leaves a producer's futures pending for as long as its
retries last (tens of seconds, or until the broker returns). A client gives up long before
that and retries, so the ingest answers by a deadline instead: :func:`answer_by` starts it
for the request in the current task (a context variable, so the native route and the AWS
endpoint share one mechanism without passing it through every call), :func:`remaining` bounds
each wait by it, and a record whose delivery Kafka has not confirmed in time is reported
failed with :class:`DeliveryUnknown`.

Such a record *may* still be written later (the producer keeps retrying it). That is why
the answer says "unknown", not "lost": a client that retries it creates a repeat, which the
router drops by its idempotency key within ``dedup_window_seconds`` (``agents.dedup``).

Pure: no Kafka client.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["DeliveryUnknown", "answer_by", "remaining", "unknown"]

#: (deadline on the loop's clock, the span in seconds it was set with)
_DEADLINE: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar(
    "firelake_answer_deadline", default=None
)


class DeliveryUnknown(Exception):
    """Kafka did not confirm a record before the answer deadline: it may or may not be stored.

    Not retriable *by the ingest* (the answer is due); the client should retry the record,
    which the router deduplicates by its event id.
    """

    retriable = False

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"Kafka did not confirm the record within the ingest's {seconds:g} s answer "
            "deadline; it may or may not have been stored: retry it with the same event id "
            "(a repeat is dropped by the router within its dedup window)"
        )
        self.seconds = seconds


@contextlib.contextmanager
def answer_by(seconds: float) -> Iterator[float]:
    """Set the deadline of the request handled in this task to ``seconds`` from now.

    Yields the deadline on the event loop's clock. Nested calls keep the earlier deadline.
    """
    now = asyncio.get_running_loop().time()
    current = _DEADLINE.get()
    if current is not None and current[0] <= now + seconds:
        yield current[0]
        return
    token = _DEADLINE.set((now + seconds, seconds))
    try:
        yield now + seconds
    finally:
        _DEADLINE.reset(token)


def remaining(bound: float | None = None) -> float | None:
    """Seconds left before the current deadline (at least 0), capped by ``bound``.

    None when neither a deadline nor a bound applies (wait as long as it takes).
    """
    current = _DEADLINE.get()
    if current is None:
        return bound
    left = max(0.0, current[0] - asyncio.get_running_loop().time())
    return left if bound is None else min(bound, left)


def unknown() -> DeliveryUnknown:
    """The outcome of a record still unconfirmed when the current deadline passed."""
    current = _DEADLINE.get()
    return DeliveryUnknown(current[1] if current is not None else 0.0)

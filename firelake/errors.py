"""Firelake's error vocabulary: terminal or transient, decided by type, never by message text.

Like aiokafka's ``KafkaError.retriable`` (and dlt's terminal/transient split), every Firelake
error says whether trying the same thing again can succeed. Retry loops ask
:func:`is_retriable`; a terminal error goes to the DLQ (or to the user) at once.

This module is a leaf: it imports nothing from Firelake and no Kafka client, so every layer
may raise and classify these errors.
"""

from __future__ import annotations

__all__ = [
    "FirelakeError",
    "TerminalError",
    "TransientError",
    "is_retriable",
]


class FirelakeError(Exception):
    """Base of Firelake's own errors. ``retriable``: can the same call succeed later?"""

    retriable: bool = False


class TerminalError(FirelakeError):
    """Retrying cannot help: bad input, a missing resource, a refused setting."""

    retriable = False


class TransientError(FirelakeError):
    """A passing condition (a broker away, a timeout): the same call may succeed later.

    ``retry_after`` (seconds), when known, is how long the caller should wait first.
    """

    retriable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: OS errors that describe a passing condition of the network or of a peer.
_TRANSIENT_OS_ERRORS = (ConnectionError, TimeoutError, InterruptedError, BlockingIOError)


#: Kafka client errors that flag themselves not retriable, yet mean "the broker is slow or
#: away": aiokafka's ``KafkaTimeoutError`` (a send or metadata wait that ran out), whose
#: cure is trying later. Matched by class name, so this leaf imports no Kafka client.
_TRANSIENT_KAFKA_ERRORS = frozenset({"KafkaTimeoutError"})


def is_retriable(error: BaseException) -> bool:
    """True when ``error`` describes a condition that may pass by itself.

    Firelake errors and Kafka client errors (aiokafka, kafka-python) carry a ``retriable``
    attribute and are trusted on it, except a Kafka timeout (always transient); connection
    resets and timeouts are transient; every other error (a bug, bad data, a full disk, a
    refused permission) is terminal.
    """
    if any(cls.__name__ in _TRANSIENT_KAFKA_ERRORS for cls in type(error).__mro__):
        return True
    flag = getattr(error, "retriable", None)
    if isinstance(flag, bool):
        return flag
    return isinstance(error, _TRANSIENT_OS_ERRORS)

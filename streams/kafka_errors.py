"""How Firelake classifies Kafka's errors: for ingest callers, and transient or not.

:func:`is_transient` is :func:`firelake.errors.is_retriable` (aiokafka's ``retriable`` flag,
Firelake's own, connection resets, and aiokafka's ``KafkaTimeoutError``, which flags itself
not retriable, yet is how a broker that is away shows on a send: retrying later is the
cure). :data:`THROTTLE_ERRORS` are the transient ones answered as Kinesis throttling.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import errors as aiokafka_errors

from firelake.errors import is_retriable
from streams.deadline import remaining, unknown

__all__ = [
    "INTERNAL",
    "THROTTLED",
    "THROTTLE_ERRORS",
    "is_transient",
    "record_failure",
    "settle",
]

THROTTLED = "ProvisionedThroughputExceededException"
INTERNAL = "InternalFailure"

#: Kafka errors that mean "the broker is slow or overloaded, retry later" rather than a
#: fault: answered per record as Kinesis' ProvisionedThroughputExceededException.
THROTTLE_ERRORS: tuple[type[BaseException], ...] = (
    aiokafka_errors.KafkaTimeoutError,
    aiokafka_errors.RequestTimedOutError,
    aiokafka_errors.NotEnoughReplicasError,
    aiokafka_errors.NotEnoughReplicasAfterAppendError,
    TimeoutError,
)


#: True when trying the same Kafka call again later may succeed (see the module doc).
is_transient = is_retriable


def record_failure(exc: BaseException) -> tuple[str, str]:
    """(error code, message) of a record Kafka did not take, as Kinesis reports it."""
    code = THROTTLED if isinstance(exc, THROTTLE_ERRORS) else INTERNAL
    text = str(exc)
    return code, f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def settle(pending: list[Any]) -> list[Any]:
    """Await every send future; exceptions (raised at send or at ack) become outcomes.

    ``pending`` holds send futures and the exceptions of sends that failed at once; the
    answer has the same order, each future replaced by its result or its exception.
    A future Kafka has not settled by the request's answer deadline (:mod:`streams.deadline`)
    becomes :class:`~streams.deadline.DeliveryUnknown`: it may still be written later.
    """
    futures = [item for item in pending if not isinstance(item, BaseException)]
    if futures:
        await asyncio.wait(futures, timeout=remaining())
    outcomes: list[Any] = []
    for item in pending:
        if isinstance(item, BaseException):
            outcomes.append(item)
        elif not item.done():
            # Keep its eventual error from being logged as "never retrieved".
            item.add_done_callback(_retrieve)
            outcomes.append(unknown())
        elif item.cancelled():
            outcomes.append(unknown())
        else:
            outcomes.append(item.exception() or item.result())
    return outcomes


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()

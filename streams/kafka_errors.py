"""How the ingest paths classify Kafka's errors for their callers."""

from __future__ import annotations

from aiokafka import errors as aiokafka_errors

__all__ = ["INTERNAL", "THROTTLED", "THROTTLE_ERRORS", "record_failure"]

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


def record_failure(exc: BaseException) -> tuple[str, str]:
    """(error code, message) of a record Kafka did not take, as Kinesis reports it."""
    code = THROTTLED if isinstance(exc, THROTTLE_ERRORS) else INTERNAL
    text = str(exc)
    return code, f"{type(exc).__name__}: {text}" if text else type(exc).__name__

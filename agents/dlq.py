"""Dead-letter records: an event the router could not route, with the reason and its origin.

Like a Lambda on-failure destination, every record says what failed (``error_type``,
``reason``), where the event came from (topic, partition, offset, index in the envelope)
and carries the original bytes so the event can be inspected and redriven. The fields are
those of :data:`firelake.config.DLQ_SCHEMA`, so the DLQ stream sinks into a lake table.

Payloads are the original bytes decoded as UTF-8 when they are valid UTF-8 (``payload``),
else base64 (``payload_base64``). A payload is bounded by ``max_payload_bytes`` so a DLQ
envelope always fits in a Kafka message; a cut payload says so in the reason.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from agents.validation import format_timestamp

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "DeadLetters", "dlq_line", "dlq_record"]

#: Largest original payload kept in one DLQ record, in bytes (before base64).
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024


def dlq_record(
    payload: bytes,
    error_type: str,
    reason: str,
    *,
    router: str,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    source_index: int,
    attempts: int = 1,
    failed_at: str,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> dict[str, Any]:
    """One DLQ record as a dict in DLQ_SCHEMA field order.

    ``failed_at`` is a canonical timestamp string; ``source_index`` is -1 when the whole
    message failed (no event lines could be read from it).
    """
    if len(payload) > max_payload_bytes:
        reason = f"{reason} [payload cut to {max_payload_bytes} of {len(payload)} bytes]"
        payload = payload[:max_payload_bytes]
    text: str | None
    encoded: str | None
    try:
        text, encoded = payload.decode("utf-8"), None
    except UnicodeDecodeError:
        # A cut can split a multi-byte character; that is reported as base64 like any
        # other invalid UTF-8, so the kept bytes stay exactly the original ones.
        text, encoded = None, base64.b64encode(payload).decode("ascii")
    return {
        "failed_at": failed_at,
        "router": router,
        "error_type": error_type,
        "reason": reason,
        "source_topic": source_topic,
        "source_partition": source_partition,
        "source_offset": source_offset,
        "source_index": source_index,
        "attempts": attempts,
        "payload": text,
        "payload_base64": encoded,
    }


def dlq_line(record: dict[str, Any]) -> bytes:
    """A DLQ record as one compact JSON line (no newline inside, as envelopes require)."""
    return orjson.dumps(record)


class DeadLetters:
    """Builds DLQ records for one router with an injectable clock (epoch seconds)."""

    def __init__(
        self,
        router: str,
        clock: Callable[[], float] = time.time,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        if max_payload_bytes < 1:
            raise ValueError(f"max_payload_bytes must be >= 1, got {max_payload_bytes}")
        self.router = router
        self.clock = clock
        self.max_payload_bytes = max_payload_bytes

    def now(self) -> str:
        """The current time in canonical form."""
        return format_timestamp(datetime.fromtimestamp(self.clock(), tz=UTC))

    def record(
        self,
        payload: bytes,
        error_type: str,
        reason: str,
        *,
        source_topic: str,
        source_partition: int,
        source_offset: int,
        source_index: int,
        failed_at: str | None = None,
    ) -> dict[str, Any]:
        """A DLQ record of this router (attempts=1: the router does not retry bad data)."""
        return dlq_record(
            payload,
            error_type,
            reason,
            router=self.router,
            source_topic=source_topic,
            source_partition=source_partition,
            source_offset=source_offset,
            source_index=source_index,
            failed_at=failed_at or self.now(),
            max_payload_bytes=self.max_payload_bytes,
        )

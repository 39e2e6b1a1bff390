"""Dead-letter records: an event the router could not route, with the reason and its origin.

Like a Lambda on-failure destination, every record says what failed (``error_type``,
``reason``), where the event came from (topic, partition, offset, index in the envelope)
and carries the original bytes so the event can be inspected and redriven. The fields are
those of :data:`firelake.config.DLQ_SCHEMA`, so the DLQ stream sinks into a lake table.

Payloads are the original bytes decoded as UTF-8 when they are valid UTF-8 (``payload``),
else base64 (``payload_base64``). The stored payload is bounded by ``max_payload_bytes`` so a
DLQ record always fits in an envelope; a payload cut to fit says so in the reason.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from agents.validation import format_timestamp

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "HEADER_ATTEMPTS",
    "HEADER_FIRST_ATTEMPT",
    "DeadLetterBatch",
    "DeadLetterSource",
    "DeadLetters",
    "dlq_line",
    "dlq_record",
    "redrive_state",
]

#: Headers of a redriven event: tries so far, and the time of the first (canonical form).
HEADER_ATTEMPTS = "fl-attempts"
HEADER_FIRST_ATTEMPT = "fl-first-attempt"

#: Largest payload one DLQ record stores, in bytes as stored (JSON-escaped text or base64).
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
    first_attempt_at: str | None = None,
    source_key: str | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> dict[str, Any]:
    """One DLQ record as a dict in DLQ_SCHEMA field order.

    ``failed_at`` is a canonical timestamp string and also the last attempt's time;
    ``first_attempt_at`` is when the event was first tried (before any retry or redrive;
    default: ``failed_at``). ``attempts`` counts every try, redrives included.
    ``source_index`` is -1 when the whole message failed (no event lines could be read).
    """
    original_size = len(payload)
    while True:
        text, encoded = _stored(payload)
        # Bound what the record stores (JSON-escaped text or base64), not just the raw
        # bytes: escaping can grow text up to six-fold, base64 by a third.
        stored_size = len(orjson.dumps(text)) if text is not None else len(encoded or "")
        if stored_size <= max_payload_bytes or not payload:
            break
        payload = payload[: min(len(payload) - 1, len(payload) * max_payload_bytes // stored_size)]
    if len(payload) < original_size:
        reason = f"{reason} [payload cut to its first {len(payload)} of {original_size} bytes]"
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
        "first_attempt_at": first_attempt_at or failed_at,
        "last_attempt_at": failed_at,
        "source_key": source_key,
    }


def _stored(payload: bytes) -> tuple[str | None, str | None]:
    """(payload, payload_base64): UTF-8 text when the bytes are valid UTF-8, else base64."""
    try:
        return payload.decode("utf-8"), None
    except UnicodeDecodeError:
        # A cut can split a multi-byte character; that is stored as base64 like any other
        # invalid UTF-8, so the kept bytes are always exactly the original ones.
        return None, base64.b64encode(payload).decode("ascii")


def redrive_state(headers: Sequence[tuple[str, bytes]] | None) -> tuple[int, str | None]:
    """(attempts of this try, first attempt time) from a message's headers.

    A message without redrive headers is a first try: (1, None).
    """
    attempts, first = 1, None
    for name, value in headers or ():
        if name == HEADER_ATTEMPTS:
            try:
                attempts = int(value) + 1
            except ValueError:
                pass  # a foreign header: count this as a first try
        elif name == HEADER_FIRST_ATTEMPT:
            first = value.decode("ascii", "replace") or None
    return attempts, first


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
        if max_payload_bytes < 64:
            raise ValueError(f"max_payload_bytes must be >= 64, got {max_payload_bytes}")
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
        attempts: int = 1,
        first_attempt_at: str | None = None,
        source_key: str | None = None,
    ) -> dict[str, Any]:
        """A DLQ record of this router; ``attempts`` and ``first_attempt_at`` as tried."""
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
            attempts=attempts,
            first_attempt_at=first_attempt_at,
            source_key=source_key,
            max_payload_bytes=self.max_payload_bytes,
        )


@dataclass(frozen=True, slots=True)
class DeadLetterSource:
    """The message failed events came from, and how often it was tried.

    Shared by every DLQ record of that message: the router's bad data and the edge's
    refused deliveries describe their origin the same way, through :class:`DeadLetterBatch`.
    """

    topic: str
    partition: int
    offset: int
    attempts: int = 1
    first_attempt_at: str | None = None


class DeadLetterBatch:
    """The DLQ records of one source message, in order, with one clock read for them all.

    The one place a router builds a DLQ record from an event of a message: the time is read
    on the first record only (``failed_at`` fixes it), since a message may hold thousands
    of bad events.
    """

    __slots__ = ("_failed_at", "letters", "records", "source")

    def __init__(
        self, letters: DeadLetters, source: DeadLetterSource, failed_at: str | None = None
    ) -> None:
        self.letters = letters
        self.source = source
        self.records: list[dict[str, Any]] = []
        self._failed_at = failed_at

    def add(
        self, payload: bytes, index: int, error_type: str, reason: str, key: str | None
    ) -> None:
        """Dead-letter event ``index`` of the message (-1: the whole message) with its key."""
        failed_at = self._failed_at
        if failed_at is None:
            failed_at = self._failed_at = self.letters.now()
        source = self.source
        self.records.append(
            self.letters.record(
                payload,
                error_type,
                reason,
                source_topic=source.topic,
                source_partition=source.partition,
                source_offset=source.offset,
                source_index=index,
                failed_at=failed_at,
                attempts=source.attempts,
                first_attempt_at=source.first_attempt_at,
                source_key=key,
            )
        )

"""Envelopes: many events bound for one partition in one Kafka message.

Like the Kinesis Producer Library's record aggregation, internal streams pack the events
bound for one partition into one message whose value is newline-delimited JSON (one event
a line, compact, so no raw newline inside a line) and whose headers say what it holds.
Faust agents and sinks then pay per-message costs once per hundreds of events, and the
sink hands the joined lines straight to ``pyarrow.json.read_json``.

A message without the ``fl-format`` header is a *single* event (``envelope = "single"``
streams, or outside producers): its whole value is the event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from firelake.errors import TerminalError

__all__ = [
    "FORMAT_NDJSON",
    "HEADER_COUNT",
    "HEADER_FORMAT",
    "HEADER_KEYS",
    "HEADER_TIME_MAX",
    "HEADER_TIME_MIN",
    "Envelope",
    "EnvelopeError",
    "decode",
    "encode",
    "header",
]

HEADER_FORMAT = "fl-format"
HEADER_COUNT = "fl-count"
HEADER_TIME_MIN = "fl-time-min"
HEADER_TIME_MAX = "fl-time-max"
HEADER_KEYS = "fl-keys"
FORMAT_NDJSON = b"ndjson/1"

Headers = Sequence[tuple[str, bytes]]


class EnvelopeError(TerminalError, ValueError):
    """A message that claims to be an envelope but is not a well-formed one (bad data:
    reading it again cannot help)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """The events of one Kafka message.

    ``lines`` are the raw event bytes, one per event, exactly as produced; ``keys`` are
    their partition keys where the producer kept them (else ``None``); ``time_min`` and
    ``time_max`` bound the events' times in epoch milliseconds (0 when unknown).
    """

    lines: tuple[bytes, ...]
    keys: tuple[str, ...] | None = None
    time_min: int = 0
    time_max: int = 0
    batched: bool = True

    def __len__(self) -> int:
        return len(self.lines)

    def key_at(self, index: int) -> str | None:
        return self.keys[index] if self.keys is not None else None


def encode(
    lines: Sequence[bytes],
    keys: Sequence[str] | None = None,
    time_min: int = 0,
    time_max: int = 0,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Pack event lines into one message value and its headers.

    Raises :class:`EnvelopeError` for an empty envelope, a line holding a newline, or keys
    that do not match the lines one to one.
    """
    if not lines:
        raise EnvelopeError("an envelope holds at least one event")
    for index, line in enumerate(lines):
        if b"\n" in line:
            raise EnvelopeError(
                f"event {index} contains a newline; envelope lines are compact JSON"
            )
    headers = [
        (HEADER_FORMAT, FORMAT_NDJSON),
        (HEADER_COUNT, str(len(lines)).encode()),
        (HEADER_TIME_MIN, str(time_min).encode()),
        (HEADER_TIME_MAX, str(time_max).encode()),
    ]
    if keys is not None:
        if len(keys) != len(lines):
            raise EnvelopeError(f"{len(keys)} keys for {len(lines)} events")
        headers.append((HEADER_KEYS, orjson.dumps(list(keys))))
    return b"\n".join(lines), headers


def header(headers: Iterable[tuple[str, bytes]] | None, name: str) -> bytes | None:
    """The value of the first header called ``name``, or ``None`` without one."""
    for key, value in headers or ():
        if key == name:
            return value
    return None


def _int_header(headers: Headers | None, name: str) -> int:
    raw = header(headers, name)
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError as exc:
        raise EnvelopeError(f"header {name} is not an integer: {raw!r}") from exc


def decode(
    value: bytes | None, headers: Headers | None = None, key: bytes | None = None
) -> Envelope:
    """Unpack a Kafka message into its events (one event for a message without headers)."""
    value = value or b""
    fmt = header(headers, HEADER_FORMAT)
    if fmt is None:
        keys = (key.decode("utf-8", "replace"),) if key is not None else None
        return Envelope(lines=(value,), keys=keys, batched=False)
    if fmt != FORMAT_NDJSON:
        raise EnvelopeError(f"unknown envelope format {fmt!r}")
    lines = tuple(value.split(b"\n"))
    count = _int_header(headers, HEADER_COUNT)
    if count != len(lines):
        raise EnvelopeError(
            f"header {HEADER_COUNT} says {count} events, the value holds {len(lines)}"
        )
    keys: tuple[str, ...] | None = None
    raw_keys = header(headers, HEADER_KEYS)
    if raw_keys is not None:
        try:
            parsed = orjson.loads(raw_keys)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"header {HEADER_KEYS} is not JSON: {exc}") from exc
        if not isinstance(parsed, list) or len(parsed) != len(lines):
            raise EnvelopeError(f"header {HEADER_KEYS} must list one key per event")
        keys = tuple(str(k) for k in parsed)
    return Envelope(
        lines=lines,
        keys=keys,
        time_min=_int_header(headers, HEADER_TIME_MIN),
        time_max=_int_header(headers, HEADER_TIME_MAX),
    )

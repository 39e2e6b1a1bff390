"""Ranges of a stream: the ``--from`` / ``--to`` of ``firelake replay`` and ``record``.

A position is an ISO 8601 time (``2026-11-29T08:00:00Z``), epoch milliseconds written
``@1764403200000``, a Kafka offset (a plain integer, the same on every partition), or
``earliest`` / ``latest``; ``--from`` is inclusive and ``--to`` exclusive. A live stream
turns times into offsets with Kafka's offsets-for-times (``streams.replay``); events that
carry their own offset and ingest timestamp — the lake's raw archive — are selected one by
one with :func:`in_range`, which gives the same events when a partition's timestamps grow
with its offsets (ingest time). Pure: no Kafka client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from firelake.config import starting_timestamp_ms

__all__ = ["Position", "ReplayError", "in_range", "parse_position"]


class ReplayError(ValueError):
    """A replay that cannot run: names the stream or position at fault."""


@dataclass(frozen=True)
class Position:
    """One end of a range: ``kind`` is offset, time (epoch ms), earliest or latest."""

    kind: str
    value: int = 0


def parse_position(text: str) -> Position:
    """Parse ``--from`` / ``--to``; ReplayError names what was expected."""
    text = text.strip()
    if text in ("earliest", "latest"):
        return Position(text)
    if re.fullmatch(r"\d+", text):
        return Position("offset", int(text))
    if re.fullmatch(r"@\d+", text):
        return Position("time", int(text[1:]))
    try:
        return Position("time", starting_timestamp_ms(text))
    except ValueError:
        raise ReplayError(
            f"{text!r} is not a position: give an ISO time (2026-11-29T08:00:00Z), "
            "@<epoch ms>, an offset, earliest or latest"
        ) from None


def in_range(
    offset: int | None, timestamp: int | None, start: Position, end: Position | None = None
) -> bool | None:
    """Whether one event at ``offset`` with ingest ``timestamp`` lies in [start, end).

    None when a bound needs what the event lacks (an archive entry written before entries
    kept their offset and timestamp): such an event cannot be placed in the range.
    """
    unknown = False
    for position, is_start in ((start, True), (end, False)):
        if position is None or position.kind == ("earliest" if is_start else "latest"):
            continue
        if position.kind in ("earliest", "latest"):
            return False  # from latest, or to earliest: an empty range
        have = offset if position.kind == "offset" else timestamp
        if have is None:
            unknown = True
        elif (have < position.value) if is_start else (have >= position.value):
            return False
    return None if unknown else True

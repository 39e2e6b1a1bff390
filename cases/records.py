"""Recorded events, a case's input lines: :mod:`streams.recorded` under the case runner's name.

The format, reading, writing and packing into messages live in ``streams.recorded``,
because the lake's raw archive and ``firelake replay --from-archive`` use the same events;
this module keeps the names the case runner, the pytest plugin and users import.
"""

from __future__ import annotations

from streams.recorded import (
    MAX_ENVELOPE_BYTES,
    MAX_ENVELOPE_EVENTS,
    InputError,
    OutMessage,
    RecordedEvent,
    events_of_message,
    interleave,
    pack,
    read_events,
    time_ordered,
    write_events,
)

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MAX_ENVELOPE_EVENTS",
    "InputError",
    "OutMessage",
    "RecordedEvent",
    "events_of_message",
    "interleave",
    "pack",
    "read_events",
    "time_ordered",
    "write_events",
]

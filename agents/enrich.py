"""Enrichment the router adds to events: a stable event id, the event's date and hour.

The id of an event whose producer gave none is derived from its bytes (a hash), so the same
event delivered twice gets the same id and the idempotency window recognises the repeat;
two different events get different ids. Date and hour come from the event's canonical time
(``YYYY-MM-DDTHH:...Z``, see :mod:`agents.validation`), so they are string slices, no parse.
"""

from __future__ import annotations

import hashlib

__all__ = ["date_hour", "stable_event_id"]


def stable_event_id(line: bytes) -> str:
    """A deterministic id for an event's bytes: 32 hex digits of its BLAKE2b-128 hash."""
    return hashlib.blake2b(line, digest_size=16).hexdigest()


def date_hour(canonical: str) -> tuple[str, int] | None:
    """(``YYYY-MM-DD``, hour) of a canonical timestamp, or None if it is not one."""
    if len(canonical) < 13 or canonical[10] != "T":
        return None
    hour = canonical[11:13]
    if not hour.isdigit():
        return None
    return canonical[:10], int(hour)

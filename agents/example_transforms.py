"""Example user transform for the pipes-and-filters pattern (``firelake/examples/pipes.toml``).

Firehose transformation semantics: each event comes back Ok (changed), Dropped or
ProcessingFailed; see :mod:`agents.transform`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from agents.transform import Dropped, Ok, ProcessingFailed, Result

__all__ = ["pseudonymise"]


def pseudonymise(events: list[dict[str, Any]]) -> list[Result]:
    """Replace user ids by a hash, drop bots, refuse events without a page."""
    results: list[Result] = []
    for event in events:
        if str(event.get("user_id", "")).startswith("bot-"):
            results.append(Dropped())
        elif not event.get("page"):
            results.append(ProcessingFailed("no page: cannot attribute the click"))
        else:
            user = str(event["user_id"]).encode()
            results.append(Ok({**event, "user_id": hashlib.sha256(user).hexdigest()[:16]}))
    return results

"""Riding out broker restarts and stalls: a consumer-group service rejoins instead of dying.

When the broker is killed, restarted or stalled, aiokafka surfaces it to a consumer-group
service as errors it flags retriable (a lost connection, a coordinator that moved, a
request timeout), and — when the broker comes back and answers a JoinGroup or SyncGroup in
a way the client does not expect — as a plain ``KafkaError('UnknownError()')``. Before this
module the sinks process crashed on the latter. :func:`run_rejoining` runs a service's
consume loop and, on such an error, lets the service drop what it had not committed, waits
with exponential backoff and full jitter, and runs the loop again (a new consumer, a fresh
join); it counts every rejoin. Any other error (a bug, bad configuration, an authorization
refusal) still ends the service, for its supervisor to see.

Rejoining is safe for Firelake's services because none keeps uncommitted progress outside
Kafka or the lake: a sink resumes from the lake's state, a router from its committed
transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError

from streams.kafka_errors import is_transient

__all__ = ["is_rejoinable", "run_rejoining"]

log = logging.getLogger("firelake.rejoin")

#: First wait before a rejoin (seconds; full jitter below it), doubled per failure up to CAP.
BASE_SECONDS = 0.5
CAP_SECONDS = 15.0
#: A loop that ran this long before failing counts as healthy: the backoff starts over.
HEALTHY_AFTER_SECONDS = 60.0


def is_rejoinable(exc: BaseException) -> bool:
    """True for a broker condition that a fresh consumer and a new join may get past.

    Transient errors (:func:`streams.kafka_errors.is_transient`), and the bare
    ``KafkaError`` aiokafka's group coordinator raises for an unexpected answer to a join,
    sync or offset fetch — what a restarted broker gives a static member for a while.
    """
    return is_transient(exc) or type(exc) is KafkaError


async def run_rejoining(
    name: str,
    loop: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    on_rejoin: Callable[[BaseException], None] | None = None,
    *,
    rejoinable: Callable[[BaseException], bool] = is_rejoinable,
    base_s: float = BASE_SECONDS,
    cap_s: float = CAP_SECONDS,
    rng: random.Random | None = None,
) -> int:
    """Run ``loop()`` until it returns or ``stop`` is set; rejoin after rejoinable errors.

    ``on_rejoin(error)`` runs after each such failure, before the wait: the service drops
    its uncommitted state there and counts the rejoin. ``rejoinable`` decides which errors
    are ridden out (default :func:`is_rejoinable`). Returns how many rejoins there were.
    """
    rng = rng or random.Random()
    failures = rejoins = 0
    while True:
        started = time.monotonic()
        try:
            await loop()
            return rejoins
        except Exception as exc:
            if not rejoinable(exc):
                raise
            error = exc
        if time.monotonic() - started >= HEALTHY_AFTER_SECONDS:
            failures = 0
        delay = rng.uniform(0, min(cap_s, base_s * 2**failures))
        failures += 1
        rejoins += 1
        if on_rejoin is not None:
            on_rejoin(error)
        log.warning(
            "%s: %r from Kafka; rejoining in %.1f s (rejoin %d)", name, error, delay, rejoins
        )
        if stop.is_set():
            return rejoins
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return rejoins

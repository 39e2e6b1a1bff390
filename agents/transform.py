"""User transforms with Kinesis Data Firehose transformation semantics.

A router may call user code given as ``module:function`` (``transform`` in its config).
In ``batch`` mode the function takes a list of events (dicts) and returns a list of the same
length, in order; in ``event`` mode it takes one event and returns one result. A result is

- :class:`Ok` (the event, possibly changed) — a plain ``dict`` means the same;
- :class:`Dropped` — ``None`` means the same: the event is consumed, nothing is routed;
- :class:`ProcessingFailed` with a message — the event goes to the DLQ with that message.

A function that *raises* or runs past ``timeout_s`` is a retriable failure of its whole
batch, as in Firehose: with ``bisect`` the batch is split in halves and each half tried
again, down to single events, so one poison event does not fail its neighbours; a single
event that still fails after the retry budget becomes ``ProcessingFailed`` with the error.
A result that breaks the contract (a wrong count or type: :class:`TransformError`) is
terminal: bisected like any failure, never retried, since the same call breaks it again.
The budget is the router's: ``max_retry_attempts`` *and* ``max_record_age_seconds`` (measured
from the record's Kafka timestamp), so an unlimited attempt count with an age limit still
ends. Retries wait with backoff and jitter (:class:`agents.retry.RetryPolicy`).

A timed-out call is abandoned, not killed (Python cannot kill a thread): it keeps its worker
thread until it returns, and the next call gets a fresh thread.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.retry import RetryPolicy
from firelake.errors import TerminalError

__all__ = [
    "Dropped",
    "Ok",
    "ProcessingFailed",
    "Result",
    "TransformError",
    "TransformRunner",
    "load_transform",
]


@dataclass(frozen=True, slots=True)
class Ok:
    """The event goes on (possibly changed)."""

    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Dropped:
    """The event was consumed on purpose: counted, not routed, not dead-lettered."""


@dataclass(frozen=True, slots=True)
class ProcessingFailed:
    """The transform refused the event: it goes to the DLQ with ``message``."""

    message: str


Result = Ok | Dropped | ProcessingFailed


class TransformError(TerminalError, ValueError):
    """A transform that cannot be loaded, or that broke its contract: not retried."""


def load_transform(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (TransformError naming what is wrong)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TransformError(f"transform {spec!r} must be 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TransformError(f"transform {spec!r}: cannot import {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise TransformError(f"transform {spec!r}: {module_name!r} has no {attr!r}")
    if not callable(target):
        raise TransformError(f"transform {spec!r} is not callable")
    return target


def _as_result(value: Any) -> Result:
    if isinstance(value, (Ok, Dropped, ProcessingFailed)):
        return value
    if value is None:
        return Dropped()
    if isinstance(value, dict):
        return Ok(value)
    raise TransformError(
        f"a transform result must be Ok, Dropped, ProcessingFailed, a dict or "
        f"None; got {type(value).__name__}"
    )


class TransformRunner:
    """Calls a transform over a batch of events with timeout, bisect and retries."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        mode: str = "batch",
        timeout_s: float = 5.0,
        bisect: bool = True,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in ("batch", "event"):
            raise ValueError(f"mode must be 'batch' or 'event', got {mode!r}")
        self.function = function
        self.mode = mode
        self.timeout_s = timeout_s
        self.bisect = bisect
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.clock = clock
        # The record of the batch being transformed (see __call__): bounds its retries.
        self._record_ms: int | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ one call

    def _invoke(self, events: list[dict[str, Any]]) -> list[Result]:
        """One call of the user function on ``events``; raises on error or timeout."""
        if self.mode == "event":

            def work() -> list[Any]:
                return [self.function(event) for event in events]
        else:

            def work() -> list[Any]:
                return list(self.function(events))

        if self.timeout_s > 0:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(1, "firelake-transform")
            future = self._pool.submit(work)
            try:
                raw = future.result(timeout=self.timeout_s)
            except concurrent.futures.TimeoutError:
                # Abandon the stuck thread; the next call gets a fresh pool.
                self._pool.shutdown(wait=False)
                self._pool = None
                raise TimeoutError(f"transform timed out after {self.timeout_s:g}s") from None
        else:
            raw = work()
        if len(raw) != len(events):
            raise TransformError(f"transform returned {len(raw)} results for {len(events)} events")
        return [_as_result(value) for value in raw]

    # ------------------------------------------------------------------ with retries

    def __call__(
        self, events: Sequence[dict[str, Any]], record_ms: int | None = None
    ) -> list[Result]:
        """A result per event, in order; never raises for errors of the user function.

        ``record_ms`` is the Kafka timestamp (epoch ms) of the events' record: retries stop
        once it is older than the policy's maximum record age.
        """
        self._record_ms = record_ms
        return self._run(list(events), 0)

    def _run(self, events: list[dict[str, Any]], retries: int) -> list[Result]:
        if not events:
            return []
        try:
            return self._invoke(events)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self.bisect and len(events) > 1:
                # Firehose/Lambda bisect: retry each half on its own to isolate the bad event.
                middle = len(events) // 2
                return self._run(events[:middle], retries) + self._run(events[middle:], retries)
            # Both limits, as for deliveries: with max_retry_attempts = -1 only the record
            # age ends the retries of an event the transform always raises on. What the
            # user function raises is retried as Firehose does (its errors carry no verdict);
            # a broken contract (TransformError) is terminal: the same call breaks it again.
            if (
                not isinstance(exc, TerminalError)
                and self.policy.may_retry(retries)
                and not self.policy.too_old(self._record_ms, self.clock())
            ):
                self.sleep(self.policy.delay(retries, self.rng))
                return self._run(events, retries + 1)
            return [ProcessingFailed(f"transform failed: {error}") for _ in events]

    def close(self) -> None:
        """Release the worker thread (an abandoned one ends when its call returns)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

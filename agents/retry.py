"""Retry budget of a router: exponential backoff with full jitter, attempts and record age.

Lambda's event source mapping retries a failed batch until ``MaximumRetryAttempts`` or
``MaximumRecordAgeInSeconds`` runs out, then hands it to the on-failure destination; -1
means "no limit" for both. :class:`RetryPolicy` holds those limits and computes the wait
before each retry as AWS recommends ("exponential backoff and full jitter"): a uniform
random delay between 0 and ``min(max_delay, base * 2**retry)``. Pure: the random source and
the clock are passed in, so tests are deterministic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a failing batch is retried before it is dead-lettered.

    ``max_attempts`` counts retries after the first try (-1: unlimited), like Lambda's
    MaximumRetryAttempts; ``max_record_age_s`` bounds how old (since the record reached
    Kafka) a record may be and still be retried (-1: unlimited).
    """

    max_attempts: int = 3
    base_delay_s: float = 0.1
    max_delay_s: float = 10.0
    max_record_age_s: float = -1.0

    def __post_init__(self) -> None:
        if self.max_attempts < -1:
            raise ValueError(f"max_attempts must be >= -1, got {self.max_attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need 0 <= base_delay_s <= max_delay_s")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based), with full jitter."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** min(retry, 62)))
        return (rng or random).uniform(0.0, ceiling)

    def may_retry(self, retries_done: int) -> bool:
        """Whether another retry is allowed after ``retries_done`` retries."""
        return self.max_attempts < 0 or retries_done < self.max_attempts

    def too_old(self, record_ms: int | None, now_s: float) -> bool:
        """Whether a record (Kafka timestamp in epoch ms) is past the maximum record age."""
        if self.max_record_age_s < 0 or record_ms is None or record_ms < 0:
            return False
        return now_s - record_ms / 1000.0 > self.max_record_age_s

    def budget_s(self) -> float:
        """Upper bound of the time spent waiting on one failing batch (inf when unlimited)."""
        if self.max_attempts < 0:
            return float("inf")
        return sum(
            min(self.max_delay_s, self.base_delay_s * 2**retry)
            for retry in range(self.max_attempts)
        )

"""Retry budget: full-jitter backoff bounds, attempt limits, record age."""

from __future__ import annotations

import random

import pytest

from agents.retry import RetryPolicy


def test_delays_are_full_jitter_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(max_attempts=8, base_delay_s=0.1, max_delay_s=1.0)
    rng = random.Random(7)
    for retry in range(8):
        ceiling = min(1.0, 0.1 * 2**retry)
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spreads over the whole range
    assert policy.budget_s() == pytest.approx(0.1 + 0.2 + 0.4 + 0.8 + 1 + 1 + 1 + 1)


def test_attempt_limits_and_unlimited() -> None:
    assert [RetryPolicy(max_attempts=2).may_retry(n) for n in range(3)] == [True, True, False]
    assert RetryPolicy(max_attempts=0).may_retry(0) is False
    assert RetryPolicy(max_attempts=-1).may_retry(10**6) is True
    assert RetryPolicy(max_attempts=-1).budget_s() == float("inf")


def test_record_age_with_a_fixed_clock() -> None:
    policy = RetryPolicy(max_record_age_s=60)
    now = 1_000_000.0
    assert policy.too_old(int((now - 61) * 1000), now)
    assert not policy.too_old(int((now - 59) * 1000), now)
    assert not policy.too_old(None, now)
    assert not RetryPolicy().too_old(0, now)  # -1: no limit


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=-2)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay_s=2, max_delay_s=1)

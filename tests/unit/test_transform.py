"""Firehose transformation semantics: Ok/Dropped/ProcessingFailed, bisect, retries, timeout."""

from __future__ import annotations

import random
import threading

import pytest

from agents.retry import RetryPolicy
from agents.transform import (
    Dropped,
    Ok,
    ProcessingFailed,
    TransformError,
    TransformRunner,
    load_transform,
)
from firelake.errors import TerminalError, is_retriable

NO_WAIT = RetryPolicy(max_attempts=2, base_delay_s=0.0, max_delay_s=0.0)


def runner(fn, **kwargs) -> TransformRunner:
    sleeps: list[float] = []
    kwargs.setdefault("policy", NO_WAIT)
    made = TransformRunner(fn, sleep=sleeps.append, rng=random.Random(1), **kwargs)
    made.sleeps = sleeps  # type: ignore[attr-defined]
    return made


def test_results_map_dicts_none_and_explicit_results() -> None:
    def fn(events):
        return [
            {**events[0], "x": 1},
            None,
            ProcessingFailed("bad sku"),
            Ok(events[3]),
            Dropped(),
        ]

    events = [{"n": n} for n in range(5)]
    results = runner(fn)(events)
    assert results == [
        Ok({"n": 0, "x": 1}),
        Dropped(),
        ProcessingFailed("bad sku"),
        Ok({"n": 3}),
        Dropped(),
    ]


def test_a_raising_batch_is_bisected_down_to_the_poison_event() -> None:
    calls: list[int] = []

    def fn(events):
        calls.append(len(events))
        if any(e["n"] == 5 for e in events):
            raise RuntimeError("boom")
        return events

    run = runner(fn)
    results = run([{"n": n} for n in range(8)])
    assert [type(r).__name__ for r in results] == ["Ok"] * 5 + ["ProcessingFailed"] + ["Ok"] * 2
    assert "RuntimeError: boom" in results[5].message
    # n=4 alone once; the poison alone: first try + 2 retries
    assert calls[0] == 8 and calls.count(1) == 1 + 1 + 2
    assert len(run.sleeps) == 2


def test_without_bisect_the_whole_batch_fails_after_retries() -> None:
    def fn(events):
        raise ValueError("down")

    results = runner(fn, bisect=False)([{"n": 1}, {"n": 2}])
    assert all(isinstance(r, ProcessingFailed) for r in results)


def test_a_transient_error_recovers_on_retry() -> None:
    state = {"fails": 1}

    def fn(event):
        if state["fails"]:
            state["fails"] -= 1
            raise ConnectionError("flaky")
        return event

    assert runner(fn, mode="event")([{"n": 1}]) == [Ok({"n": 1})]


def test_a_slow_call_times_out_like_a_failure() -> None:
    release = threading.Event()

    def fn(events):
        if any(e["n"] == 1 for e in events):
            release.wait(5)
        return events

    run = runner(fn, timeout_s=0.2, policy=RetryPolicy(max_attempts=0))
    try:
        results = run([{"n": 0}, {"n": 1}])
    finally:
        release.set()
        run.close()
    assert results[0] == Ok({"n": 0})
    assert isinstance(results[1], ProcessingFailed) and "timed out" in results[1].message


def test_a_wrong_result_count_is_a_failure() -> None:
    results = runner(lambda events: [], bisect=False, policy=RetryPolicy(max_attempts=0))([{}])
    assert isinstance(results[0], ProcessingFailed) and "0 results for 1" in results[0].message


def test_load_transform_names_what_is_wrong() -> None:
    assert load_transform("json:dumps")({"a": 1}) == '{"a": 1}'
    for spec, phrase in [
        ("nocolon", "module:function"),
        ("no_such_module_xyz:f", "cannot import"),
        ("json:nope", "has no"),
    ]:
        with pytest.raises(TransformError, match=phrase):
            load_transform(spec)


def test_unlimited_attempts_still_stop_at_the_maximum_record_age() -> None:
    now = [1000.0]
    ages = RetryPolicy(max_attempts=-1, base_delay_s=0.0, max_delay_s=0.0, max_record_age_s=5)
    calls: list[int] = []

    def always_raises(events):
        calls.append(len(events))
        now[0] += 1.0  # each call takes a second of the record's age
        raise RuntimeError("poison")

    made = TransformRunner(
        always_raises, policy=ages, sleep=lambda _: None, clock=lambda: now[0], bisect=False
    )
    (result,) = made([{"a": 1}], record_ms=int(now[0] * 1000))
    assert isinstance(result, ProcessingFailed) and "poison" in result.message
    assert len(calls) == 6  # tried until the record was past 5 s, not forever


def test_a_broken_contract_is_terminal_and_never_retried() -> None:
    calls: list[int] = []

    def wrong_count(events):
        calls.append(len(events))
        return []

    run = runner(wrong_count, bisect=False)  # two retries allowed
    results = run([{"n": 1}])
    assert isinstance(results[0], ProcessingFailed) and "0 results for 1" in results[0].message
    assert calls == [1] and run.sleeps == []
    assert issubclass(TransformError, TerminalError) and issubclass(TransformError, ValueError)
    assert not is_retriable(TransformError("bad"))

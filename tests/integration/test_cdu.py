"""Code Developer University end to end on the real broker: `firelake up` on the example,
simulated students over HTTP, every submission scored in the sandbox; profiles, live
leaderboards and SQL leaderboards equal a recomputation from the raw submission events;
hostile submissions fail with their reason while the scorer keeps going; a fresh profile
agent reading the streams again, and a fresh pipeline fed a replay of the submissions
stream, rebuild identical profiles.

Sized for 2 cores: CDU_STUDENTS / CDU_SUBMISSIONS (default 200 / 2 000).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agents.cdu.challenges import load_challenges
from agents.cdu.loadgen import KIND_MIX, plan_submissions, run_load
from agents.cdu.service import CduService
from agents.cdu.testing import (
    CHALLENGES_DIR,
    cdu_config_dict,
    expected_profiles,
    get_json,
    leftover_sandbox_processes,
    top,
    wait_scored,
)
from firelake.config import load_config
from firelake.testing import query_rows, run_cli, running_pipeline, write_config

pytestmark = pytest.mark.kafka

STUDENTS = int(os.environ.get("CDU_STUDENTS", "200"))
SUBMISSIONS = int(os.environ.get("CDU_SUBMISSIONS", "2000"))
SCORE_TIMEOUT = float(os.environ.get("CDU_SCORE_TIMEOUT", "900"))
# Hostile at 3 %, not the load generator's 8 %: 54 attacks, every kind at least three times
# (asserted), each proved by its reason; at 8 % the scorers spent well over half their time
# waiting out the CPU and wall-clock limits of the same few attacks again and again.
MIX = {**KIND_MIX, "good": KIND_MIX["good"] + KIND_MIX["hostile"] - 0.03, "hostile": 0.03}
# What each attack's result must say. CPU-bound attacks may meet the wall-clock limit
# first on a loaded 2-core machine (2 s of CPU takes longer than 5 s of wall clock there).
CPU_OR_WALL = ("CPU time limit exceeded", "wall-clock limit exceeded")
ATTACK_REASONS: dict[str, tuple[str, ...]] = {
    "infinite_loop": CPU_OR_WALL,
    "memory_bomb": ("memory limit exceeded", *CPU_OR_WALL),
    "fork": ("sandbox violation: creating a process", "permission denied (ChildProcess"),
    "huge_output": ("output limit exceeded",),
    "read_outside": (
        "sandbox violation: opening '/etc/passwd' outside the working directory",
        "sandbox violation: permission denied (FileSystemRead",
    ),
    "socket": ("sandbox violation: opening a socket", "sandbox violation: resolving a host"),
    "native_code": ("sandbox violation: importing ctypes",),
    "sleep_forever": ("wall-clock limit exceeded",),
}


def _app_url(raw: dict[str, Any]) -> str:
    app = raw["apps"]["cdu"]
    return f"http://127.0.0.1:{app['port']}"


def _lake_count(config: Path, table: str) -> int:
    try:
        rows = query_rows(config, f"SELECT count(DISTINCT submission_id) AS n FROM {table}")
    except AssertionError:
        return 0  # no file yet
    return int(rows[0]["n"])


def _wait_lake(config: Path, table: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (seen := _lake_count(config, table)) < count:
        assert time.monotonic() < deadline, f"{table}: {seen} of {count} submissions in the lake"
        time.sleep(2)


def _saved(config: Path, name: str, **params: str) -> list[dict[str, Any]]:
    args = ["query", "--saved", name, "--format", "json"]
    for key, value in params.items():
        args += ["--param", f"{key}={value}"]
    out = run_cli(config, *args).strip()
    return json.loads(out) if out.startswith("[") else [json.loads(x) for x in out.splitlines()]


def _expected(config: Path, ledger: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Independent recomputation: raw submission events from the lake, each one's verdict
    from what the simulated student sent, XP from the challenge files."""
    raw = query_rows(
        config,
        "SELECT submission_id, student_id, challenge_id, language, "
        "strftime(submitted_at, '%Y-%m-%dT%H:%M:%S.%fZ') AS submitted_at FROM submissions",
    )
    assert len(raw) == len(ledger) and {r["submission_id"] for r in raw} == {
        row["submission_id"] for row in ledger
    }
    passes = {row["submission_id"]: row["expected_pass"] for row in ledger}
    xp_of = {c.id: c.xp for c in load_challenges(CHALLENGES_DIR).values()}
    return expected_profiles(raw, passes, xp_of)


def _check_profiles(base: str, config: Path, expected: dict[str, dict[str, Any]]) -> None:
    for student, profile in expected.items():
        status, live = get_json(f"{base}/v1/cdu/students/{student}")
        assert status == 200, live
        assert {k: live[k] for k in profile} == profile, student
    xp = {s: p["xp"] for s, p in expected.items()}
    boards: list[tuple[str | None, dict[str, int]]] = [(None, xp)]
    for language in ("python", "javascript"):
        boards.append(
            (language, {s: p["xp_by_language"].get(language, 0) for s, p in expected.items()})
        )
    assert all(any(scores.values()) for _, scores in boards), "a board is empty"
    for language, scores in boards:
        query = f"?language={language}" if language else ""
        _, board = get_json(f"{base}/v1/cdu/leaderboard{query}")
        assert board["leaders"] == top(scores), language
        sql = _saved(config, "leaderboard", language=language or "all")
        assert [{k: int(r[k]) if k != "student_id" else r[k] for k in r} for r in sql] == top(
            scores
        ), language
    sql_profiles = query_rows(config, "SELECT student_id, xp FROM profiles WHERE language IS NULL")
    assert {r["student_id"]: int(r["xp"]) for r in sql_profiles} == {
        s: v for s, v in xp.items() if v
    }


async def _rebuilt(config_path: Path) -> dict[str, dict[str, Any]]:
    """A fresh profile agent reading the streams from the start (no HTTP needed)."""
    config = load_config(config_path)
    service = CduService(config, config.apps["cdu"])
    await service.start()
    try:
        await asyncio.wait_for(service.caught_up.wait(), 120)
    finally:
        await service.stop()
    return service.profiles.snapshot()


def _run(tmp_path: Path, bootstrap: str, suffix: str) -> tuple[dict[str, Any], Path]:
    raw = cdu_config_dict(bootstrap, tmp_path / "lake", suffix)
    config = write_config(tmp_path / "firelake.toml", raw)
    return raw, config


def test_cdu_end_to_end(kafka_bootstrap: str, tmp_path: Path, suffix: str) -> None:
    raw, config = _run(tmp_path, kafka_bootstrap, suffix)
    base = _app_url(raw)
    challenges = list(load_challenges(CHALLENGES_DIR).values())
    planned = plan_submissions(challenges, STUDENTS, SUBMISSIONS, seed=11, mix=MIX)
    with running_pipeline(config, raw["ingest"]["port"], tmp_path / "up.log", 120):
        assert wait_scored(base, 0, 60)["status"] == "ok"
        status, listed = get_json(f"{base}/v1/cdu/challenges")
        assert status == 200 and len(listed["challenges"]) == len(challenges)
        started = time.monotonic()
        report = asyncio.run(
            run_load(base, planned, concurrency=8, duration_seconds=600, progress=False)
        )
        assert report.sent == SUBMISSIONS and report.refused == 0, report.errors[:5]
        wait_scored(base, SUBMISSIONS, SCORE_TIMEOUT)
        elapsed = time.monotonic() - started
        print(f"\n{SUBMISSIONS} submissions scored in {elapsed:.1f} s")
        # Every submission scored, as its kind says; hostile ones with their reason.
        for row in report.ledger:
            status, answer = get_json(f"{base}/v1/cdu/submissions/{row['submission_id']}")
            assert status == 200 and answer["status"] == "scored", answer
            result = answer["result"]
            assert result["passed"] is row["expected_pass"], (row, result)
            if row["kind"] == "hostile":
                reasons = ATTACK_REASONS[row["attack"]]
                assert any(r in result["reason"] for r in reasons), (row, result)
            if not result["passed"]:
                assert result["reason"] and result["tests_passed"] < result["tests_total"]
        hostile = [row["attack"] for row in report.ledger if row["kind"] == "hostile"]
        if len(hostile) >= 3 * len(ATTACK_REASONS):
            assert set(hostile) == set(ATTACK_REASONS), hostile
            assert min(Counter(hostile).values()) >= 3, Counter(hostile)
        assert any(r["priority"] == "high" for r in report.ledger)
        _wait_lake(config, "submissions", SUBMISSIONS)
        _wait_lake(config, "results", SUBMISSIONS)
        expected = _expected(config, report.ledger)
        _check_profiles(base, config, expected)
        # The host is unharmed: no sandboxed process outlives its run.
        assert leftover_sandbox_processes() == []
        # A fresh profile agent rebuilds the same profiles from the streams.
        rebuilt = asyncio.run(_rebuilt(config))
        assert {s: {k: p[k] for k in expected[s]} for s, p in rebuilt.items()} == expected
    # Nothing went to the DLQ: a failed submission is a result, not an error.
    if (tmp_path / "lake" / "cdu_dlq").exists():
        assert query_rows(config, "SELECT count(*) AS n FROM cdu_dlq")[0]["n"] == 0


def test_replaying_the_submissions_stream_rebuilds_identical_profiles(
    kafka_bootstrap: str, tmp_path: Path, suffix: str
) -> None:
    students, submissions = 20, 150
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    raw, config = _run(first_dir, kafka_bootstrap, suffix)
    challenges = list(load_challenges(CHALLENGES_DIR).values())
    planned = plan_submissions(challenges, students, submissions, seed=5)
    raw2, config2 = _run(second_dir, kafka_bootstrap, suffix + "r")
    source = raw["apps"]["cdu"]["settings"]["submissions_stream"]
    target = raw2["apps"]["cdu"]["settings"]["submissions_stream"]
    with running_pipeline(config, raw["ingest"]["port"], first_dir / "up.log", 120):
        report = asyncio.run(run_load(_app_url(raw), planned, 8, 300, progress=False))
        assert report.sent == submissions  # each one on the stream before it was answered
        # The second pipeline starts, and scores the replay, while the first still scores.
        with running_pipeline(config2, raw2["ingest"]["port"], second_dir / "up.log", 120):
            run_cli(config2, "replay", source, "--from", "earliest", "--into", target, "--quiet")
            wait_scored(_app_url(raw), submissions, SCORE_TIMEOUT)
            first = asyncio.run(_rebuilt(config))
            wait_scored(_app_url(raw2), submissions, SCORE_TIMEOUT)
            second = asyncio.run(_rebuilt(config2))
    assert any(profile["xp"] for profile in first.values()), first
    assert second == first

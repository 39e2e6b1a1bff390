"""Regenerate Code Developer University's replay case (``firelake/examples/cdu/cases/``).

``python tests/replay/make_cdu_cases.py`` writes ``scoring/input/cdu-submissions.jsonl``:
command messages of simulated students (good, buggy, slow and the hostile attacks whose
verdict does not depend on timing — fork, reading outside, native code, huge output), with
fixed ids and submission times over three hours; and ``scoring/expected/*``: each
submission's verdict as its kind says, profiles and the leaderboard recomputed with plain
code from those commands (``agents.cdu.testing.expected_profiles``), and the ``cdu-hourly``
window's final rows counted from them — none by the pipeline under test.

Every command is normal priority (no ``retry_of``, no paid student sends one): one path
through the routers keeps each results partition in time order, so no result is late and
the same hours close on every run. High-priority results would overtake normal ones and
make some late by timing (the window's grace is 60 s).
"""

from __future__ import annotations

import csv
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agents.cdu.challenges import load_challenges
from agents.cdu.loadgen import plan_submissions
from agents.cdu.submissions import build_command
from agents.cdu.testing import CHALLENGES_DIR, expected_profiles, top

CASES = Path(__file__).resolve().parents[2] / "firelake" / "examples" / "cdu" / "cases"
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TIMING_FREE = {"good": 0.5, "buggy": 0.35, "slow": 0.05, "hostile": 0.10}
#: Seconds between two submissions: 152 of them span 9:00 to 11:57.
SPACING_S = 70
#: The cdu-hourly windows that close in the case end at or before this hour.
CLOSED_UNTIL = "2026-12-01T11:00"


def main() -> None:
    challenges = load_challenges(CHALLENGES_DIR)
    rng = random.Random(14)
    planned = [
        p
        for p in plan_submissions(list(challenges.values()), 15, 160, seed=14, mix=TIMING_FREE)
        if p.attack in ("", "fork", "read_outside", "native_code", "huge_output")
    ]
    case = CASES / "scoring"
    (case / "input").mkdir(parents=True, exist_ok=True)
    (case / "expected").mkdir(parents=True, exist_ok=True)
    (case / "case.toml").write_text(
        "[case]\n"
        "description = \"Scoring, profiles and leaderboards: simulated students' submissions "
        '(good, buggy, slow, hostile) through the free queue and the sandbox, over three hours"\n'
        'extends = "../../firelake.toml"\n'
        "timeout_seconds = 300\n",
        encoding="utf-8",
    )
    commands = []
    with (case / "input" / "cdu-submissions.jsonl").open("w", encoding="utf-8") as out:
        for n, item in enumerate(planned):
            # Three hours of submissions: the cdu-hourly window closes the first two.
            at = START + timedelta(seconds=n * SPACING_S + rng.random())
            body = {
                "student_id": item.student_id,
                "challenge_id": item.challenge_id,
                "language": item.language,
                "source": item.source,
                "plan": item.plan,
            }
            command = build_command(
                body,
                challenges,
                submission_id=uuid.UUID(int=rng.getrandbits(128)).hex,
                submitted_at=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            )
            commands.append((command, item.expected_pass))
            line = {
                "key": item.student_id,
                "timestamp": int(at.timestamp() * 1000),
                "event_time": command["submitted_at"],
                "value": command,
            }
            out.write(json.dumps(line, sort_keys=True) + "\n")
    high = [c["submission_id"] for c, _ in commands if c["priority"] != "normal"]
    assert not high, f"high-priority commands would make the hourly counts racy: {high}"
    passes = {c["submission_id"]: ok for c, ok in commands}
    xp_of = {c.id: c.xp for c in challenges.values()}
    profiles = expected_profiles([c for c, _ in commands], passes, xp_of)
    expected = case / "expected"
    (expected / "verdicts.sql").write_text(
        "SELECT DISTINCT submission_id, student_id, challenge_id, passed FROM results\n",
        encoding="utf-8",
    )
    _csv(
        expected / "verdicts.csv",
        ["submission_id", "student_id", "challenge_id", "passed"],
        [
            [c["submission_id"], c["student_id"], c["challenge_id"], str(ok).lower()]
            for c, ok in commands
        ],
    )
    first_passes = (
        "WITH first_pass AS (\n"
        "    SELECT student_id, challenge_id, any_value(xp) AS xp,\n"
        "           arg_min(language, (submitted_at, submission_id)) AS language\n"
        "    FROM results WHERE passed GROUP BY student_id, challenge_id)\n"
    )
    (expected / "profiles.sql").write_text(
        first_passes + "SELECT student_id, sum(xp) AS xp, count(*) AS challenges_solved\n"
        "FROM first_pass GROUP BY student_id\n",
        encoding="utf-8",
    )
    _csv(
        expected / "profiles.csv",
        ["student_id", "xp", "challenges_solved"],
        [
            [s, p["xp"], len(p["challenges_solved"])]
            for s, p in profiles.items()
            if p["challenges_solved"]
        ],
    )
    (expected / "leaderboard.sql").write_text(
        first_passes + "SELECT student_id, sum(xp) AS xp FROM first_pass\n"
        "GROUP BY student_id ORDER BY xp DESC, student_id LIMIT 10\n",
        encoding="utf-8",
    )
    board = top({s: p["xp"] for s, p in profiles.items()})
    _csv(
        expected / "leaderboard.csv",
        ["student_id", "xp"],
        [[r["student_id"], r["xp"]] for r in board],
    )
    _hourly(expected, [c for c, _ in commands], passes)
    (expected / "dlq.json").write_text("{}\n", encoding="utf-8")
    print(f"{case}: {len(commands)} submissions, {sum(passes.values())} pass")


def _hourly(expected: Path, commands: list[dict[str, Any]], passes: dict[str, bool]) -> None:
    """The cdu-hourly window's final rows, counted from the commands: submissions and passes
    per challenge and language per hour of ``submitted_at``. Every command is normal
    priority, so each results partition gets its events in time order (none is late) and
    the slowest one ends past 11:01: the hours 9 and 10 close, 11 stays open."""
    counts: dict[tuple[str, str, str], list[int]] = {}
    for command in commands:
        hour = command["submitted_at"][:13] + ":00"
        if hour >= CLOSED_UNTIL:
            continue
        row = counts.setdefault((hour, command["challenge_id"], command["language"]), [0, 0])
        row[0] += 1
        row[1] += passes[command["submission_id"]]
    (expected / "hourly.sql").write_text(
        "SELECT strftime(window_start, '%Y-%m-%dT%H:%M') AS hour, challenge_id, language,\n"
        "       submissions, passed\nFROM hourly_results\n"
        f"WHERE is_final AND window_end <= TIMESTAMPTZ '{CLOSED_UNTIL}:00+00:00'\n",
        encoding="utf-8",
    )
    _csv(
        expected / "hourly.csv",
        ["hour", "challenge_id", "language", "submissions", "passed"],
        [[*key, *counts[key]] for key in sorted(counts)],
    )


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


if __name__ == "__main__":
    main()

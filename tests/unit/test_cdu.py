"""Code Developer University's pure parts: challenge files, commands, profiles."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from agents.cdu.challenges import ChallengeError, load_challenges, parse_challenge
from agents.cdu.command import check_challenge
from agents.cdu.loadgen import plan_submissions
from agents.cdu.profiles import Profiles
from agents.cdu.submissions import SubmissionError, build_command
from firelake.config import ConfigError, example_config_path, load_config

FOLDER = example_config_path("cdu").parent / "challenges"


@pytest.fixture(scope="module")
def challenges():
    return load_challenges(FOLDER)


def test_at_least_ten_python_challenges_with_xp_from_difficulty(challenges) -> None:
    assert len(challenges) >= 10
    assert {c.xp for c in challenges.values()} <= {50, 100, 200, 350, 500}
    assert all(c.tests and c.reference and c.statement for c in challenges.values())
    assert all(c.reference_in("javascript") for c in challenges.values())


def test_every_reference_passes_and_every_mistake_fails(challenges) -> None:
    for challenge in challenges.values():
        assert check_challenge(Path(challenge.path)) == [], challenge.id


def test_a_bad_challenge_file_names_its_key() -> None:
    with pytest.raises(ChallengeError, match=r"x.toml: difficulty: must be 1-5"):
        parse_challenge(
            'id = "a"\ntitle = "A"\ndifficulty = 9\nfunction = "f"\nstatement = "s"\n'
            '[[tests]]\nname = "t"\nargs = []\nexpected = 1\n',
            "x.toml",
        )
    with pytest.raises(ChallengeError, match="tests: missing"):
        parse_challenge('id = "a"\ntitle = "A"\ndifficulty = 1\nfunction = "f"\n', "x.toml")


def test_a_command_carries_the_pinned_challenge_and_its_priority(challenges) -> None:
    body = {"student_id": "s1", "challenge_id": "fizzbuzz", "language": "python", "source": "x"}
    command = build_command(body, challenges)
    assert command["priority"] == "normal" and len(command["submission_id"]) == 32
    spec = orjson.loads(command["challenge_spec"])
    assert spec["xp"] == 50 and spec["function"] == "fizzbuzz" and len(spec["tests"]) == 4
    assert build_command({**body, "plan": "paid"}, challenges)["priority"] == "high"
    retry = build_command({**body, "retry_of": command["submission_id"]}, challenges)
    assert retry["priority"] == "high"


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"challenge_id": "nope"}, 404, "unknown challenge_id 'nope'"),
        ({"language": "cobol"}, 400, "language 'cobol' is not scored"),
        ({"source": "x" * 70_000}, 413, "more than the limit of 65536"),
        ({"student_id": ""}, 400, "student_id must be"),
        ({"student_id": 7}, 400, "student_id must be a string"),
        ({"plan": "gold"}, 400, "plan must be one of"),
        ({"retry_of": "x"}, 400, "retry_of must be a submission id"),
        ({"extra": 1}, 400, "unknown field 'extra'"),
        ({"source": "  "}, 400, "source is empty"),
    ],
)
def test_bad_submissions_are_refused_naming_the_problem(challenges, change, status, message):
    body = {"student_id": "s1", "challenge_id": "fizzbuzz", "language": "python", "source": "x"}
    with pytest.raises(SubmissionError, match=message) as caught:
        build_command({**body, **change}, challenges)
    assert caught.value.status == status


def _result(n: int, student: str, challenge: str, passed: bool, xp: int, lang="python"):
    return {
        "submission_id": f"{n:032x}",
        "student_id": student,
        "challenge_id": challenge,
        "language": lang,
        "passed": passed,
        "xp": xp,
        "submitted_at": f"2026-12-02T10:00:{n:02d}.000000Z",
    }


def test_profiles_credit_a_challenge_once_and_ignore_duplicates() -> None:
    results = [
        _result(1, "ann", "fizzbuzz", False, 50),
        _result(2, "ann", "fizzbuzz", True, 50),
        _result(3, "ann", "fizzbuzz", True, 50),  # a resubmitted pass earns nothing
        _result(4, "ann", "two-sum", True, 100, "javascript"),
        _result(5, "bob", "two-sum", True, 100),
    ]
    profiles = Profiles()
    profiles.apply_all(results)
    ann = profiles.profile("ann").as_dict()
    assert ann["xp"] == 150 and ann["challenges_solved"] == ["fizzbuzz", "two-sum"]
    assert ann["xp_by_language"] == {"javascript": 100, "python": 50}
    assert ann["submissions"] == 4 and ann["passed_submissions"] == 3
    snapshot = profiles.snapshot()
    profiles.apply_all(results)  # a replay changes nothing
    assert profiles.snapshot() == snapshot
    assert profiles.leaderboard() == [
        {"rank": 1, "student_id": "ann", "xp": 150},
        {"rank": 2, "student_id": "bob", "xp": 100},
    ]
    assert profiles.leaderboard("javascript") == [{"rank": 1, "student_id": "ann", "xp": 100}]


def test_profiles_do_not_depend_on_the_order_of_results() -> None:
    rng = random.Random(3)
    results = [
        _result(
            n,
            f"s{rng.randrange(5)}",
            f"c{rng.randrange(4)}",
            rng.random() < 0.5,
            50 * (1 + n % 4),
            rng.choice(["python", "javascript"]),
        )
        for n in range(60)
    ]
    # one challenge's XP is fixed: derive it from the challenge
    for r in results:
        r["xp"] = 50 * (1 + int(r["challenge_id"][1:]))
    first = Profiles()
    first.apply_all(results)
    for _ in range(5):
        rng.shuffle(results)
        again = Profiles()
        again.apply_all(results + results[:10])
        assert again.snapshot() == first.snapshot()
        assert again.leaderboard("javascript") == first.leaderboard("javascript")


def test_the_load_plan_is_deterministic_and_mixed(challenges) -> None:
    plan = plan_submissions(list(challenges.values()), 20, 300, seed=1)
    assert plan == plan_submissions(list(challenges.values()), 20, 300, seed=1)
    kinds = {p.kind for p in plan}
    assert {"good", "buggy", "slow", "hostile", "retry"} <= kinds
    assert len(plan) == 300
    assert {p.language for p in plan} == {"python", "javascript"}


def test_the_example_config_runs_the_app_and_an_unknown_example_is_named() -> None:
    config = load_config(example_config_path("cdu"), environ={})
    assert config.apps["cdu"].module == "agents.cdu.service"
    assert example_config_path("yle").exists()
    with pytest.raises(ConfigError, match=r"no such example \(shipped: .*cdu.*yle"):
        example_config_path("nope")


def _cli_config(tmp_path: Path) -> Path:
    (tmp_path / "challenges").mkdir()
    config = tmp_path / "firelake.toml"
    config.write_text(
        "[streams.cdu-submissions]\n[streams.cdu-results]\n"
        '[apps.cdu]\nmodule = "agents.cdu.service"\n'
        '[apps.cdu.settings]\nchallenges_dir = "challenges"\n',
        encoding="utf-8",
    )
    return config


def test_the_cli_lists_and_adds_challenges_checked_in_the_sandbox(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = _cli_config(tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "firelake.cli", "cdu", "challenges", *args]
        return subprocess.run([*argv, "--config", str(config)], capture_output=True, text=True)

    added = cli("add", str(FOLDER / "fizzbuzz.toml"))
    assert added.returncode == 0, added.stderr
    assert "added fizzbuzz (50 XP, 4 tests)" in added.stdout
    assert (tmp_path / "challenges" / "fizzbuzz.toml").exists()
    assert "fizzbuzz" in cli("list").stdout
    again = cli("add", str(FOLDER / "fizzbuzz.toml"))
    assert again.returncode == 1 and "exists (--force replaces it)" in again.stderr
    broken = tmp_path / "broken.toml"
    text = (FOLDER / "two-sum.toml").read_text(encoding="utf-8")
    broken.write_text(text.replace("expected = [0, 1]", "expected = [1, 0]", 1), encoding="utf-8")
    refused = cli("add", str(broken))
    assert refused.returncode == 1
    assert "reference: fails its own tests: two_sum([2, 7, 11, 15], 9) returned [0, 1]" in (
        refused.stderr
    )
    assert not (tmp_path / "challenges" / "two-sum.toml").exists()

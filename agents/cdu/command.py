"""``firelake cdu``: list and add challenges, run simulated students.

``firelake cdu challenges`` lists the challenges; ``firelake cdu challenges add FILE``
checks a challenge file (its reference solution must pass every test in the sandbox, each
listed mistake must fail one) and copies it into the app's challenges folder;
``firelake cdu load`` posts simulated students' submissions to the API (bounded by
``--submissions`` and ``--duration``, with a progress bar).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from pathlib import Path

from agents.cdu.challenges import ChallengeError, load_challenges, parse_challenge
from agents.cdu.sandbox import run_submission
from agents.cdu.service import DEFAULT_PORT, challenges_dir
from firelake.config import AppConfig, FirelakeConfig

__all__ = ["add_cdu_arguments", "check_challenge", "run_cdu_command"]

SERVICE_MODULE = "agents.cdu.service"


def add_cdu_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``firelake cdu`` sub-commands and their options."""
    parser.add_argument("action", choices=["challenges", "load"])
    parser.add_argument("verb", nargs="?", choices=["list", "add"], default="list")
    parser.add_argument("file", nargs="?", help="challenges add: the challenge file (TOML)")
    parser.add_argument("--app", default=None, help="the [apps.N] to use (default: the CDU one)")
    parser.add_argument("--force", action="store_true", help="add: replace a challenge")
    parser.add_argument("--url", default=None, help="load: the API (default from the config)")
    parser.add_argument("--students", type=int, default=200, help="load: simulated students")
    parser.add_argument("--submissions", type=int, default=2000, help="load: stop after these")
    parser.add_argument("--duration", type=float, default=300.0, help="load: stop after seconds")
    parser.add_argument("--concurrency", type=int, default=16, help="load: requests at once")
    parser.add_argument("--seed", type=int, default=0, help="load: seed of the simulation")
    parser.add_argument("--ledger", default=None, help="load: write what was sent (JSON lines)")
    parser.add_argument("--quiet", action="store_true", help="load: no progress bar")


def _app(config: FirelakeConfig, name: str | None) -> AppConfig:
    if name is not None:
        if name not in config.apps:
            raise ChallengeError(f"no app {name!r} in {config.source}")
        return config.apps[name]
    for app in config.apps.values():
        if app.module == SERVICE_MODULE:
            return app
    raise ChallengeError(
        f"{config.source} runs no Code Developer University app: try --example cdu"
    )


def check_challenge(path: Path) -> list[str]:
    """Problems with a challenge file, run in the sandbox (empty: it may be added)."""
    challenge = parse_challenge(path.read_text(encoding="utf-8"), str(path))
    problems = []
    if not challenge.reference:
        problems.append("reference: a reference solution is required")
    else:
        run = run_submission(challenge.reference, challenge.function, challenge.tests)
        if not run.passed:
            failing = "; ".join(t.message for t in run.tests if not t.passed) or run.reason
            problems.append(f"reference: fails its own tests: {failing}")
    for language, solution in challenge.solutions.items():
        run = run_submission(solution, challenge.function, challenge.tests, language=language)
        if not run.passed:
            failing = "; ".join(t.message for t in run.tests if not t.passed) or run.reason
            problems.append(f"solutions.{language}: fails its own tests: {failing}")
    for index, mistake in enumerate(challenge.mistakes):
        if run_submission(mistake, challenge.function, challenge.tests).passed:
            problems.append(f"mistakes[{index}]: passes every test (the tests miss it)")
    return problems


def run_cdu_command(args: argparse.Namespace, config: FirelakeConfig) -> int:
    app = _app(config, args.app)
    folder = challenges_dir(config, app)
    challenges = load_challenges(folder)
    if args.action == "challenges" and args.verb == "list":
        print(f"{'id':<20} {'difficulty':>10} {'xp':>5} {'tests':>5}  title")
        for c in challenges.values():
            print(f"{c.id:<20} {c.difficulty:>10} {c.xp:>5} {len(c.tests):>5}  {c.title}")
        return 0
    if args.action == "challenges":
        if not args.file:
            raise ChallengeError("challenges add: name the challenge file")
        path = Path(args.file)
        challenge = parse_challenge(path.read_text(encoding="utf-8"), str(path))
        if challenge.id in challenges and not args.force:
            raise ChallengeError(f"{path}: id: {challenge.id!r} exists (--force replaces it)")
        problems = check_challenge(path)
        if problems:
            for problem in problems:
                print(f"{path}: {problem}", file=sys.stderr)
            return 1
        target = folder / f"{challenge.id}.toml"
        shutil.copyfile(path, target)
        print(f"added {challenge.id} ({challenge.xp} XP, {len(challenge.tests)} tests): {target}")
        return 0
    from agents.cdu.loadgen import plan_submissions, run_load

    url = args.url or f"http://{app.host}:{app.port or DEFAULT_PORT}"
    planned = plan_submissions(
        list(challenges.values()), args.students, args.submissions, seed=args.seed
    )
    report = asyncio.run(
        run_load(url, planned, args.concurrency, args.duration, progress=not args.quiet)
    )
    if args.ledger:
        with open(args.ledger, "w", encoding="utf-8") as out:
            for row in report.ledger:
                out.write(json.dumps(row) + "\n")
    print(report.summary())
    return 0 if report.sent else 1

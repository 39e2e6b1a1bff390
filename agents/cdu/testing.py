"""Test helpers for Code Developer University, shipped like ``sinks.testing``.

``cdu_config_dict`` gives the example's configuration with unique stream names, a broker,
a lake and free ports; ``expected_profiles`` recomputes profiles and leaderboards from raw
submission events and a load ledger with plain code, independent of
:mod:`agents.cdu.profiles`; ``wait_scored`` waits (bounded) until the API has a result for
every submission.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from firelake.config import example_config_path
from firelake.testing import example_dict, free_port

__all__ = [
    "CHALLENGES_DIR",
    "cdu_config_dict",
    "expected_profiles",
    "get_json",
    "leftover_sandbox_processes",
    "top",
    "wait_scored",
]

EXAMPLE = example_config_path("cdu")
_RUN_FOLDER = re.compile(r"/[^ ]*/cdu-run-[A-Za-z0-9_]+")
CHALLENGES_DIR = EXAMPLE.parent / "challenges"


def cdu_config_dict(
    bootstrap: str, lake_root: str | Path, suffix: str, windows: bool = False
) -> dict[str, Any]:
    """The CDU example for a test: unique names, free ports, absolute folders."""
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    if not windows:
        data.pop("windows", None)
        for stream in ("cdu-hourly", "cdu-late"):
            data["streams"].pop(stream)
        data["sinks"].pop("cdu-hourly")
        data["sinks"].pop("cdu-late")
    for sink in data["sinks"].values():
        sink["max_seconds"] = 1
    app = data["apps"]["cdu"]
    app["port"] = free_port()
    app["settings"]["challenges_dir"] = str(CHALLENGES_DIR)
    raw = example_dict(
        bootstrap,
        lake_root,
        suffix,
        data=data,
        ingest={"port": free_port()},
        query={"saved_dir": str(EXAMPLE.parent / "queries"), "port": free_port()},
    )
    return raw


def leftover_sandbox_processes() -> list[str]:
    """Processes of sandboxed runs that have finished (their run folder is gone): a run
    that leaves one behind has harmed the host. Runs still going elsewhere are not counted."""
    left = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found = _RUN_FOLDER.search(command)
        if found and not Path(found.group(0)).exists():
            left.append(f"{proc.name}: {command}")
    return left


def get_json(url: str, timeout: float = 30) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_scored(base_url: str, count: int, timeout: float) -> dict[str, Any]:
    """Wait until the API has folded ``count`` results; its last /health (AssertionError
    naming how many are missing when the time runs out)."""
    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, health = get_json(f"{base_url}/health")
        if status == 200 and health["results"] >= count:
            return health
        time.sleep(1.0)
    raise AssertionError(f"only {health.get('results')} of {count} submissions scored: {health}")


def top(scores: Mapping[str, int], size: int = 10) -> list[dict[str, Any]]:
    ranked = sorted((-xp, student) for student, xp in scores.items() if xp > 0)
    return [
        {"rank": rank, "student_id": student, "xp": -neg}
        for rank, (neg, student) in enumerate(ranked[:size], start=1)
    ]


def expected_profiles(
    submissions: Iterable[Mapping[str, Any]],
    passes: Mapping[str, bool],
    xp_of: Mapping[str, int],
) -> dict[str, dict[str, Any]]:
    """Profiles from raw submission events (``submission_id``, ``student_id``,
    ``challenge_id``, ``language``, ``submitted_at``), whether each must pass, and each
    challenge's XP: the first passing submission of a challenge earns its XP, once."""
    firsts: dict[tuple[str, str], tuple[str, str, str]] = {}
    students: set[str] = set()
    for sub in submissions:
        students.add(sub["student_id"])
        if not passes[sub["submission_id"]]:
            continue
        key = (sub["student_id"], sub["challenge_id"])
        candidate = (str(sub["submitted_at"]), sub["submission_id"], sub["language"])
        if key not in firsts or candidate < firsts[key]:
            firsts[key] = candidate
    profiles: dict[str, dict[str, Any]] = {
        s: {"xp": 0, "challenges_solved": [], "xp_by_language": {}} for s in sorted(students)
    }
    for (student, challenge), (_, _, language) in sorted(firsts.items()):
        profile = profiles[student]
        profile["xp"] += xp_of[challenge]
        profile["challenges_solved"].append(challenge)
        by_language = profile["xp_by_language"]
        by_language[language] = by_language.get(language, 0) + xp_of[challenge]
    return profiles

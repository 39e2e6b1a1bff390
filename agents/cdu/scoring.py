"""The Code Scoring agent: a router transform that scores each submission in the sandbox.

The scorer is a router (``[routers.cdu-scorer*]`` in the example's config) whose transform
is :func:`score`: chapter 3's *pipes and filters* — the router validates the command
message, the transform scores it, the router routes the result event (``kind = "result"``)
to the results stream, in the same Kafka transaction as the source offsets (exactly-once
results). A command the scorer cannot read (no challenge spec) goes to the DLQ with the
reason; a submission that fails, loops, eats memory or floods output is a *result* (failed,
with the reason), never an error, so the agent keeps going.

Submissions of one batch run in parallel, ``FIRELAKE_CDU_SCORER_CONCURRENCY`` at a time
(default 8: a run mostly waits); the sandbox's limits come from ``FIRELAKE_CDU_WALL_SECONDS``,
``FIRELAKE_CDU_CPU_SECONDS``, ``FIRELAKE_CDU_MEMORY_MB`` and ``FIRELAKE_CDU_OUTPUT_KB``
(defaults: :class:`agents.cdu.sandbox.Limits`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson

from agents.cdu.challenges import LANGUAGES
from agents.cdu.sandbox import KiB, Limits, MiB, SandboxTest, run_submission
from agents.cdu.submissions import result_event
from agents.transform import Ok, ProcessingFailed, Result

__all__ = ["DEFAULT_CONCURRENCY", "limits_from_env", "score", "score_one"]

#: Sandboxed runs at once per scorer process.
DEFAULT_CONCURRENCY = 8


def limits_from_env(environ: Mapping[str, str] | None = None) -> Limits:
    """The sandbox limits, defaults overridden by ``FIRELAKE_CDU_*`` variables."""
    env = os.environ if environ is None else environ
    base = Limits()
    return Limits(
        wall_seconds=float(env.get("FIRELAKE_CDU_WALL_SECONDS", base.wall_seconds)),
        cpu_seconds=int(env.get("FIRELAKE_CDU_CPU_SECONDS", base.cpu_seconds)),
        memory_bytes=int(env.get("FIRELAKE_CDU_MEMORY_MB", base.memory_bytes // MiB)) * MiB,
        output_bytes=int(env.get("FIRELAKE_CDU_OUTPUT_KB", base.output_bytes // KiB)) * KiB,
    )


@cache
def _pool() -> ThreadPoolExecutor:
    # A run mostly waits (interpreter start, sleeps, wall-clock limits): several per core.
    workers = int(os.environ.get("FIRELAKE_CDU_SCORER_CONCURRENCY", DEFAULT_CONCURRENCY))
    return ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="cdu-score")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def score_one(command: Mapping[str, Any], limits: Limits | None = None) -> Result:
    """Score one command message: Ok(result event), or ProcessingFailed naming the fault."""
    try:
        spec = orjson.loads(command["challenge_spec"])
        tests = [SandboxTest(t["name"], tuple(t["args"]), t["expected"]) for t in spec["tests"]]
        function = spec["function"]
        source = command["source"]
    except (KeyError, TypeError, ValueError) as exc:
        return ProcessingFailed(f"unreadable submission command: {type(exc).__name__}: {exc}")
    if command.get("language") not in LANGUAGES:
        return ProcessingFailed(f"language {command.get('language')!r} is not scored")
    language = str(command["language"])
    run = run_submission(source, function, tests, limits or limits_from_env(), language)
    return Ok(result_event(command, run.as_dict(), _now()))


def score(events: Sequence[dict[str, Any]]) -> list[Result]:
    """The router transform (batch mode): every submission of the batch, in parallel."""
    limits = limits_from_env()
    return list(_pool().map(lambda event: score_one(event, limits), events))

"""A submission request checked and turned into a command message.

``POST /v1/cdu/submissions`` takes JSON ``student_id``, ``challenge_id``, ``language``,
``source`` (optional ``plan``: ``free``/``paid``, and ``retry_of``: the id of an earlier
submission this one retries). The command message (chapter 3's *command* pattern) carries
everything the scorer needs — the challenge's function, XP and tests pinned at submission
time — so the scorer reads no files and a later edit of a challenge cannot change how an
already queued submission is scored. Paid and retried submissions get ``priority =
"high"`` and jump the queue. Pure: every refusal is a :class:`SubmissionError` naming the
field.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from agents.cdu.challenges import LANGUAGES, Challenge

__all__ = ["MAX_SOURCE_BYTES", "SubmissionError", "build_command", "result_event"]

MAX_SOURCE_BYTES = 64 * 1024
_STUDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_PLANS = ("free", "paid")


class SubmissionError(ValueError):
    """A submission the API refuses (HTTP 4xx): ``status`` and a message naming the field."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_command(
    body: Mapping[str, Any],
    challenges: Mapping[str, Challenge],
    submission_id: str | None = None,
    submitted_at: str | None = None,
) -> dict[str, Any]:
    """The command message for a request body (already parsed JSON)."""
    if not isinstance(body, Mapping):
        raise SubmissionError("the body must be a JSON object")
    known = {"student_id", "challenge_id", "language", "source", "plan", "retry_of"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise SubmissionError(f"unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
    for name in ("student_id", "challenge_id", "language", "source"):
        if name not in body:
            raise SubmissionError(f"{name} is required")
        if not isinstance(body[name], str):
            raise SubmissionError(f"{name} must be a string, got {type(body[name]).__name__}")
    student = body["student_id"]
    if not _STUDENT_RE.match(student):
        raise SubmissionError("student_id must be 1-64 letters, digits or _.@- characters")
    challenge = challenges.get(body["challenge_id"])
    if challenge is None:
        raise SubmissionError(f"unknown challenge_id {body['challenge_id']!r}", status=404)
    if body["language"] not in LANGUAGES:
        raise SubmissionError(
            f"language {body['language']!r} is not scored (supported: {', '.join(LANGUAGES)})"
        )
    size = len(body["source"].encode("utf-8"))
    if size > MAX_SOURCE_BYTES:
        raise SubmissionError(
            f"source is {size} bytes, more than the limit of {MAX_SOURCE_BYTES}", status=413
        )
    if not body["source"].strip():
        raise SubmissionError("source is empty")
    plan = body.get("plan", "free")
    if plan not in _PLANS:
        raise SubmissionError(f"plan must be one of {', '.join(_PLANS)}, got {plan!r}")
    retry_of = body.get("retry_of") or ""
    if retry_of and (not isinstance(retry_of, str) or not _ID_RE.match(retry_of)):
        raise SubmissionError("retry_of must be a submission id (32 hex digits)")
    return {
        "kind": "submission",
        "submission_id": submission_id or uuid.uuid4().hex,
        "student_id": student,
        "challenge_id": challenge.id,
        "language": body["language"],
        "source": body["source"],
        "plan": plan,
        "retry_of": retry_of,
        "priority": "high" if plan == "paid" or retry_of else "normal",
        "submitted_at": submitted_at or _now(),
        "challenge_spec": orjson.dumps(challenge.command_spec()).decode(),
    }


def result_event(
    command: Mapping[str, Any], run: Mapping[str, Any], scored_at: str
) -> dict[str, Any]:
    """The result event for a scored command (``run``: a sandbox ``RunResult.as_dict()``)."""
    spec = orjson.loads(command["challenge_spec"])
    tests = run["tests"]
    failed = [t for t in tests if not t["passed"]]
    return {
        "kind": "result",
        "submission_id": command["submission_id"],
        "student_id": command["student_id"],
        "challenge_id": command["challenge_id"],
        "language": command["language"],
        "plan": command.get("plan", "free"),
        "priority": command.get("priority", "normal"),
        "submitted_at": command["submitted_at"],
        "scored_at": scored_at,
        "passed": bool(run["passed"]),
        "xp": int(spec["xp"]),
        "tests_total": len(tests),
        "tests_passed": len(tests) - len(failed),
        "failed_tests": [t["name"] for t in failed],
        "first_failed_test": failed[0]["name"] if failed else "",
        "failure_message": failed[0]["message"] if failed else "",
        "reason": run["reason"],
        "duration_ms": int(run["duration_ms"]),
        "network_isolated": bool(run["network_isolated"]),
        "test_results": orjson.dumps(tests).decode(),
    }

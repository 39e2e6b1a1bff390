"""Student profiles and leaderboards, as a fold over scoring results.

A profile is a function of the *set* of results a student has, not of their order:

- a challenge is solved by its first passing submission, "first" meaning the smallest
  ``(submitted_at, submission_id)``; it earns the challenge's XP once, in that
  submission's language. A later (or resubmitted) pass of a solved challenge earns nothing;
- a result seen twice (a redelivery, a replay) changes nothing: results are keyed by
  ``submission_id``.

So the profile agent is idempotent under replay and redelivery, results may reach it in any
order (the priority queue reorders them), and the same numbers come out of SQL over the
lake's ``results`` table (``leaderboard.sql``, ``profiles.sql``) — which the end-to-end test
checks against an independent recomputation from the raw submissions.

Leaderboards rank by XP (overall, or earned in one language), ties by ``student_id``; a
language board lists only students with XP in that language. Pure: no Kafka client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LEADERBOARD_SIZE", "Profile", "Profiles", "Solved"]

LEADERBOARD_SIZE = 10


@dataclass(frozen=True)
class Solved:
    """The submission credited for a solved challenge."""

    submitted_at: str
    submission_id: str
    language: str
    xp: int

    @property
    def order(self) -> tuple[str, str]:
        return (self.submitted_at, self.submission_id)


@dataclass
class Profile:
    """One student's XP, solved challenges and XP per language."""

    student_id: str
    solved: dict[str, Solved] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    passed_submissions: int = 0

    @property
    def xp(self) -> int:
        return sum(s.xp for s in self.solved.values())

    @property
    def xp_by_language(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for solved in self.solved.values():
            totals[solved.language] = totals.get(solved.language, 0) + solved.xp
        return dict(sorted(totals.items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "student_id": self.student_id,
            "xp": self.xp,
            "challenges_solved": sorted(self.solved),
            "xp_by_language": self.xp_by_language,
            "submissions": len(self.seen),
            "passed_submissions": self.passed_submissions,
        }


class Profiles:
    """Every student's profile, built from results; :meth:`apply` is idempotent."""

    def __init__(self) -> None:
        self.students: dict[str, Profile] = {}
        self.results = 0

    def apply(self, result: Mapping[str, Any]) -> bool:
        """Fold one result in; True when the student's profile changed."""
        student = str(result["student_id"])
        profile = self.students.get(student)
        if profile is None:
            profile = self.students[student] = Profile(student)
        submission = str(result["submission_id"])
        if submission in profile.seen:
            return False
        profile.seen.add(submission)
        self.results += 1
        if not result.get("passed"):
            return True
        profile.passed_submissions += 1
        candidate = Solved(
            submitted_at=str(result["submitted_at"]),
            submission_id=submission,
            language=str(result["language"]),
            xp=int(result["xp"]),
        )
        challenge = str(result["challenge_id"])
        current = profile.solved.get(challenge)
        if current is None or candidate.order < current.order:
            profile.solved[challenge] = candidate
        return True

    def apply_all(self, results: Iterable[Mapping[str, Any]]) -> int:
        """Fold many results; the number that changed a profile."""
        return sum(self.apply(r) for r in results)

    def profile(self, student_id: str) -> Profile | None:
        return self.students.get(student_id)

    def leaderboard(
        self, language: str | None = None, size: int = LEADERBOARD_SIZE
    ) -> list[dict[str, Any]]:
        """Top ``size`` students by XP (in ``language`` when given), ties by id."""
        rows = []
        for profile in self.students.values():
            xp = profile.xp if language is None else profile.xp_by_language.get(language, 0)
            if xp > 0:
                rows.append((-xp, profile.student_id))
        rows.sort()
        return [
            {"rank": rank, "student_id": student, "xp": -neg_xp}
            for rank, (neg_xp, student) in enumerate(rows[:size], start=1)
        ]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every profile as plain data (tests compare these)."""
        return {sid: p.as_dict() for sid, p in sorted(self.students.items())}

"""Challenges as files: one TOML file each (statement, difficulty, function, tests).

A challenge file holds ``id``, ``title``, ``difficulty`` (1-5, which sets its XP: 50, 100,
200, 350, 500), the ``function`` a submission defines, the ``statement`` and ``[[tests]]``
(``name``, ``args``, ``expected``). ``reference`` (a solution that must pass every test)
and ``mistakes`` (typical wrong solutions, each failing at least one test) serve
``firelake cdu challenges add`` — which checks both in the sandbox before it accepts a
file — and the load generator's simulated students; the API never shows them.

Pure: no Kafka client; parsing errors name the file, the key and the reason.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.cdu.sandbox import SANDBOX_LANGUAGES, SandboxTest

__all__ = [
    "LANGUAGES",
    "XP_BY_DIFFICULTY",
    "Challenge",
    "ChallengeError",
    "load_challenges",
    "parse_challenge",
]

#: XP a passed challenge earns, by difficulty (the book: 50-500 XP).
XP_BY_DIFFICULTY = {1: 50, 2: 100, 3: 200, 4: 350, 5: 500}
#: Languages the scorer runs.
LANGUAGES = SANDBOX_LANGUAGES
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_FUNCTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class ChallengeError(ValueError):
    """A challenge file that cannot be used: names the file, the key and the reason."""


@dataclass(frozen=True)
class Challenge:
    """One challenge, as loaded from its file."""

    id: str
    title: str
    difficulty: int
    function: str
    statement: str
    tests: tuple[SandboxTest, ...]
    reference: str = ""
    mistakes: tuple[str, ...] = ()
    path: str = ""
    solutions: Mapping[str, str] = field(default_factory=dict)  # language -> reference

    def reference_in(self, language: str) -> str:
        """The reference solution in a language ('' without one)."""
        return self.reference if language == "python" else self.solutions.get(language, "")

    @property
    def xp(self) -> int:
        return XP_BY_DIFFICULTY[self.difficulty]

    def public(self) -> dict[str, Any]:
        """What students see (``GET /v1/cdu/challenges``): no solutions, tests by name."""
        return {
            "id": self.id,
            "title": self.title,
            "difficulty": self.difficulty,
            "xp": self.xp,
            "function": self.function,
            "statement": self.statement,
            "languages": [lang for lang in LANGUAGES if self.reference_in(lang)],
            "tests": [t.name for t in self.tests],
        }

    def command_spec(self) -> dict[str, Any]:
        """What a submission's command message carries so the scorer needs no files:
        the tests pinned at submission time."""
        return {
            "function": self.function,
            "xp": self.xp,
            "tests": [
                {"name": t.name, "args": list(t.args), "expected": t.expected} for t in self.tests
            ],
        }


def _need(data: Mapping[str, Any], key: str, kind: type, source: str) -> Any:
    if key not in data:
        raise ChallengeError(f"{source}: {key}: missing")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ChallengeError(f"{source}: {key}: must be a {kind.__name__}, got {value!r}")
    return value


def parse_challenge(text: str, source: str = "<challenge>") -> Challenge:
    """A challenge from its TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ChallengeError(f"{source}: (syntax): {exc}") from exc
    known = {"id", "title", "difficulty", "function", "statement", "tests", "reference"}
    known |= {"mistakes", "solutions"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ChallengeError(
            f"{source}: {unknown[0]}: unknown key (known: {', '.join(sorted(known))})"
        )
    ident = _need(data, "id", str, source)
    if not _ID_RE.match(ident):
        raise ChallengeError(f"{source}: id: lower-case letters, digits and '-', got {ident!r}")
    difficulty = _need(data, "difficulty", int, source)
    if difficulty not in XP_BY_DIFFICULTY:
        raise ChallengeError(f"{source}: difficulty: must be 1-5 (XP 50-500), got {difficulty}")
    function = _need(data, "function", str, source)
    if not _FUNCTION_RE.match(function):
        raise ChallengeError(f"{source}: function: not a Python identifier: {function!r}")
    raw_tests = _need(data, "tests", list, source)
    if not raw_tests:
        raise ChallengeError(f"{source}: tests: at least one [[tests]] is needed")
    tests = []
    for index, raw in enumerate(raw_tests):
        where = f"{source}: tests[{index}]"
        if not isinstance(raw, dict) or set(raw) != {"name", "args", "expected"}:
            raise ChallengeError(f"{where}: must have exactly name, args and expected")
        if not isinstance(raw["name"], str) or not raw["name"]:
            raise ChallengeError(f"{where}.name: must be a non-empty string")
        if not isinstance(raw["args"], list):
            raise ChallengeError(f"{where}.args: must be a list of arguments")
        if raw["name"] in {t.name for t in tests}:
            raise ChallengeError(f"{where}.name: {raw['name']!r} is used twice")
        tests.append(SandboxTest(raw["name"], tuple(raw["args"]), raw["expected"]))
    mistakes = data.get("mistakes", [])
    if not isinstance(mistakes, list) or not all(isinstance(m, str) for m in mistakes):
        raise ChallengeError(f"{source}: mistakes: must be a list of source strings")
    solutions = data.get("solutions", {})
    if not isinstance(solutions, dict) or not all(
        lang in LANGUAGES and lang != "python" and isinstance(code, str)
        for lang, code in solutions.items()
    ):
        raise ChallengeError(
            f"{source}: solutions: a table of language = source ({', '.join(LANGUAGES[1:])})"
        )
    return Challenge(
        solutions=solutions,
        id=ident,
        title=_need(data, "title", str, source),
        difficulty=difficulty,
        function=function,
        statement=_need(data, "statement", str, source).strip(),
        tests=tuple(tests),
        reference=str(data.get("reference", "")),
        mistakes=tuple(mistakes),
        path=source,
    )


def load_challenges(folder: str | Path) -> dict[str, Challenge]:
    """Every ``*.toml`` challenge in a folder, by id (sorted; duplicates refused)."""
    found: dict[str, Challenge] = {}
    for path in sorted(Path(folder).glob("*.toml")):
        challenge = parse_challenge(path.read_text(encoding="utf-8"), str(path))
        if challenge.id in found:
            raise ChallengeError(f"{path}: id: {challenge.id!r} is also {found[challenge.id].path}")
        found[challenge.id] = challenge
    return found

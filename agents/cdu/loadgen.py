"""Simulated students for Code Developer University: realistic load, bounded.

Each submission is drawn from a mix of kinds, in roughly the proportions a coding school
sees: most students submit a working solution (``good``) or one with a typical mistake
(``buggy``: the challenge's own ``mistakes``, which include too-slow algorithms), some a
correct but slow one (``slow``: sleeps, still within the limits), and a few try to break
the scorer (``hostile``: infinite loops, memory bombs, fork, huge output, reading
``/etc/passwd``, opening a socket, native code). A share of students are on the paid plan,
and some buggy submissions are followed by a fixed one that names them in ``retry_of`` —
both go through the priority queue. Bounded by ``submissions`` and ``duration_seconds``;
``ledger`` records what each submission was and whether it must pass, for tests that
recompute profiles independently.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from tqdm import tqdm

from agents.cdu.challenges import Challenge

__all__ = ["HOSTILE", "KIND_MIX", "LoadReport", "Planned", "plan_submissions", "run_load"]

#: Share of each kind of submission.
KIND_MIX: Mapping[str, float] = {"good": 0.50, "buggy": 0.32, "slow": 0.10, "hostile": 0.08}
#: Attacks a hostile student tries; ``{f}`` is the challenge's function name.
HOSTILE: Mapping[str, str] = {
    "infinite_loop": "def {f}(*args):\n    while True:\n        pass\n",
    "memory_bomb": (
        "def {f}(*args):\n    hog = []\n    while True:\n        hog.append(bytearray(10**7))\n"
    ),
    "fork": "import os\ndef {f}(*args):\n    os.fork()\n    return None\n",
    "huge_output": "def {f}(*args):\n    while True:\n        print('spam' * 1000)\n",
    "read_outside": "def {f}(*args):\n    return open('/etc/passwd').read()\n",
    "socket": "import socket\ndef {f}(*args):\n    socket.create_connection(('127.0.0.1', 9092))\n",
    "native_code": "import ctypes\ndef {f}(*args):\n    return ctypes.string_at(0)\n",
    "sleep_forever": "import time\ndef {f}(*args):\n    time.sleep(3600)\n",
}
#: The same attacks in JavaScript (those with a JavaScript form), by the same names.
HOSTILE_JS: Mapping[str, str] = {
    "infinite_loop": "function {f}(...args) {{ while (true) {{}} }}\n",
    "memory_bomb": (
        "function {f}(...args) {{ const hog = []; "
        "while (true) {{ hog.push(new Array(1e6).fill(1)); }} }}\n"
    ),
    "fork": (
        "function {f}(...args) {{ const p = this.constructor.constructor('return process')(); "
        "return p.mainModule.require('child_process').execSync('id').toString(); }}\n"
    ),
    "huge_output": (
        "function {f}(...args) {{ while (true) {{ console.log('spam'.repeat(1000)); }} }}\n"
    ),
    "read_outside": (
        "function {f}(...args) {{ const p = this.constructor.constructor('return process')(); "
        "return p.mainModule.require('fs').readFileSync('/etc/passwd', 'utf8'); }}\n"
    ),
    "sleep_forever": (
        "function {f}(...args) {{ "
        "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3600000); }}\n"
    ),
}
_SLOW_PREFIX = "import time as _time\n"


@dataclass(frozen=True)
class Planned:
    """One submission to send, and what it is."""

    student_id: str
    challenge_id: str
    kind: str
    source: str
    plan: str
    expected_pass: bool
    retry_index: int = -1  # index of the submission this one retries (-1: none)
    attack: str = ""
    language: str = "python"


@dataclass
class LoadReport:
    """What was sent: ``ledger`` rows carry the submission id the API gave."""

    sent: int = 0
    refused: int = 0
    elapsed_seconds: float = 0.0
    ledger: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for row in self.ledger:
            kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
        mix = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        rate = self.sent / self.elapsed_seconds if self.elapsed_seconds else 0.0
        return (
            f"sent {self.sent} submissions in {self.elapsed_seconds:.1f} s ({rate:.0f}/s; "
            f"{mix}); refused {self.refused}"
        )


def _slow_js(challenge: Challenge) -> str:
    """The JavaScript reference, busy 20 ms per call: slow, but within the limits."""
    return (
        challenge.reference_in("javascript")
        + f"\nconst _fast = {challenge.function};\n"
        + f"{challenge.function} = (...args) => {{ const end = Date.now() + 20; "
        + "while (Date.now() < end) {} return _fast(...args); };\n"
    )


def _javascript(challenge: Challenge, kind: str, attack: str) -> tuple[str, bool]:
    """A JavaScript submission of a kind: an unfinished function stands for the buggy one."""
    if kind in ("good", "retry"):
        return challenge.reference_in("javascript"), True
    if kind == "slow":
        return _slow_js(challenge), True
    if kind == "hostile":
        return HOSTILE_JS[attack].format(f=challenge.function), False
    return f"function {challenge.function}(...args) {{\n  return null; // TODO\n}}\n", False


def _slow(challenge: Challenge) -> str:
    """The reference solution, sleeping 0.05 s per call: slow, but within the limits."""
    body = challenge.reference.strip("\n")
    wrapper = (
        f"\n_fast = {challenge.function}\n"
        f"def {challenge.function}(*args):\n    _time.sleep(0.05)\n    return _fast(*args)\n"
    )
    return _SLOW_PREFIX + body + "\n" + wrapper


def plan_submissions(
    challenges: Sequence[Challenge],
    students: int,
    submissions: int,
    seed: int = 0,
    paid_share: float = 0.1,
    retry_share: float = 0.3,
    mix: Mapping[str, float] = KIND_MIX,
    javascript_share: float = 0.3,
) -> list[Planned]:
    """A deterministic list of submissions (same seed, same list). A ``javascript_share``
    of the students write JavaScript where the challenge has a JavaScript reference."""
    rng = random.Random(seed)
    usable = [c for c in challenges if c.reference]
    paid = {f"student-{i:04d}" for i in range(students) if rng.random() < paid_share}
    js_rng = random.Random(seed + 1)  # its own stream: the Python plan stays as it was
    writes_js = {f"student-{i:04d}" for i in range(students) if js_rng.random() < javascript_share}
    kinds, weights = zip(*mix.items(), strict=True)
    planned: list[Planned] = []
    hostile = 0
    while len(planned) < submissions:
        student = f"student-{rng.randrange(students):04d}"
        challenge = rng.choice(usable)
        kind = rng.choices(kinds, weights)[0]
        plan = "paid" if student in paid else "free"
        attack = ""
        if kind == "good":
            source, passes = challenge.reference, True
        elif kind == "slow":
            source, passes = _slow(challenge), True
        elif kind == "buggy" and challenge.mistakes:
            source, passes = rng.choice(challenge.mistakes), False
        elif kind == "hostile":
            attack = sorted(HOSTILE)[hostile % len(HOSTILE)]  # every attack, in turn
            hostile += 1
            source, passes = HOSTILE[attack].format(f=challenge.function), False
        else:
            kind, source, passes = "good", challenge.reference, True
        language = "python"
        if student in writes_js and challenge.reference_in("javascript"):
            language = "javascript"
            if kind == "hostile" and attack not in HOSTILE_JS:
                attack = sorted(HOSTILE_JS)[hostile % len(HOSTILE_JS)]
            source, passes = _javascript(challenge, kind, attack)
        planned.append(
            Planned(
                student, challenge.id, kind, source, plan, passes, attack=attack, language=language
            )
        )
        if kind == "buggy" and len(planned) < submissions and rng.random() < retry_share:
            # The student fixes the bug and resubmits, naming the failed submission.
            fixed_source = challenge.reference_in(language)
            fixed = Planned(
                student, challenge.id, "retry", fixed_source, plan, True, language=language
            )
            planned.append(replace(fixed, retry_index=len(planned) - 1))
    return planned


async def run_load(
    base_url: str,
    planned: Sequence[Planned],
    concurrency: int = 16,
    duration_seconds: float = 300.0,
    progress: bool = True,
) -> LoadReport:
    """POST the planned submissions (a retry after the one it retries), bounded in time."""
    report = LoadReport()
    ids: dict[int, str] = {}
    done_events: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(len(planned))}
    started = time.monotonic()
    deadline = started + duration_seconds
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(planned)):
        queue.put_nowait(index)
    bar = tqdm(total=len(planned), unit="sub", disable=not progress, desc="submissions")
    timeout = aiohttp.ClientTimeout(total=30)

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            item = planned[index]
            body: dict[str, Any] = {
                "student_id": item.student_id,
                "challenge_id": item.challenge_id,
                "language": item.language,
                "source": item.source,
                "plan": item.plan,
            }
            if item.retry_index >= 0:
                await done_events[item.retry_index].wait()
                if item.retry_index in ids:
                    body["retry_of"] = ids[item.retry_index]
            try:
                async with session.post(f"{base_url}/v1/cdu/submissions", json=body) as answer:
                    payload = await answer.json()
                    if answer.status == 202:
                        ids[index] = payload["submission_id"]
                        report.sent += 1
                        report.ledger.append(
                            {
                                "submission_id": payload["submission_id"],
                                "submitted_at": payload["submitted_at"],
                                "student_id": item.student_id,
                                "challenge_id": item.challenge_id,
                                "language": item.language,
                                "kind": item.kind,
                                "attack": item.attack,
                                "plan": item.plan,
                                "priority": payload["priority"],
                                "expected_pass": item.expected_pass,
                            }
                        )
                    else:
                        report.refused += 1
                        report.errors.append(f"{answer.status}: {payload.get('error')}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                report.refused += 1
                report.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                done_events[index].set()
                bar.update(1)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(max(1, concurrency))))
    bar.close()
    report.elapsed_seconds = time.monotonic() - started
    return report

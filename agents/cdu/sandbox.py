"""The Code Scoring agent's sandbox: run one Python submission against its tests, bounded.

Each run gets a fresh temporary folder (removed after) holding a throwaway working
directory, and a separate process — ``python -I -S`` running :mod:`agents.cdu.harness` —
that applies its limits to itself before any submitted code runs:

- **time**: CPU time (``RLIMIT_CPU``, the kernel sends SIGXCPU) and wall-clock time (the
  parent kills the process group when ``wall_seconds`` pass, sleeping counts too);
- **memory**: address space (``RLIMIT_AS``): a memory bomb gets ``MemoryError`` or dies;
- **output**: stdout and stderr go to a file capped by ``RLIMIT_FSIZE`` (SIGXFSZ at the cap);
- **processes**: ``RLIMIT_NPROC = 0`` (no fork, no threads); as root the child runs as an
  unprivileged uid (``run_as_uid``, default 65534), since root ignores that limit;
- **network**: a new, empty network namespace (``unshare --user --net``: not even loopback
  is up) where the kernel allows unprivileged user namespaces; checked once, reported in
  every result (``network_isolated``);
- **files, sockets, processes, native code**: an audit hook (PEP 578) refuses opening
  files outside the working directory (the standard library stays readable), sockets,
  subprocesses, fork, ``ctypes``; each refusal is recorded and fails the submission with
  its reason even if the code catches the error.

What this does **not** protect against, plainly: the audit hook and the harness run in the
same interpreter as the submission, so code written to attack them (walking the garbage
collector, forging the result file) can bypass the hook's file rules and forge its own
verdict; the process can still read world-readable files through paths the kernel allows
if it defeats the hook; there is no seccomp filter, no mount namespace and no cgroup, so a
kernel exploit escapes, and CPU and memory pressure on a shared host is bounded only per
run. The limits protect the *host and the scorer* from accidents and ordinary hostile
code, not the *integrity of a score* from a determined attacker. A deployment therefore
runs the scorer in its own container (``docker-compose.yml``: the ``cdu-scorer`` service,
read-only root, no network, memory and pid limits) on a host that holds nothing else.

The module is pure (no Kafka client); the scoring agent calls :func:`run_submission`.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "SANDBOX_LANGUAGES",
    "Limits",
    "RunResult",
    "SandboxTest",
    "TestOutcome",
    "network_namespace_available",
    "run_submission",
]

HARNESS = Path(__file__).with_name("harness.py")
HARNESS_JS = Path(__file__).with_name("harness.js")
#: Process groups of runs in progress: a scorer that exits mid-run kills them (atexit), so
#: no sandboxed process outlives its scorer (a sleeping one would not meet its CPU limit).
_LIVE: set[int] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _kill_live_runs() -> None:
    with _LIVE_LOCK:
        for group in list(_LIVE):
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


#: Languages the sandbox runs (JavaScript needs ``node`` and ``prlimit`` on the scorer).
SANDBOX_LANGUAGES = ("python", "javascript")
KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Limits:
    """What one run may use. The defaults are the scorer's defaults."""

    wall_seconds: float = 5.0
    cpu_seconds: int = 2
    memory_bytes: int = 256 * MiB
    output_bytes: int = 64 * KiB
    max_source_bytes: int = 64 * KiB
    run_as_uid: int = 65534  # used only when the scorer runs as root
    network_namespace: bool = True  # use one when the machine allows it


@dataclass(frozen=True)
class SandboxTest:
    """One test: call the challenge's function with ``args``; it must return ``expected``."""

    name: str
    args: tuple[Any, ...]
    expected: Any


@dataclass(frozen=True)
class TestOutcome:
    """One test's verdict; ``message`` says why it failed."""

    name: str
    passed: bool
    message: str = ""


@dataclass(frozen=True)
class RunResult:
    """A scored run: ``passed`` only when every test passed and nothing was refused."""

    passed: bool
    tests: tuple[TestOutcome, ...]
    reason: str = ""  # why the run as a whole failed: a limit, a violation, a crash
    output: str = ""  # the start of what the submission printed
    duration_ms: int = 0
    network_isolated: bool = False
    violations: tuple[str, ...] = field(default=())

    @property
    def failed_tests(self) -> list[str]:
        return [t.name for t in self.tests if not t.passed]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@cache
def network_namespace_available() -> bool:
    """Whether ``unshare --user --net`` works here (unprivileged user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    try:
        done = subprocess.run(
            ["unshare", "--user", "--net", "true"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _equal(value: Any, expected: Any) -> bool:
    """JSON values equal; floats within 1e-9 relative (tuples were lists on the way)."""
    if isinstance(expected, float) or isinstance(value, float):
        if isinstance(value, bool) or isinstance(expected, bool):
            return False
        if isinstance(value, (int, float)) and isinstance(expected, (int, float)):
            return math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-12)
        return False
    if isinstance(expected, list) and isinstance(value, list):
        return len(value) == len(expected) and all(map(_equal, value, expected))
    if isinstance(expected, dict) and isinstance(value, dict):
        return value.keys() == expected.keys() and all(_equal(value[k], expected[k]) for k in value)
    return type(value) is type(expected) and value == expected


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _call_text(function: str, args: Sequence[Any]) -> str:
    inner = ", ".join(_short(a, 80) for a in args)
    return f"{function}({inner})"


def _signal_reason(code: int, limits: Limits) -> str:
    if code >= 0:
        return f"exited with status {code}"
    sig = -code
    if sig == signal.SIGXCPU:
        return f"CPU time limit exceeded ({limits.cpu_seconds} s)"
    if sig == signal.SIGXFSZ:
        return f"output limit exceeded ({limits.output_bytes} bytes)"
    if sig == signal.SIGKILL:
        return "killed (memory limit or CPU hard limit)"
    if sig in (signal.SIGABRT, signal.SIGTRAP):
        return "memory limit exceeded (the runtime aborted)"
    if sig == signal.SIGSEGV:
        return "crashed the interpreter (segmentation fault)"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = str(sig)
    return f"killed by signal {name}"


def _world_executable(path: str) -> bool:
    """Whether any user may run ``path`` (every folder above it searchable by others)."""
    target = Path(path)
    try:
        if not target.stat().st_mode & 0o001:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in target.parents)
    except OSError:
        return False


@cache
def _interpreter(unprivileged: bool) -> str:
    """A Python the run's uid can execute: this one, else a system one (the harness and
    submissions need only the standard library)."""
    candidates = [os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"]
    for candidate in candidates:
        if not unprivileged or _world_executable(os.path.realpath(candidate)):
            return candidate
    raise RuntimeError(
        "no Python interpreter the sandbox uid may run: install python3 in /usr/bin or run "
        "the scorer as an unprivileged user"
    )


def _node_argv(root: Path, limits: Limits) -> list[str]:
    """node under prlimit (it cannot lower its own limits) with the permission model on.

    V8 reserves far more address space than it uses, so the address-space limit is at least
    2 GiB and the heap is bounded by ``--max-old-space-size`` instead; no RLIMIT_NPROC (node
    needs its threads): the permission model refuses child processes and workers."""
    memory_mb = max(16, limits.memory_bytes // MiB)
    return [
        "prlimit",
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",
        f"--as={max(limits.memory_bytes, 2048 * MiB)}",
        f"--fsize={limits.output_bytes}",
        "--nofile=64",
        "--core=0",
        "--",
        "node",
        "--experimental-permission",
        f"--allow-fs-read={root}/",
        f"--allow-fs-write={root / 'result'}",
        f"--max-old-space-size={memory_mb}",
        "--no-warnings",
        "--stack-size=984",
        str(root / "harness.js"),
        str(root / "spec.json"),
        str(root / "result"),
    ]


def _argv(
    root: Path, isolate_net: bool, unprivileged: bool, language: str, limits: Limits
) -> list[str]:
    if language == "javascript":
        node = _node_argv(root, limits)
        cut = node.index("--") + 1
        namespace = ["unshare", "--user", "--net", "--"] if isolate_net else []
        return node[:cut] + namespace + node[cut:]
    # A copy of the harness inside the run's folder: the project's folder may be
    # unreadable to the run's uid.
    python = [_interpreter(unprivileged), "-I", "-S", "-X", "utf8", str(root / "harness.py")]
    python += [str(root / "spec.json"), str(root / "result")]
    return (["unshare", "--user", "--net", "--"] if isolate_net else []) + python


def run_submission(
    source: str,
    function: str,
    tests: Sequence[SandboxTest],
    limits: Limits = Limits(),
    language: str = "python",
) -> RunResult:
    """Run ``source`` and call ``function`` once per test, in a fresh bounded process.

    Never raises for anything the submission does: every outcome (wrong answers, errors,
    limits, refusals, crashes) comes back as a :class:`RunResult` with its reason.
    """
    started = time.monotonic()
    isolate_net = limits.network_namespace and network_namespace_available()

    def failed(reason: str, output: str = "", outcomes: Sequence[TestOutcome] = ()) -> RunResult:
        done = {o.name: o for o in outcomes}
        rest = [done.get(t.name) or TestOutcome(t.name, False, reason) for t in tests]
        return RunResult(
            passed=False,
            tests=tuple(rest),
            reason=reason,
            output=output,
            duration_ms=int((time.monotonic() - started) * 1000),
            network_isolated=isolate_net,
        )

    if len(source.encode("utf-8", "replace")) > limits.max_source_bytes:
        return failed(f"source larger than {limits.max_source_bytes} bytes")
    if language not in SANDBOX_LANGUAGES:
        return failed(f"language {language!r} is not scored")
    if language == "javascript" and not (shutil.which("node") and shutil.which("prlimit")):
        return failed("javascript is not available on this scorer (node and prlimit needed)")
    with tempfile.TemporaryDirectory(prefix="cdu-run-") as tmp:
        root = Path(tmp)
        workdir = root / "work"
        workdir.mkdir()
        spec_path, result_path, output_path = root / "spec.json", root / "result", root / "out"
        spec = {
            "source": source,
            "function": function,
            "tests": [{"name": t.name, "args": list(t.args)} for t in tests],
            "workdir": str(workdir),
            "limits": asdict(limits),
        }
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        shutil.copyfile(HARNESS, root / "harness.py")
        shutil.copyfile(HARNESS_JS, root / "harness.js")
        drop_root = os.geteuid() == 0
        if drop_root:
            os.chown(workdir, limits.run_as_uid, limits.run_as_uid)
            os.chmod(root, 0o755)
            for path in (spec_path, root / "harness.py", root / "harness.js"):
                os.chmod(path, 0o644)
            result_path.touch()
            os.chown(result_path, limits.run_as_uid, limits.run_as_uid)
        identity: dict[str, Any] = (
            {"user": limits.run_as_uid, "group": limits.run_as_uid, "extra_groups": []}
            if drop_root
            else {}
        )
        with output_path.open("wb") as output:
            process = subprocess.Popen(
                _argv(root, isolate_net, drop_root, language, limits),
                cwd=workdir,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **identity,
            )
            with _LIVE_LOCK:
                _LIVE.add(process.pid)
            timed_out = False
            try:
                code = process.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(process)
                code = process.wait()
        _kill_group(process)  # anything it left behind in its session
        with _LIVE_LOCK:
            _LIVE.discard(process.pid)
        printed_bytes = output_path.stat().st_size
        printed = output_path.read_bytes()[:2000].decode("utf-8", "replace")
        lines = _result_lines(result_path)
    if printed_bytes >= limits.output_bytes:
        # Python ignores SIGXFSZ: writes past the cap fail with EFBIG instead.
        return failed(f"output limit exceeded ({limits.output_bytes} bytes)", printed)
    return _verdict(lines, tests, function, code, timed_out, printed, limits, failed)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _result_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # cut off by a limit
        if isinstance(record, dict):
            records.append(record)
    return records


def _verdict(
    lines: list[dict[str, Any]],
    tests: Sequence[SandboxTest],
    function: str,
    code: int,
    timed_out: bool,
    printed: str,
    limits: Limits,
    failed: Any,
) -> RunResult:
    if not lines:
        reason = "the sandbox did not start" if code == 0 else _signal_reason(code, limits)
        if timed_out:
            reason = f"wall-clock limit exceeded ({limits.wall_seconds} s)"
        return failed(reason, printed)
    expected = {t.name: t for t in tests}
    outcomes: list[TestOutcome] = []
    violations: list[str] = []
    done = False
    for record in lines:
        violations = list(record.get("violations", violations))
        if "load_error" in record:
            reason = str(record["load_error"])
            if violations:
                reason = f"sandbox violation: {violations[0]}"
            return failed(reason, printed)
        if record.get("fl-result") == "done":
            done = True
            continue
        name = record.get("test")
        if name not in expected:
            continue
        test = expected[name]
        call = _call_text(function, test.args)
        if record.get("error"):
            outcomes.append(TestOutcome(name, False, f"{call} raised {record['error']}"))
            continue
        try:
            value = json.loads(record.get("value") or "null")
        except json.JSONDecodeError:
            value = None
        if _equal(value, test.expected):
            outcomes.append(TestOutcome(name, True))
        else:
            message = f"{call} returned {_short(value)}, expected {_short(test.expected)}"
            outcomes.append(TestOutcome(name, False, message))
    if violations:
        return failed(f"sandbox violation: {violations[0]}", printed, outcomes)
    if any("memory limit exceeded" in o.message for o in outcomes):
        return failed(
            f"memory limit exceeded ({limits.memory_bytes // MiB} MiB)", printed, outcomes
        )
    if timed_out:
        return failed(f"wall-clock limit exceeded ({limits.wall_seconds} s)", printed, outcomes)
    if not done or code != 0:
        return failed(_signal_reason(code, limits), printed, outcomes)
    result = failed("", printed, outcomes)
    all_passed = all(o.passed for o in result.tests)
    reason = "" if all_passed else f"{len(result.failed_tests)} of {len(tests)} tests failed"
    return RunResult(
        passed=all_passed,
        tests=result.tests,
        reason=reason,
        output=printed,
        duration_ms=result.duration_ms,
        network_isolated=result.network_isolated,
    )

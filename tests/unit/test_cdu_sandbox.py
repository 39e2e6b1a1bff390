"""The Code Scoring sandbox: right and wrong answers, every hostile submission scored as
failed with its reason, the host unharmed (no process left, no file written outside)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agents.cdu.sandbox import Limits, SandboxTest, network_namespace_available, run_submission
from agents.cdu.testing import leftover_sandbox_processes

TESTS = (SandboxTest("small", (1, 2), 3), SandboxTest("negative", (-1, -2), -3))
LIMITS = Limits(wall_seconds=3.0, cpu_seconds=1)


def run(source: str) -> object:
    return run_submission(source, "add", TESTS, LIMITS)


def test_a_correct_submission_passes_every_test() -> None:
    result = run("def add(a, b):\n    return a + b\n")
    assert result.passed and result.reason == ""
    assert [(t.name, t.passed) for t in result.tests] == [("small", True), ("negative", True)]


def test_a_wrong_answer_names_the_call_the_value_and_the_expectation() -> None:
    result = run("def add(a, b):\n    return a - b\n")
    assert not result.passed
    assert result.reason == "2 of 2 tests failed"
    assert result.tests[0].message == "add(1, 2) returned -1, expected 3"


def test_an_exception_fails_only_its_test() -> None:
    result = run(
        "def add(a, b):\n    if a < 0:\n        raise ValueError('no negatives')\n"
        "    return a + b\n"
    )
    assert [t.passed for t in result.tests] == [True, False]
    assert result.tests[1].message == "add(-1, -2) raised ValueError: no negatives"


def test_types_matter_and_floats_compare_within_tolerance() -> None:
    assert not run("def add(a, b):\n    return str(a + b)\n").passed
    close = run_submission("def f():\n    return 0.1 + 0.2\n", "f", (SandboxTest("t", (), 0.3),))
    assert close.passed


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("def add(a, b):\n    while True:\n        pass\n", "CPU time limit exceeded"),
        ("import time\ndef add(a, b):\n    time.sleep(60)\n", "wall-clock limit exceeded"),
        (
            "def add(a, b):\n    hog = []\n    while True:\n        hog.append(bytearray(10**7))\n",
            "memory limit exceeded",
        ),
        ("import os\ndef add(a, b):\n    os.fork()\n", "sandbox violation: creating a process"),
        (
            "import os\ndef add(a, b):\n    try:\n        os.fork()\n    except OSError:\n"
            "        pass\n    return a + b\n",
            "sandbox violation: creating a process",
        ),
        ("def add(a, b):\n    while True:\n        print('x' * 1000)\n", "output limit exceeded"),
        (
            "def add(a, b):\n    return len(open('/etc/passwd').read())\n",
            "sandbox violation: opening '/etc/passwd' outside the working directory",
        ),
        (
            "def add(a, b):\n    open('/tmp/cdu-escape', 'w').write('x')\n",
            "sandbox violation: opening '/tmp/cdu-escape' outside the working directory",
        ),
        (
            "import socket\ndef add(a, b):\n    socket.socket().connect(('127.0.0.1', 9))\n",
            "sandbox violation: opening a socket",
        ),
        ("import ctypes\n", "sandbox violation: importing ctypes"),
        ("import subprocess\ndef add(a, b):\n    subprocess.run(['id'])\n", "sandbox violation"),
        ("import os\nos._exit(3)\n", "exited with status 3"),
        ("def add(a, b) return\n", "SyntaxError"),
        ("def plus(a, b):\n    return a + b\n", "defines no function add()"),
    ],
    ids=[
        "infinite-loop",
        "sleep",
        "memory-bomb",
        "fork",
        "fork-caught",
        "huge-output",
        "read-outside",
        "write-outside",
        "socket",
        "ctypes",
        "subprocess",
        "exit",
        "syntax",
        "no-function",
    ],
)
def test_hostile_submissions_fail_with_their_reason(source: str, reason: str) -> None:
    result = run(source)
    assert not result.passed
    assert reason in result.reason, result
    assert all(not t.passed for t in result.tests) or "violation" in result.reason
    assert not Path("/tmp/cdu-escape").exists()


def test_the_host_is_unharmed_and_no_process_is_left_behind() -> None:
    run("import os\ndef add(a, b):\n    os.fork()\n")
    run("def add(a, b):\n    while True:\n        pass\n")
    assert leftover_sandbox_processes() == []
    # and the scorer keeps going
    assert run("def add(a, b):\n    return a + b\n").passed


def test_no_network_in_the_sandbox_even_without_the_audit_hook() -> None:
    if not network_namespace_available():
        pytest.skip("unprivileged user namespaces are not allowed on this machine")
    # _socket is the C module the hook does not see by import; the namespace stops it.
    source = (
        "import _socket\ndef add(a, b):\n"
        "    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n"
        "    s.connect(('127.0.0.1', 9))\n"
    )
    result = run(source)
    assert not result.passed
    assert result.network_isolated


def test_oversized_source_is_refused_before_running() -> None:
    result = run_submission("#" * 70_000, "add", TESTS, LIMITS)
    assert not result.passed and "source larger than" in result.reason


needs_node = pytest.mark.skipif(
    not (shutil.which("node") and shutil.which("prlimit")), reason="node and prlimit needed"
)


def run_js(source: str) -> object:
    return run_submission(source, "add", TESTS, LIMITS, language="javascript")


@needs_node
def test_javascript_right_and_wrong_answers() -> None:
    assert run_js("function add(a, b) { return a + b; }").passed
    wrong = run_js("function add(a, b) { return a - b; }")
    assert not wrong.passed and wrong.tests[0].message == "add(1, 2) returned -1, expected 3"


@needs_node
@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("function add(a, b) { while (true) {} }", "limit exceeded"),  # CPU, or wall if loaded
        (
            "function add(a, b) { const x = []; while (true) x.push(new Array(1e6).fill(1)); }",
            "memory limit exceeded",
        ),
        ("function add(a, b) { while (true) console.log('x'.repeat(1000)); }", "output limit"),
        (
            "function add(a, b) { const p = this.constructor.constructor('return process')();"
            " return p.mainModule.require('fs').readFileSync('/etc/passwd', 'utf8'); }",
            "sandbox violation: permission denied (FileSystemRead",
        ),
        (
            "function add(a, b) { const p = this.constructor.constructor('return process')();"
            " return p.mainModule.require('child_process').execSync('id').toString(); }",
            "sandbox violation: permission denied (ChildProcess",
        ),
        (
            "function add(a, b) { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0,"
            " 60000); }",
            "wall-clock limit exceeded",
        ),
        ("function add(a, b) {", "SyntaxError"),
        ("const x = require('fs');", "ReferenceError: require is not defined"),
    ],
    ids=["loop", "memory", "output", "read-outside", "child-process", "sleep", "syntax", "require"],
)
def test_hostile_javascript_fails_with_its_reason(source: str, reason: str) -> None:
    result = run_js(source)
    assert not result.passed
    assert reason in result.reason, result

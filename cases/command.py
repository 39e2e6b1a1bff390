"""What ``firelake test`` does once its arguments are parsed (the CLI stays thin).

Finds the case folders (default: ``./cases``), keeps those matching ``-k``, runs them one
by one on the given broker, prints each case's report as it finishes and a total with the
time per case, writes JUnit XML if asked, and returns the exit code: 0 when every case
passed, 1 otherwise (2 for cases that cannot be found).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from cases.case import CaseError, discover
from cases.junit import write_junit
from cases.runner import exit_code, run_cases

__all__ = ["DEFAULT_CASES", "run_test_command"]

#: Where ``firelake test`` looks when given no case folder.
DEFAULT_CASES = "cases"


def run_test_command(
    paths: Sequence[str],
    bootstrap: str,
    *,
    pattern: str | None = None,
    update: bool = False,
    junit_xml: str | None = None,
    speed: float | None = None,
    partitions: int | None = None,
    keep: bool = False,
    echo: Callable[[str], None] = print,
) -> int:
    """Run the cases; see the module docstring."""
    roots = list(paths) or [DEFAULT_CASES]
    try:
        folders = discover(roots, pattern)
    except CaseError as exc:
        echo(f"firelake test: {exc}")
        return 2
    if not folders:
        where = ", ".join(roots)
        echo(
            f"firelake test: no case folder (with case.toml) under {where}"
            + (f" matching {pattern!r}" if pattern else "")
        )
        return 2
    results = run_cases(
        folders, bootstrap, update=update, speed=speed, partitions=partitions, keep=keep, echo=echo
    )
    if junit_xml:
        write_junit(junit_xml, results)
    passed = sum(r.passed for r in results)
    total = sum(r.seconds for r in results)
    echo(
        f"{passed} of {len(results)} cases passed in {total:.1f} s "
        f"({total / len(results):.1f} s per case)"
        + (f"; JUnit XML in {Path(junit_xml)}" if junit_xml else "")
    )
    return exit_code(results)

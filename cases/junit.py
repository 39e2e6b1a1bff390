"""JUnit XML for replay test runs (``firelake test --junit-xml FILE``), as CI tools read it.

One ``<testsuite name="firelake">`` with one ``<testcase>`` per case (its time, and per-phase
times as properties); a failing case carries a ``<failure>`` whose text is the case's
report — the diffs of missing and unexpected rows — and a case that could not run an
``<error>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cases.runner import CaseResult

__all__ = ["junit_xml", "write_junit"]


def junit_xml(results: Sequence[CaseResult]) -> str:
    """The JUnit XML text of a run."""
    failures = sum(1 for r in results if not r.passed and not r.error)
    errors = sum(1 for r in results if r.error)
    suite = ET.Element(
        "testsuite",
        name="firelake",
        tests=str(len(results)),
        failures=str(failures),
        errors=str(errors),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname="firelake.cases",
            name=result.case,
            file=str(result.folder),
            time=f"{result.seconds:.3f}",
        )
        properties = ET.SubElement(case, "properties")
        ET.SubElement(properties, "property", name="events", value=str(result.events))
        for phase, seconds in result.phases.items():
            ET.SubElement(properties, "property", name=f"{phase}_seconds", value=f"{seconds:.3f}")
        for column in result.wall_clock:
            ET.SubElement(properties, "property", name="wall_clock", value=column)
        if result.error:
            node = ET.SubElement(case, "error", message=result.error.splitlines()[0][:200])
            node.text = result.report()
        elif not result.passed:
            failed = [o.name for o in result.outcomes if not o.passed]
            node = ET.SubElement(case, "failure", message=f"rows differ: {', '.join(failed)}")
            node.text = result.report()
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(path: str | Path, results: Sequence[CaseResult]) -> None:
    """Write the JUnit XML of a run to ``path``."""
    Path(path).write_text(junit_xml(results), encoding="utf-8")

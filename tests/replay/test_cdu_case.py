"""Code Developer University's shipped replay case on the real broker: recorded submission
commands replayed through the example's routers, the sandbox and the sinks; verdicts,
profiles and the leaderboard compared with answers ``make_cdu_cases.py`` computed
independently of the pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from firelake.config import example_config_path

cases = pytest.importorskip("cases.case", reason="the replay-case package (firelake test)")

pytestmark = pytest.mark.kafka

CDU_CASES = example_config_path("cdu").parent / "cases"
SHIPPED = cases.discover([CDU_CASES])


def test_cdu_ships_a_case() -> None:
    assert [f.name for f in SHIPPED] == ["scoring"]


@pytest.mark.parametrize("folder", SHIPPED, ids=[f.name for f in SHIPPED])
def test_shipped_cdu_case_passes(firelake_case, folder: Path) -> None:
    result = firelake_case.check(folder)
    print(result.summary())
    assert result.events == sum(len(p.read_text().splitlines()) for p in folder.glob("input/*"))

"""Code Developer University's shipped replay case on the real broker: recorded submission
commands replayed through the example's routers, the sandbox, the ``cdu-hourly`` window and
the sinks; verdicts, profiles, the leaderboard and the window's closed hours compared with
answers ``make_cdu_cases.py`` computed independently of the pipeline, and the window's
final results with SQL over the same lake (``firelake windows verify``)."""

from __future__ import annotations

import subprocess
import sys
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
def test_shipped_cdu_case_passes(firelake_case, folder: Path, tmp_path: Path) -> None:
    result = firelake_case.check(folder, keep=True, workdir=tmp_path)
    print(result.summary())
    assert result.events == sum(len(p.read_text().splitlines()) for p in folder.glob("input/*"))
    assert result.workdir is not None
    # The hourly window's final rows equal DuckDB's recomputation over the results table
    # (expected/hourly.csv proved them equal to plain counting of the commands).
    verified = subprocess.run(
        [
            *(sys.executable, "-m", "firelake.cli", "windows", "verify"),
            *(f"cdu-hourly-{result.suffix}", "--config", str(result.workdir / "firelake.toml")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=result.workdir,
    )
    summary = verified.stdout.strip().splitlines()[-1] if verified.stdout.strip() else ""
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]
    hourly = (folder / "expected" / "hourly.csv").read_text().splitlines()[1:]
    assert summary.endswith(
        f": {len(hourly)} windows recomputed, {len(hourly)} emitted, 0 differences"
    ), summary

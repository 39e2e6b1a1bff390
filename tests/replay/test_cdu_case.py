"""Code Developer University's shipped replay case on the real broker: recorded submission
commands replayed through the example's routers, the sandbox, the ``cdu-hourly`` window and
the sinks; verdicts, profiles, the leaderboard and the window's closed hours compared with
answers ``make_cdu_cases.py`` computed independently of the pipeline, and the window's
final results with SQL over the same lake (``firelake windows verify``).

The case's lake then serves the dashboard: Debian's ``chromium``, headless, loads it from
the query service with the example's saved queries; every CDU report (leaderboard, most
common mistakes, pass rate, failure reasons, submissions per hour) is drawn, its table
shows the rows SQL over the same lake gives, the leaderboard, pass rates and hourly counts
also equal the case's independent answers, no script error happened, and the browser's
network log holds no request that left 127.0.0.1.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from firelake.config import example_config_path, parse_config

cases = pytest.importorskip("cases.case", reason="the replay-case package (firelake test)")

from cases.pytest_plugin import CaseRunner  # noqa: E402
from cases.runner import CaseResult  # noqa: E402
from tests.integration.browserkit import CHROMIUM, headless, off_loopback, requested  # noqa: E402

pytestmark = pytest.mark.kafka

EXAMPLE = example_config_path("cdu")
CDU_CASES = EXAMPLE.parent / "cases"
SHIPPED = cases.discover([CDU_CASES])
SCORING = CDU_CASES / "scoring"
#: The saved queries the dashboard runs (every one whose parameters have defaults).
REPORTS = (
    "common_failing_tests",
    "failure_reasons",
    "leaderboard",
    "pass_rate",
    "submissions_per_hour",
)


def test_cdu_ships_a_case() -> None:
    assert [f.name for f in SHIPPED] == ["scoring"]


@pytest.fixture(scope="module")
def scoring(
    pytestconfig: pytest.Config, firelake_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CaseResult]:
    """One run of the scoring case, its folder (configuration and lake) kept for the tests."""
    runner = CaseRunner(
        firelake_bootstrap,
        bool(pytestconfig.getoption("firelake_update")),
        pytestconfig.getoption("firelake_speed"),
        pytestconfig,
    )
    result = runner.run(SCORING, keep=True, workdir=tmp_path_factory.mktemp("cdu-case"))
    print(result.summary())
    yield result
    if result.workdir is not None:
        shutil.rmtree(result.workdir, ignore_errors=True)


def test_shipped_cdu_case_passes(scoring: CaseResult) -> None:
    if not scoring.passed:
        pytest.fail(scoring.report(), pytrace=False)
    assert (
        scoring.events
        == len((SCORING / "input" / "cdu-submissions.jsonl").read_bytes().split(b"\n")) - 1
    )
    assert scoring.workdir is not None
    # The hourly window's final rows equal DuckDB's recomputation over the results table
    # (expected/hourly.csv proved them equal to plain counting of the commands).
    verified = subprocess.run(
        [
            *(sys.executable, "-m", "firelake.cli", "windows", "verify"),
            *(f"cdu-hourly-{scoring.suffix}", "--config", str(scoring.workdir / "firelake.toml")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=scoring.workdir,
    )
    summary = verified.stdout.strip().splitlines()[-1] if verified.stdout.strip() else ""
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]
    hourly = len(_csv(SCORING / "expected" / "hourly.csv"))
    assert summary.endswith(f": {hourly} windows recomputed, {hourly} emitted, 0 differences"), (
        summary
    )


class _Reports(HTMLParser):
    """Each report card's table (``id="report-NAME"``) as rows of cell texts, and whether
    its chart was drawn."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.drawn: set[str] = set()
        #: What each report's chart drew: the x keys, and each series' values by key.
        self.charts: dict[str, dict[str, dict[str, float]]] = {}
        self.errors: list[str] = []
        self._report = ""
        self._depth = 0
        self._cell: list[str] | None = None
        self._error = False
        self._legend = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "div":
            if (found.get("id") or "").startswith("report-"):
                self._report, self._depth = (found["id"] or "").removeprefix("report-"), 0
                self.tables[self._report] = []
                if found.get("data-chart") == "drawn":
                    self.drawn.add(self._report)
            elif self._report:
                self._depth += 1
                if found.get("class") == "chart" and found.get("data-series"):
                    keys = [str(k) for k in json.loads(found.get("data-x") or "[]")]
                    self.charts[self._report] = {
                        name: {k: v for k, v in zip(keys, values, strict=True) if v is not None}
                        for name, values in json.loads(found["data-series"] or "{}").items()
                    }
        elif tag == "table":
            self._legend = "u-legend" in (found.get("class") or "")  # uPlot's, not the data
        elif self._legend:
            return
        elif self._report and tag == "tr":
            self.tables[self._report].append([])
        elif self._report and tag in ("td", "th"):
            self._cell = []
        elif self._report and tag == "p" and found.get("class") == "error":
            self._error = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._report:
            if self._depth == 0:
                self._report = ""
            else:
                self._depth -= 1
        elif tag == "table":
            self._legend = False
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[self._report][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "p":
            self._error = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        elif self._error:
            self.errors.append(f"{self._report}: {data}")


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as rows:
        return list(csv.DictReader(rows))


def _text(value: Any) -> str:
    """A value as the page's ``cell()`` writes it (JavaScript's ``String``)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_cdu_dashboard_in_a_browser(scoring: CaseResult, tmp_path: Path) -> None:
    if CHROMIUM is None:  # `make test` installs it; a run without it must not pass silently
        pytest.fail("the dashboard test needs Debian's chromium: apt-get install chromium")
    assert scoring.workdir is not None, scoring.report()
    from queries.engine import QueryEngine, format_json
    from queries.saved import bind_parameters, load_saved
    from queries.service import QueryServerThread

    raw = tomllib.loads((scoring.workdir / "firelake.toml").read_text(encoding="utf-8"))
    raw["query"] = {**raw.get("query", {}), "saved_dir": str(EXAMPLE.parent / "queries")}
    config = parse_config(raw, source="<cdu case>", base_dir=str(scoring.workdir), environ={})
    saved = load_saved([EXAMPLE.parent / "queries"])
    views = {q.name: q.sql for q in saved.values() if q.view}
    sql_rows: dict[str, list[list[str]]] = {}
    with QueryEngine.for_config(config, views) as engine:
        for name in REPORTS:
            result = engine.query(saved[name].sql, params=bind_parameters(saved[name], {}))
            rows = json.loads(format_json(result))
            sql_rows[name] = [list(result.columns)] + [
                [_text(row[c]) for c in result.columns] for row in rows[:50]
            ]
    with QueryServerThread(config, port=0) as server:
        netlog = tmp_path / "net.json"
        done = headless(
            tmp_path / "profile",
            f"--log-net-log={netlog}",
            "--dump-dom",
            f"{server.url}/dashboard",
            budget_ms=10_000,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        dom = done.stdout
        shot = tmp_path / "dashboard.png"
        headless(tmp_path / "shot", f"--screenshot={shot}", f"{server.url}/dashboard")
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:2000]
    errors = re.search(r'data-errors="([^"]*)"', body.group(1))
    assert errors is not None and errors.group(1) == "", body.group(0)
    page = _Reports()
    page.feed(dom)
    assert page.errors == []
    # Every CDU report is on the page, drawn, and shows what SQL over the lake says.
    for name in REPORTS:
        assert name in page.drawn, (name, sorted(page.drawn))
        assert page.tables[name] == sql_rows[name], (name, page.tables[name], sql_rows[name])
    # The same numbers as the case's answers, computed without the pipeline.
    leaders = [[r["student_id"], r["xp"]] for r in _csv(SCORING / "expected" / "leaderboard.csv")]
    assert [[r[1], r[2]] for r in page.tables["leaderboard"][1:]] == leaders
    verdicts = {
        r["submission_id"]: r["passed"] == "true"
        for r in _csv(SCORING / "expected" / "verdicts.csv")
    }
    commands = [
        json.loads(line)["value"]
        for line in (SCORING / "input" / "cdu-submissions.jsonl").read_text().splitlines()
    ]
    rates: dict[tuple[str, str], list[int]] = {}
    hours: dict[str, list[int]] = {}
    for command in commands:
        passed = verdicts[command["submission_id"]]
        rate = rates.setdefault((command["challenge_id"], command["language"]), [0, 0])
        hour = hours.setdefault(command["submitted_at"][:13], [0, 0])
        for counts in (rate, hour):
            counts[0] += 1
            counts[1] += passed
    assert [r[:4] for r in page.tables["pass_rate"][1:]] == [
        [c, lang, str(n), str(p)] for (c, lang), (n, p) in sorted(rates.items())
    ]
    assert [[r[0][:13], r[1], r[2]] for r in page.tables["submissions_per_hour"][1:]] == [
        [h, str(n), str(p)] for h, (n, p) in sorted(hours.items())
    ]
    # The charts draw those numbers: a bar per challenge and language (a pass rate is never
    # summed over languages), a bar per leader.
    rate_bars = {k: v for bars in page.charts["pass_rate"].values() for k, v in bars.items()}
    assert rate_bars == {f"{r[0]} · {r[1]}": float(r[4]) for r in page.tables["pass_rate"][1:]}, (
        rate_bars
    )
    assert max(rate_bars.values()) <= 1
    assert page.charts["leaderboard"] == {"xp": {s: float(xp) for s, xp in leaders}}
    mistakes = page.tables["common_failing_tests"]
    assert len(mistakes) > 5 and all(int(r[2]) > 0 for r in mistakes[1:])
    # The lake's tables are listed, the window's output among them.
    for table in ("submissions", "results", "hourly_results"):
        assert f"<td>{table}</td>" in dom, table
    # Nothing left loopback: the page asked the query service only, and no URL the browser
    # asked for (its own calls included) named another host.
    page_urls = {u for u in requested(netlog) if u.startswith(server.url)}
    assert {"/dashboard", "/static/dashboard.js", "/v1/queries"} <= {
        urlsplit(u).path for u in page_urls
    }, sorted(page_urls)
    outside = off_loopback(netlog)
    assert outside == [], outside
    assert shot.exists() and shot.stat().st_size > 20_000

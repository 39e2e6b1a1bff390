"""Running a replay test case against a real broker: isolate, replay, wait, query, compare.

One run of a case:

1. **Isolate**: a unique suffix renames its streams, routers, sinks and windows (own topics,
   own consumer groups); a fresh temporary folder holds its configuration and its lake
   (:func:`cases.case.case_config`). The topics are created before anything else.
2. **Run the pipeline as a user does**: ``firelake up`` on that configuration, in a child
   process (routers, windows and sinks are never imported here).
3. **Replay** every ``input/<stream>.jsonl`` into its topic with the recorded keys and
   timestamps (:mod:`cases.inject`), as fast as possible or at ``speed``.
4. **Wait for quiescence** (:mod:`cases.quiesce`): every consumer group caught up; sinks
   flush as soon as they have caught up, so the lake is complete then.
5. **Query and compare** each ``expected/*.sql`` over the case's lake with DuckDB
   (:mod:`cases.compare`), and the DLQ reasons and counts if the case expects them.
   ``update`` rewrites the expected files from the actual rows instead.
6. **Clean up**: ``firelake up`` stopped (SIGTERM, as Ctrl-C), the topics and consumer
   groups deleted, the folder removed (unless ``keep``).

Each phase is timed; :class:`CaseResult` carries the times, the diffs, and the columns
whose values fell within the run's own wall-clock time (the case depends on when it runs).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cases.case import Case, CaseError, case_config, load_case, write_rows
from cases.compare import compare_rows, is_ordered, wall_clock_values
from cases.inject import StreamInput, inject_sync
from cases.quiesce import GroupSpec, QuiescenceTimeout, wait_quiescent
from cases.records import read_events
from firelake.config import FirelakeConfig, parse_config
from firelake.testing import unique_suffix, write_config
from queries.catalog import Lake
from queries.engine import QueryEngine, QueryError, format_json
from queries.sandbox import identifier
from streams.topics import delete_topics, ensure_topics

__all__ = ["CaseResult", "QueryOutcome", "delete_groups", "run_case", "run_cases"]

#: Most rows one expected query may return (a case compares answers, not whole lakes).
MAX_ROWS = 1_000_000
#: How long ``firelake up`` gets to stop cleanly.
STOP_TIMEOUT_S = 60


@dataclass
class QueryOutcome:
    """One expectation's verdict."""

    name: str
    sql: str
    passed: bool
    report: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    updated: bool = False


@dataclass
class CaseResult:
    """One run of one case."""

    case: str
    folder: Path
    passed: bool = False
    outcomes: list[QueryOutcome] = field(default_factory=list)
    error: str = ""
    events: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    wall_clock: list[str] = field(default_factory=list)
    workdir: Path | None = None
    #: The suffix of the run's topic and group names.
    suffix: str = ""

    @property
    def results(self) -> dict[str, list[dict[str, Any]]]:
        """Actual rows by expectation name (for comparing runs with each other)."""
        return {o.name: o.rows for o in self.outcomes}

    def summary(self) -> str:
        """One line: verdict, events, total and per-phase seconds."""
        verdict = "PASS" if self.passed else "FAIL"
        phases = ", ".join(f"{k} {v:.1f}" for k, v in self.phases.items())
        return f"{verdict} {self.case}: {self.events} events in {self.seconds:.1f} s ({phases})"

    def report(self) -> str:
        """The summary, then what failed and why, then any wall-clock dependence."""
        lines = [self.summary()]
        if self.error:
            lines.append(f"  error: {self.error}")
        for outcome in self.outcomes:
            if outcome.updated:
                lines.append(f"  updated {outcome.name}")
            elif not outcome.passed:
                lines.extend("  " + line for line in outcome.report.splitlines())
        if self.wall_clock:
            lines.append(
                "  depends on wall-clock time: "
                + ", ".join(self.wall_clock)
                + " hold the time of the run (results differ from run to run)"
            )
        return "\n".join(lines)


def _child_env(bootstrap: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FIRELAKE_LAKE"}
    env["FIRELAKE_KAFKA_BOOTSTRAP"] = bootstrap
    return env


def _groups(config: FirelakeConfig) -> list[GroupSpec]:
    groups = [
        GroupSpec(f"firelake-router-{name}", tuple(r.sources or (r.source,)))
        for name, r in config.routers.items()
    ]
    groups += [
        GroupSpec(f"firelake-window-{name}", (w.source,)) for name, w in config.windows.items()
    ]
    groups += [GroupSpec(f"firelake-sink-{name}", (s.stream,)) for name, s in config.sinks.items()]
    return groups


def _unrenamed(value: Any, tag: str) -> Any:
    if isinstance(value, str):
        return value.replace(tag, "")
    if isinstance(value, list):
        return [_unrenamed(v, tag) for v in value]
    if isinstance(value, dict):
        return {k: _unrenamed(v, tag) for k, v in value.items()}
    return value


def _rows(engine: QueryEngine, sql: str, suffix: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows as JSON data, the run's suffix taken out of every text value: a DLQ
    record's router and source topic read as the case names them, on every run."""
    result = engine.query(sql, max_rows=MAX_ROWS)
    if result.truncated:
        raise QueryError(f"more than {MAX_ROWS} rows: compare an aggregate instead", sql)
    rows = json.loads(format_json(result))
    return [_unrenamed(row, f"-{suffix}") for row in rows], list(result.columns)


def _stop(process: subprocess.Popen[bytes]) -> str | None:
    if process.poll() is not None:
        return None
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return f"firelake up did not stop within {STOP_TIMEOUT_S} s of SIGTERM"
    return None


def _admin(bootstrap: str):  # -> kafka.admin.KafkaAdminClient
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="firelake-test-cleanup")


def _leftovers(bootstrap: str, suffix: str) -> list[str]:
    """Topics the run's agents made for themselves (window changelogs, router dedup logs):
    every topic whose name carries the run's suffix."""
    admin = _admin(bootstrap)
    try:
        return [t for t in admin.list_topics() if f"-{suffix}" in t]
    except Exception:  # best effort: the broker keeps what it keeps
        return []
    finally:
        admin.close()


def delete_groups(bootstrap: str, suffixes: Sequence[str], wait_s: float = 0.0) -> list[str]:
    """Delete the runs' consumer groups; those still holding a static member (sinks and
    windows keep theirs until their session times out) are retried for ``wait_s``.
    Returns the groups left."""
    admin = _admin(bootstrap)
    deadline = time.monotonic() + wait_s

    def ours() -> list[str]:
        return [
            g["group_id"]
            for g in admin.list_groups()
            if any(g["group_id"].endswith(f"-{s}") for s in suffixes)
        ]

    try:
        while True:
            for group in ours():
                try:
                    admin.delete_groups([group])
                except Exception:  # not empty yet: a static member's session runs on
                    continue
            left = ours()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(1.0)
    finally:
        admin.close()


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


def _check(
    case: Case,
    config: FirelakeConfig,
    result: CaseResult,
    update: bool,
    started: datetime,
    suffix: str,
    input_until_ms: int,
) -> None:
    with QueryEngine(Lake.of(config)) as engine:
        for expectation in case.expectations:
            outcome = QueryOutcome(expectation.name, expectation.sql, False)
            result.outcomes.append(outcome)
            try:
                rows, columns = _rows(engine, expectation.sql, suffix)
            except QueryError as exc:
                outcome.report = f"{expectation.name}: query failed: {exc}"
                continue
            outcome.rows = rows
            ended = datetime.now(UTC)
            for column in wall_clock_values(rows, started, ended, input_until_ms):
                result.wall_clock.append(f"{expectation.name}.{column}")
            if update:
                ordered = is_ordered(expectation.sql)
                kept = rows if ordered else sorted(rows, key=lambda r: json.dumps(r, default=str))
                expectation.path.parent.mkdir(parents=True, exist_ok=True)
                write_rows(expectation.path, kept, columns)
                outcome.passed = outcome.updated = True
                continue
            if expectation.rows is None:
                outcome.report = (
                    f"{expectation.name}: no expected rows ({expectation.path.name}); "
                    "run with --update to write them"
                )
                continue
            diff = compare_rows(
                expectation.sql, expectation.rows, rows, columns, case.float_tolerance
            )
            outcome.passed = not diff
            outcome.report = diff.render(expectation.name) if diff else ""
        if case.dlq is not None:
            _check_dlq(case, config, engine, result, update, suffix)


def _check_dlq(
    case: Case,
    config: FirelakeConfig,
    engine: QueryEngine,
    result: CaseResult,
    update: bool,
    suffix: str,
) -> None:
    tables = config.dlq_tables()
    outcome = QueryOutcome("dlq", "", False)
    result.outcomes.append(outcome)
    if not tables:
        outcome.report = "dlq: expected/dlq.json, but no sink writes a router's DLQ stream"
        return
    counts: dict[str, int] = {}
    for table in tables:
        sql = f"SELECT error_type, count(*) AS n FROM {identifier(table)} GROUP BY 1"
        outcome.sql = sql
        if table not in engine.tables:  # no DLQ record at all: no files, no view
            continue
        rows, _ = _rows(engine, sql, suffix)
        for row in rows:
            counts[row["error_type"]] = counts.get(row["error_type"], 0) + row["n"]
    counts = dict(sorted(counts.items()))
    outcome.rows = [{"error_type": k, "n": v} for k, v in counts.items()]
    if update:
        case.dlq_path.write_text(json.dumps(counts, indent=1) + "\n", encoding="utf-8")
        outcome.passed = outcome.updated = True
        return
    expected = [{"error_type": k, "n": v} for k, v in sorted((case.dlq or {}).items())]
    diff = compare_rows(outcome.sql or "dlq", expected, outcome.rows, ["error_type", "n"])
    outcome.passed = not diff
    outcome.report = diff.render("dlq (expected/dlq.json: error_type -> count)") if diff else ""


def run_case(
    case: Case | str | Path,
    bootstrap: str,
    *,
    update: bool = False,
    speed: float | None = None,
    partitions: int | None = None,
    keep: bool = False,
    workdir: str | Path | None = None,
) -> CaseResult:
    """Run one case (see the module docstring); never raises for a failing case."""
    began = time.monotonic()
    if not isinstance(case, Case):
        try:
            case = load_case(case)
        except CaseError as exc:
            folder = Path(case)
            return CaseResult(folder.name, folder, error=str(exc))
    suffix = unique_suffix()
    result = CaseResult(case.name, case.folder, suffix=suffix)
    work = Path(tempfile.mkdtemp(prefix=f"firelake-case-{case.name}-", dir=workdir))
    result.workdir = work
    topics: list[str] = []
    process: subprocess.Popen[bytes] | None = None
    log_path = work / "up.log"
    phase = time.monotonic()

    def lap(name: str) -> None:
        nonlocal phase
        now = time.monotonic()
        result.phases[name] = now - phase
        phase = now

    try:
        raw = case_config(case, bootstrap, work / "lake", suffix, partitions)
        config_path = write_config(work / "firelake.toml", raw)
        config = parse_config(raw, source=str(config_path), base_dir=str(work), environ={})
        inputs = []
        for stream, path in case.inputs.items():
            topic = f"{stream}-{suffix}"
            if topic not in config.streams:
                declared = ", ".join(s.removesuffix(f"-{suffix}") for s in config.streams)
                raise CaseError(f"{path}: no stream {stream!r} in the case's config ({declared})")
            with path.open("rb") as lines:
                events = read_events(lines, str(path), case.start_ms)
            spec = config.streams[topic]
            inputs.append(StreamInput(topic, events, spec.partitions, spec.envelope == "batch"))
            result.events += len(events)
        topics = list(config.streams)
        ensure_topics(config, bootstrap)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "firelake.cli", "up", "--no-serving"),
                    *("--config", str(config_path)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(bootstrap),
                cwd=work,
            )
        started = datetime.now(UTC)
        lap("start")
        inject_sync(bootstrap, inputs, speed)
        lap("replay")

        def alive() -> str | None:
            assert process is not None
            if process.poll() is not None:
                return f"firelake up exited with {process.returncode}:\n{_tail(log_path)}"
            return None

        wait_quiescent(bootstrap, _groups(config), case.timeout_seconds, alive)
        lap("quiesce")
        until = max((e.timestamp for i in inputs for e in i.events), default=0)
        _check(case, config, result, update, started, suffix, until)
        lap("queries")
        result.passed = all(o.passed for o in result.outcomes)
    except (CaseError, QuiescenceTimeout, QueryError, ValueError, OSError) as exc:
        result.error = str(exc)
        if process is not None and not isinstance(exc, CaseError):
            result.error += f"\n--- firelake up log (tail) ---\n{_tail(log_path)}"
    finally:
        if process is not None:
            problem = _stop(process)
            if problem and not result.error:
                result.error, result.passed = problem, False
            lap("stop")
        if topics:
            try:
                delete_topics(bootstrap, sorted({*topics, *_leftovers(bootstrap, suffix)}))
                delete_groups(bootstrap, [suffix])
            except Exception as exc:  # cleanup is best effort; the run's verdict stands
                result.error = result.error or f"cleanup: {exc}"
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
            result.workdir = None
    result.seconds = time.monotonic() - began
    return result


def run_cases(
    folders: Iterable[str | Path],
    bootstrap: str,
    *,
    update: bool = False,
    speed: float | None = None,
    partitions: int | None = None,
    keep: bool = False,
    echo: Callable[[str], None] = print,
) -> list[CaseResult]:
    """Run cases one after another, printing each one's report as it finishes."""
    results = []
    for folder in folders:
        result = run_case(
            folder, bootstrap, update=update, speed=speed, partitions=partitions, keep=keep
        )
        echo(result.report())
        results.append(result)
    # Groups whose static members outlived their case: gone once their sessions time out.
    delete_groups(bootstrap, [r.suffix for r in results if r.suffix], wait_s=10.0)
    return results


def exit_code(results: Sequence[CaseResult]) -> int:
    """0 when every case passed, else 1."""
    return 0 if results and all(r.passed for r in results) else 1

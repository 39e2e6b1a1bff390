"""The pytest plugin (entry point ``pytest11``: ``firelake``): replay test cases in pytest.

Installed with Firelake, it gives every pytest run:

- **Collection of case folders**: each ``case.toml`` pytest finds (under its paths) is one
  test item that runs the case (:func:`cases.runner.run_case`) and fails with the case's
  report — the diff of missing and unexpected rows.
- **The ``firelake_case`` fixture**: ``firelake_case.run(folder)`` runs a case and returns
  its :class:`~cases.runner.CaseResult`; ``firelake_case.check(folder)`` also asserts it
  passed; ``firelake_case.build(folder, inputs=…, expected=…)`` writes a case inline.
- **``firelake_bootstrap``**: the broker they use: ``FIRELAKE_KAFKA_BOOTSTRAP``, else a
  local broker started once for the whole run (Java 17 and Maven, like ``make test``). A
  suite with its own broker fixture overrides ``firelake_bootstrap`` to share it.

Options: ``--firelake-update`` rewrites expected files from actual results,
``--firelake-speed X`` replays at X times the recorded pace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cases.case import CASE_FILE, DLQ_FILE
from cases.records import RecordedEvent, write_events
from firelake.testing import to_toml

if TYPE_CHECKING:  # the runner (DuckDB, Kafka clients) loads only when a case runs
    from cases.runner import CaseResult

__all__ = ["CaseFile", "CaseItem", "CaseRunner", "session_bootstrap"]

_BROKER = pytest.StashKey[Any]()
#: (bootstrap, suffix) of every case run in this session, for the final group sweep.
_RUNS = pytest.StashKey[list[tuple[str, str]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("firelake", "Firelake replay test cases")
    group.addoption(
        "--firelake-update",
        action="store_true",
        help="rewrite the cases' expected files from the actual results",
    )
    group.addoption(
        "--firelake-speed",
        type=float,
        default=None,
        help="replay at this multiple of the recorded pace (default: as fast as possible)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "firelake_case: a Firelake stream replay test case")


def _sweep(config: pytest.Config) -> None:
    """Delete the consumer groups the cases run so far left (static members time out).

    Housekeeping: a broker that is gone or slow is reported, never a failure of a session
    whose tests passed.
    """
    runs = config.stash.get(_RUNS, [])
    config.stash[_RUNS] = []
    if not runs:
        return
    from cases.runner import delete_groups

    for bootstrap in {b for b, _ in runs}:
        try:
            delete_groups(bootstrap, [s for b, s in runs if b == bootstrap], wait_s=10.0)
        except Exception as exc:
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(
                    f"firelake: consumer groups of replay cases left on {bootstrap}: {exc!r}",
                    yellow=True,
                )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Sweep what case items left; their broker (:func:`session_bootstrap`) stops later."""
    _sweep(session.config)


def _ran(config: pytest.Config, bootstrap: str, result: CaseResult) -> CaseResult:
    if result.suffix:
        config.stash.setdefault(_RUNS, []).append((bootstrap, result.suffix))
    return result


def session_bootstrap(config: pytest.Config) -> str:
    """``FIRELAKE_KAFKA_BOOTSTRAP``, else a local broker started once for this run."""
    external = os.environ.get("FIRELAKE_KAFKA_BOOTSTRAP")
    if external:
        return external
    broker = config.stash.get(_BROKER, None)
    if broker is None:
        import tempfile

        from firelake.broker import LocalBroker, free_port

        data = Path(tempfile.mkdtemp(prefix="firelake-pytest-kafka-"))
        broker = LocalBroker(data_dir=data, port=free_port(), controller_port=0)
        broker.start(timeout=180)
        config.stash[_BROKER] = broker
        config.add_cleanup(broker.stop)
    return str(broker.bootstrap)


class CaseRunner:
    """What the ``firelake_case`` fixture gives a test."""

    def __init__(
        self,
        bootstrap: str,
        update: bool = False,
        speed: float | None = None,
        config: pytest.Config | None = None,
    ):
        self.bootstrap = bootstrap
        self.update = update
        self.speed = speed
        self.config = config

    def run(self, folder: str | Path, **options: Any) -> CaseResult:
        """Run a case folder; options as :func:`cases.runner.run_case` takes them."""
        from cases.runner import run_case

        options.setdefault("update", self.update)
        options.setdefault("speed", self.speed)
        result = run_case(folder, self.bootstrap, **options)
        return _ran(self.config, self.bootstrap, result) if self.config else result

    def check(self, folder: str | Path, **options: Any) -> CaseResult:
        """Run a case folder and fail the test with its report unless it passed."""
        result = self.run(folder, **options)
        if not result.passed:
            pytest.fail(result.report(), pytrace=False)
        return result

    @staticmethod
    def build(
        folder: str | Path,
        inputs: Mapping[str, Sequence[RecordedEvent | Mapping[str, Any]]],
        expected: Mapping[str, tuple[str, Sequence[Mapping[str, Any]] | None]] | None = None,
        dlq: Mapping[str, int] | None = None,
        config: Mapping[str, Any] | None = None,
        extends: str | Path | None = None,
    ) -> Path:
        """Write a case folder: ``inputs`` (stream → events, as RecordedEvent or as
        ``{"value": …}`` lines), ``expected`` (name → (SQL, rows or None)), ``dlq``
        (error type → count), ``config`` (the tables of ``case.toml``) and ``extends``
        (a base configuration file)."""
        folder = Path(folder)
        (folder / "input").mkdir(parents=True, exist_ok=True)
        (folder / "expected").mkdir(exist_ok=True)
        data: dict[str, Any] = {"case": {"extends": str(extends) if extends else ""}}
        data.update(config or {})
        (folder / CASE_FILE).write_text(to_toml(data), encoding="utf-8")
        for stream, events in inputs.items():
            with (folder / "input" / f"{stream}.jsonl").open("wb") as out:
                for event in events:
                    if isinstance(event, RecordedEvent):
                        out.writelines(write_events([event]))
                    else:
                        out.write(json.dumps(dict(event)).encode() + b"\n")
        for name, (sql, rows) in (expected or {}).items():
            (folder / "expected" / f"{name}.sql").write_text(sql + "\n", encoding="utf-8")
            if rows is not None:
                (folder / "expected" / f"{name}.json").write_text(
                    json.dumps(list(rows), indent=1) + "\n", encoding="utf-8"
                )
        if dlq is not None:
            (folder / "expected" / DLQ_FILE).write_text(json.dumps(dict(dlq)) + "\n", "utf-8")
        return folder


@pytest.fixture(scope="session")
def firelake_bootstrap(pytestconfig: pytest.Config) -> str:
    """The broker replay cases run against (see the module docstring)."""
    return session_bootstrap(pytestconfig)


@pytest.fixture(scope="session")
def _firelake_sweep(pytestconfig: pytest.Config, firelake_bootstrap: str) -> Iterator[None]:
    """Sweeps the groups of ``firelake_case`` runs while their broker still runs: a suite's
    own broker fixture behind ``firelake_bootstrap`` stops with the session's fixtures,
    before any session-finish hook."""
    yield
    _sweep(pytestconfig)


@pytest.fixture
def firelake_case(
    pytestconfig: pytest.Config, firelake_bootstrap: str, _firelake_sweep: None
) -> CaseRunner:
    """Run (or build) replay test cases on the run's broker."""
    return CaseRunner(
        firelake_bootstrap,
        bool(pytestconfig.getoption("firelake_update")),
        pytestconfig.getoption("firelake_speed"),
        pytestconfig,
    )


class CaseItem(pytest.Item):
    """One case folder, run as one test."""

    def runtest(self) -> None:
        from cases.runner import run_case

        config = self.config
        bootstrap = session_bootstrap(config)
        result = run_case(
            self.path.parent,
            bootstrap,
            update=bool(config.getoption("firelake_update")),
            speed=config.getoption("firelake_speed"),
        )
        _ran(config, bootstrap, result)
        self.user_properties.append(("seconds", f"{result.seconds:.2f}"))
        if not result.passed:
            raise CaseFailure(result.report())

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, CaseFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"firelake case {self.name}"


class CaseFailure(AssertionError):
    """A case that ran and did not pass; its message is the case's report."""


class CaseFile(pytest.File):
    """A ``case.toml``: collects its folder as one :class:`CaseItem`."""

    def collect(self) -> Iterator[CaseItem]:
        item = CaseItem.from_parent(self, name=self.path.parent.name)
        item.add_marker("firelake_case")
        yield item


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> CaseFile | None:
    if file_path.name == CASE_FILE:
        return CaseFile.from_parent(parent, path=file_path)
    return None

"""A replay test case: a folder with the config it runs, its input and its expectations.

::

    my-case/
      case.toml               [case] settings; every other table overrides the base config
      input/<stream>.jsonl    recorded events per stream (cases.records), replayed in order
      expected/<name>.sql     a query over the lake ...
      expected/<name>.json    ... and its rows (a JSON array of objects), or <name>.csv
      expected/dlq.json       optional: {"<error_type>": count, ...} over the DLQ tables

``case.toml``'s ``[case]`` table: ``description``; ``extends``, the base configuration
relative to the folder (default: the nearest ``firelake.toml`` above the case, else none —
the file alone is the configuration; ``""`` says none explicitly); ``float_tolerance``;
``timeout_seconds`` (the most a run waits for quiescence); ``start_time`` (the timestamp
of input lines without one). Every other table is merged key by key over the base, so a
case that tests one route change holds just ``[routers.clickstream.routes]``.

:func:`case_config` turns a case into the configuration one run uses: streams, routers,
sinks and windows renamed with a unique suffix (own topics and consumer groups), the
broker given, a lake of its own, every sink writing there and flushing as soon as it has
caught up (``flush_when_caught_up``: the lake is complete at quiescence, without waiting
out ``max_seconds``), windows without an idle timeout (wall-clock silence would close
windows by timing), router metrics off, any free ingest port, and optionally every
stream's partition count replaced (the same case on more partitions must answer the same).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from firelake.testing import example_dict, free_port

__all__ = [
    "CASE_FILE",
    "Case",
    "CaseError",
    "Expectation",
    "case_config",
    "discover",
    "load_case",
    "merge",
    "read_rows",
    "write_rows",
]

#: The file that makes a folder a case.
CASE_FILE = "case.toml"
#: Expected DLQ reasons and counts (optional).
DLQ_FILE = "dlq.json"
DEFAULT_START = "2026-01-01T00:00:00Z"


class CaseError(ValueError):
    """A case folder that cannot run as written: names the file and what is wrong."""


@dataclass(frozen=True)
class Expectation:
    """One query of a case and where its expected rows live (``rows`` None: no file yet)."""

    name: str
    sql: str
    path: Path
    rows: list[dict[str, Any]] | None


@dataclass
class Case:
    """A loaded case folder."""

    name: str
    folder: Path
    config: dict[str, Any]
    inputs: dict[str, Path]
    expectations: list[Expectation]
    dlq: dict[str, int] | None = None
    description: str = ""
    float_tolerance: float = 1e-9
    timeout_seconds: float = 120.0
    start_ms: int = 0
    base: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def dlq_path(self) -> Path:
        return self.folder / "expected" / DLQ_FILE


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``: tables key by key, other values replace."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _nearest_config(folder: Path) -> Path | None:
    for parent in folder.resolve().parents:
        candidate = parent / "firelake.toml"
        if candidate.is_file():
            return candidate
    return None


def _millis(text: str, where: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CaseError(f"{where}: {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Expected rows from a JSON array of objects or a CSV file with a header line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        return [dict(row) for row in csv.DictReader(io.StringIO(text))]
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CaseError(f"{path}: not JSON ({exc})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CaseError(f"{path}: expected rows are a JSON array of objects")
    return rows


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write rows as the file's format wants (``--update``)."""
    if path.suffix == ".csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: ("" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else v)
                    for k, v in row.items()
                }
            )
        path.write_text(out.getvalue(), encoding="utf-8")
    else:
        path.write_text(json.dumps(list(rows), indent=1, ensure_ascii=False) + "\n", "utf-8")


def load_case(folder: str | Path) -> Case:
    """Read a case folder; :class:`CaseError` names the file and the problem."""
    folder = Path(folder)
    case_file = folder / CASE_FILE
    if not case_file.is_file():
        raise CaseError(f"{folder}: not a case (no {CASE_FILE})")
    try:
        data = tomllib.loads(case_file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CaseError(f"{case_file}: {exc}") from None
    settings = data.pop("case", {})
    if not isinstance(settings, dict):
        raise CaseError(f"{case_file}: [case] must be a table")
    known = {"description", "extends", "float_tolerance", "timeout_seconds", "start_time"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise CaseError(
            f"{case_file}: unknown [case] setting(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    if "extends" in settings:
        extends = settings["extends"]
        base = (folder / extends).resolve() if extends else None
        if base is not None and not base.is_file():
            raise CaseError(f"{case_file}: [case] extends {extends!r}: no such file")
    else:
        base = _nearest_config(folder)
    config = data
    if base is not None:
        config = merge(tomllib.loads(base.read_text(encoding="utf-8")), data)
    inputs = {p.stem: p for p in sorted((folder / "input").glob("*.jsonl"))}
    if not inputs:
        raise CaseError(f"{folder}: no input/<stream>.jsonl")
    expected_dir = folder / "expected"
    expectations = []
    for sql_path in sorted(expected_dir.glob("*.sql")):
        candidates = (sql_path.with_suffix(".json"), sql_path.with_suffix(".csv"))
        rows_path = next((p for p in candidates if p.exists()), candidates[0])
        rows = read_rows(rows_path) if rows_path.exists() else None
        if sql_path.stem == Path(DLQ_FILE).stem:
            raise CaseError(f"{sql_path}: the name 'dlq' is reserved for expected/{DLQ_FILE}")
        sql = sql_path.read_text(encoding="utf-8").strip()
        if not sql:
            raise CaseError(f"{sql_path}: empty SQL")
        expectations.append(Expectation(sql_path.stem, sql, rows_path, rows))
    dlq = None
    dlq_path = expected_dir / DLQ_FILE
    if dlq_path.exists():
        try:
            dlq = json.loads(dlq_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CaseError(f"{dlq_path}: not JSON ({exc})") from None
        if not isinstance(dlq, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in dlq.values()
        ):
            raise CaseError(f'{dlq_path}: write {{"<error_type>": count, ...}}')
    if not expectations and dlq is None:
        raise CaseError(f"{folder}: no expected/*.sql and no expected/{DLQ_FILE}")
    try:
        tolerance = float(settings.get("float_tolerance", 1e-9))
        timeout = float(settings.get("timeout_seconds", 120.0))
    except (TypeError, ValueError):
        raise CaseError(f"{case_file}: float_tolerance and timeout_seconds are numbers") from None
    return Case(
        name=folder.name,
        folder=folder,
        config=config,
        inputs=inputs,
        expectations=expectations,
        dlq=dlq,
        description=str(settings.get("description", "")),
        float_tolerance=tolerance,
        timeout_seconds=timeout,
        start_ms=_millis(str(settings.get("start_time", DEFAULT_START)), f"{case_file}"),
        base=base,
        settings=settings,
    )


def discover(paths: Iterable[str | Path], pattern: str | None = None) -> list[Path]:
    """Case folders under the given paths (a case folder itself, or any folder above
    cases), sorted; ``pattern`` keeps those whose name matches (a substring or a glob)."""
    found: dict[Path, None] = {}
    for path in paths:
        path = Path(path)
        if (path / CASE_FILE).is_file():
            found[path] = None
        elif path.is_dir():
            for case_file in sorted(path.rglob(CASE_FILE)):
                found[case_file.parent] = None
        else:
            raise CaseError(f"{path}: no such case folder")
    folders = sorted(found)
    if pattern:
        folders = [
            f for f in folders if pattern in f.name or fnmatch(f.name, pattern) or pattern in str(f)
        ]
    return folders


def case_config(
    case: Case,
    bootstrap: str,
    lake_root: str | Path,
    suffix: str,
    partitions: int | None = None,
) -> dict[str, Any]:
    """The configuration one run of ``case`` uses (see the module docstring)."""
    data = copy.deepcopy(case.config)
    for stream in data.get("streams", {}).values():
        # Replayed messages keep their recorded timestamps: retention must not reap them.
        stream["retention_hours"] = 87_600
        if partitions is not None:
            stream["partitions"] = partitions
    for sink in data.get("sinks", {}).values():
        sink["flush_when_caught_up"] = True
        sink["destination"] = ""
    for router in data.get("routers", {}).values():
        router["metrics_port"] = 0
    for window in data.get("windows", {}).values():
        # Idleness is wall-clock silence, meaningless in a replay: the slowest partition
        # holds the watermark, so the same windows close on every run.
        window["idle_timeout_seconds"] = 0
    ingest = dict(data.get("ingest", {}))
    ingest["port"] = free_port()
    data["ingest"] = ingest
    return example_dict(bootstrap, lake_root, suffix, data=data)

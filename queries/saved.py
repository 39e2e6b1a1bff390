"""Saved queries and views as files (Athena named queries and views).

A saved query is one ``<name>.sql`` file in a folder of the project (``[query] saved_dir``,
default ``saved_queries/`` next to the config file; the shipped examples carry their own).
It is plain SQL that DuckDB runs as is, with a header of ``--`` comment lines — so it can
be opened and run in any SQL tool — and named parameters written ``$name``::

    -- description: Top content by plays on one day
    -- param: day date = 2026-11-28        Day to rank (UTC)
    -- param: top int = 10                 How many titles
    -- chart: bar content_id plays
    SELECT content_id, count(*) AS plays
    FROM playback
    WHERE event_type = 'start' AND dt = $day
    GROUP BY content_id ORDER BY plays DESC LIMIT $top

Header keys, one per line, before the first line of SQL:

- ``name`` (optional; default the file name without ``.sql``) — letters, digits, ``_``.
- ``description`` — one line shown by ``firelake query --list``, the HTTP API, Athena's
  ``ListNamedQueries`` and the dashboard.
- ``param: <name> <type> [= default]  [description]`` — one per parameter; ``type`` is
  ``string``, ``int``, ``float``, ``bool``, ``date`` or ``timestamp``. A parameter without
  a default is required; a date's default may be ``today`` (UTC). Values given as text
  (``--param day=2026-11-29``, a query string) are converted to the type, so
  ``dt = $day`` compares as a date.
- ``view: true`` — the file is a view: every query of the engine sees a view of that name
  (no parameters allowed).
- ``chart: <kind> <x> <y> [<series>]`` — how the dashboard draws the result (``bar``,
  ``line``, or ``table``).

Every SQL parameter must be declared and every declared one used; a file that breaks a
rule is refused with its path, line and reason (:class:`SavedQueryError`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb

from firelake.config import FirelakeConfig

__all__ = [
    "CHART_KINDS",
    "PARAM_TYPES",
    "Chart",
    "Parameter",
    "SavedQuery",
    "SavedQueryError",
    "bind_parameters",
    "load_saved",
    "parse_saved",
    "saved_dir",
]

#: Parameter types and how text becomes each.
PARAM_TYPES = ("string", "int", "float", "bool", "date", "timestamp")
#: How the dashboard may draw a saved query.
CHART_KINDS = ("bar", "line", "table")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,100}$")
_HEADER_RE = re.compile(r"^--\s*([A-Za-z_]+)\s*:\s*(.*?)\s*$")
_PARAM_RE = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s+(?P<type>[a-z]+)"
    r"(?:\s*=\s*(?P<default>\S+))?(?:\s+(?P<doc>.*))?$"
)


class SavedQueryError(ValueError):
    """A saved query file that cannot be used, or parameters that do not fit it."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Parameter:
    """A declared ``$name`` parameter: its type, default (text) and description."""

    name: str
    type: str
    default: str | None = None
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is None

    def convert(self, value: Any) -> Any:
        """A value (text from a command line or URL, or already typed) as this type."""
        if not isinstance(value, str):
            if self.type == "bool" and isinstance(value, bool):
                return value
            if self.type in ("int", "float") and isinstance(value, (int, float)):
                if not isinstance(value, bool):
                    return int(value) if self.type == "int" else float(value)
            if self.type == "string":
                return str(value)
            raise ValueError(f"expected {self.type}, got {value!r}")
        text = value.strip()
        if self.type == "string":
            return value
        if self.type == "int":
            return int(text)
        if self.type == "float":
            return float(text)
        if self.type == "bool":
            lowered = text.lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError(f"expected true or false, got {value!r}")
        if self.type == "date":
            if text.lower() == "today":
                return datetime.now(UTC).date()
            return date.fromisoformat(text)
        return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Chart:
    """How the dashboard draws a result: a kind and the columns it plots."""

    kind: str
    x: str = ""
    y: str = ""
    series: str = ""


@dataclass(frozen=True)
class SavedQuery:
    """One saved query or view, as read from its file."""

    name: str
    description: str
    sql: str
    parameters: tuple[Parameter, ...] = ()
    view: bool = False
    chart: Chart | None = None
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The query as JSON data (the HTTP API)."""
        return {
            "name": self.name,
            "description": self.description,
            "sql": self.sql,
            "view": self.view,
            "parameters": [
                {
                    "name": p.name,
                    "type": p.type,
                    "default": p.default,
                    "required": p.required,
                    "description": p.description,
                }
                for p in self.parameters
            ],
            "chart": None if self.chart is None else vars(self.chart),
        }


def _parse_param(where: str, text: str) -> Parameter:
    match = _PARAM_RE.match(text)
    if not match:
        raise SavedQueryError(where, f"param {text!r}: write 'param: <name> <type> [= default]'")
    kind = match.group("type")
    if kind not in PARAM_TYPES:
        raise SavedQueryError(
            where, f"param {match.group('name')}: unknown type {kind!r} ({', '.join(PARAM_TYPES)})"
        )
    parameter = Parameter(
        match.group("name"), kind, match.group("default"), (match.group("doc") or "").strip()
    )
    if parameter.default is not None:
        try:
            parameter.convert(parameter.default)
        except ValueError as exc:
            raise SavedQueryError(where, f"param {parameter.name}: default {exc}") from None
    return parameter


def _parse_chart(where: str, text: str) -> Chart:
    parts = text.split()
    if not parts or parts[0] not in CHART_KINDS:
        raise SavedQueryError(where, f"chart {text!r}: kind is one of {', '.join(CHART_KINDS)}")
    if parts[0] != "table" and len(parts) < 3:
        raise SavedQueryError(where, f"chart {text!r}: write 'chart: {parts[0]} <x> <y> [series]'")
    x, y, series = [*parts[1:], "", "", ""][:3]
    return Chart(parts[0], x, y, series)


def parse_saved(text: str, path: Path | str) -> SavedQuery:
    """A saved query from its file's text; :class:`SavedQueryError` names what is wrong."""
    path = Path(path)
    name = path.stem
    description = ""
    parameters: list[Parameter] = []
    view = False
    chart: Chart | None = None
    lines = text.splitlines()
    body_start = len(lines)
    for number, line in enumerate(lines, 1):
        where = f"{path}:{number}"
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            body_start = number - 1
            break
        match = _HEADER_RE.match(stripped)
        if not match:
            continue  # an ordinary comment
        key, value = match.group(1).lower(), match.group(2)
        if key == "name":
            name = value
        elif key == "description":
            description = value
        elif key == "param":
            parameter = _parse_param(where, value)
            if any(p.name == parameter.name for p in parameters):
                raise SavedQueryError(where, f"param {parameter.name} declared twice")
            parameters.append(parameter)
        elif key == "view":
            view = value.lower() in ("true", "yes", "1")
        elif key == "chart":
            chart = _parse_chart(where, value)
        else:
            raise SavedQueryError(
                where, f"unknown header key {key!r} (name, description, param, view, chart)"
            )
    if not _NAME_RE.match(name):
        raise SavedQueryError(str(path), f"name {name!r}: letters, digits and _ only")
    sql = "\n".join(lines[body_start:]).strip()
    if not sql:
        raise SavedQueryError(str(path), "no SQL after the header")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SavedQueryError(str(path), f"SQL does not parse: {exc}") from None
    used = set().union(*(s.named_parameters for s in statements))
    declared = {p.name for p in parameters}
    if used - declared:
        missing = ", ".join(sorted(used - declared))
        raise SavedQueryError(str(path), f"parameter(s) {missing} used but not declared")
    if declared - used:
        unused = ", ".join(sorted(declared - used))
        raise SavedQueryError(str(path), f"parameter(s) {unused} declared but not used")
    if view and parameters:
        raise SavedQueryError(str(path), "a view cannot take parameters")
    if view and len(statements) != 1:
        raise SavedQueryError(str(path), "a view is one SELECT statement")
    return SavedQuery(name, description, sql, tuple(parameters), view, chart, path)


def load_saved(
    folders: Iterable[Path], errors: dict[str, str] | None = None
) -> dict[str, SavedQuery]:
    """Every ``*.sql`` of the folders, by name; a later folder cannot redefine a name.

    A broken file raises :class:`SavedQueryError`, or, when ``errors`` is given (a long-
    running service must not die of one bad file), is left out and its reason put there
    by file path.
    """
    found: dict[str, SavedQuery] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.sql")):
            try:
                query = parse_saved(path.read_text(encoding="utf-8"), path)
                if query.name in found:
                    raise SavedQueryError(
                        str(path), f"name {query.name!r} is also used by {found[query.name].path}"
                    )
            except (SavedQueryError, OSError, UnicodeDecodeError) as exc:
                if errors is None:
                    raise
                errors[str(path)] = str(exc)
                continue
            found[query.name] = query
    return found


def saved_dir(config: FirelakeConfig) -> Path:
    """The configured saved-queries folder (relative paths: from the config file)."""
    folder = Path(config.query.saved_dir).expanduser()
    if folder.is_absolute():
        return folder
    # The file's folder, not base_dir: a shipped example keeps its data under the working
    # folder but its saved queries beside its configuration.
    source = Path(config.source)
    return (source.parent if source.is_file() else Path(config.base_dir)) / folder


def bind_parameters(query: SavedQuery, values: Mapping[str, Any]) -> dict[str, Any]:
    """The typed values of a saved query's parameters: given ones converted, defaults
    filled in; unknown, missing or malformed ones refused by name."""
    declared = {p.name: p for p in query.parameters}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise SavedQueryError(
            query.name,
            f"unknown parameter(s) {', '.join(unknown)} "
            f"(declared: {', '.join(declared) or 'none'})",
        )
    bound: dict[str, Any] = {}
    for name, parameter in declared.items():
        raw = values.get(name, parameter.default)
        if raw is None:
            raise SavedQueryError(query.name, f"parameter {name} ({parameter.type}) is required")
        try:
            bound[name] = parameter.convert(raw)
        except ValueError as exc:
            raise SavedQueryError(query.name, f"parameter {name}: {exc}") from None
    return bound

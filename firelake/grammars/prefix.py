"""Firehose prefix templates: the grammar, and the folder of one moment.

A template is literal text with expressions, as in Firehose's ``Prefix`` and
``ErrorOutputPrefix``::

    product=!{partitionKeyFromQuery:product}/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/

- ``!{timestamp:<pattern>}`` — the row's time (the schema's time field, else the Kafka
  timestamp, i.e. arrival time as on Firehose) in UTC, formatted with the Java pattern
  letters Firehose uses: ``yyyy yy MM dd HH mm ss``; any other letter is refused.
- ``!{partitionKeyFromQuery:<column>}`` — the value of a top-level column (Firehose's jq
  query ``.column``); a null or empty value becomes ``__HIVE_DEFAULT_PARTITION__`` and a
  ``/`` in a value is written ``%2F``, so a value never adds or escapes a folder.
- ``!{firehose:error-output-type}`` — the error category (``format-conversion-failed``).
- ``!{firehose:random-string}`` is refused: file names here are deterministic, that is
  what makes a rewritten flush replace its files instead of duplicating them.
- ``!{table}`` — Firelake's own: the sink's table name.

The configuration checks templates with :func:`parse_prefix`, the Firehose API maps
delivery streams onto them, and the sinks render them for whole Arrow tables at once
(``sinks.prefix``). A leaf: standard library only.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

__all__ = [
    "DEFAULT_PARTITION",
    "Prefix",
    "PrefixError",
    "PrefixPart",
    "PrefixPartKind",
    "parse_prefix",
    "render",
    "safe_folder_value",
]


#: The folder value of a null or empty partition key (Hive's, which DuckDB reads as NULL).
DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"

_EXPRESSION = re.compile(r"!\{([^{}]*)\}")
_JAVA_TOKENS = {
    "yyyy": "%Y",
    "yy": "%y",
    "MM": "%m",
    "dd": "%d",
    "HH": "%H",
    "mm": "%M",
    "ss": "%S",
}
_JAVA_RUN = re.compile(r"([A-Za-z])\1*")
_COLUMN = re.compile(r"^\.?([A-Za-z_][A-Za-z0-9_]{0,100})$")


#: What a piece of a template is.
PrefixPartKind = Literal["literal", "timestamp", "field", "error_type", "table"]


class PrefixError(ValueError):
    """A template that cannot be used, with the reason."""


@dataclass(frozen=True, slots=True)
class PrefixPart:
    """One piece of a template: literal text or one expression."""

    kind: PrefixPartKind
    value: str


@dataclass(frozen=True, slots=True)
class Prefix:
    """A parsed template."""

    text: str
    parts: tuple[PrefixPart, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        """The columns its ``partitionKeyFromQuery`` expressions read."""
        return tuple(p.value for p in self.parts if p.kind == "field")

    @property
    def uses_time(self) -> bool:
        return any(p.kind == "timestamp" for p in self.parts)


def _strftime_pattern(java: str) -> str:
    out = []
    position = 0
    for match in _JAVA_RUN.finditer(java):
        out.append(java[position : match.start()].replace("%", "%%"))
        token = match.group(0)
        if token not in _JAVA_TOKENS:
            raise PrefixError(
                f"timestamp pattern {java!r}: {token!r} is not one of {', '.join(_JAVA_TOKENS)}"
            )
        out.append(_JAVA_TOKENS[token])
        position = match.end()
    out.append(java[position:].replace("%", "%%"))
    return "".join(out)


@functools.lru_cache(maxsize=256)
def parse_prefix(text: str) -> Prefix:
    """Parse and check a template; raises :class:`PrefixError` naming what is wrong."""
    if text.startswith("/") or "//" in text:
        raise PrefixError(f"{text!r}: no leading '/' and no empty folder")
    if text and not text.endswith("/"):
        raise PrefixError(f"{text!r}: a prefix names folders, so it ends with '/'")
    parts: list[PrefixPart] = []
    position = 0
    for match in _EXPRESSION.finditer(text):
        if match.start() > position:
            parts.append(PrefixPart("literal", text[position : match.start()]))
        namespace, _, argument = match.group(1).partition(":")
        namespace, argument = namespace.strip(), argument.strip()
        if namespace == "timestamp":
            parts.append(PrefixPart("timestamp", _strftime_pattern(argument)))
        elif namespace == "partitionKeyFromQuery":
            column = _COLUMN.match(argument)
            if column is None:
                raise PrefixError(f"!{{{match.group(1)}}}: a top-level column name is needed")
            parts.append(PrefixPart("field", column.group(1)))
        elif namespace == "firehose" and argument == "error-output-type":
            parts.append(PrefixPart("error_type", ""))
        elif namespace == "table" and not argument:
            parts.append(PrefixPart("table", ""))
        else:
            raise PrefixError(
                f"!{{{match.group(1)}}} is not supported (timestamp, partitionKeyFromQuery, "
                "firehose:error-output-type, table)"
            )
        position = match.end()
    if position < len(text):
        parts.append(PrefixPart("literal", text[position:]))
    for part in parts:
        if part.kind == "literal" and ("!{" in part.value or ".." in part.value.split("/")):
            raise PrefixError(f"{text!r}: unbalanced '!{{' or a '..' folder")
    return Prefix(text, tuple(parts))


def safe_folder_value(value: str) -> str:
    """A field value as one folder name: never empty, never a path of its own."""
    if not value:
        return DEFAULT_PARTITION
    value = value.replace("/", "%2F")
    return value.replace(".", "%2E") if value in (".", "..") else value


def render(
    prefix: Prefix,
    *,
    when: datetime,
    table: str = "",
    error_type: str = "",
    keys: Mapping[str, object] | None = None,
) -> str:
    """The folder of one moment (and field values): for errors, archives and tests."""
    when = when.astimezone(UTC)
    out = []
    for part in prefix.parts:
        if part.kind == "literal":
            out.append(part.value)
        elif part.kind == "timestamp":
            out.append(when.strftime(part.value))
        elif part.kind == "field":
            value = (keys or {}).get(part.value)
            out.append(safe_folder_value("" if value is None else str(value)))
        elif part.kind == "error_type":
            out.append(error_type)
        else:
            out.append(table)
    return "".join(out)

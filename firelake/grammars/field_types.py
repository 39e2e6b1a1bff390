"""Column types: the grammar every layer shares (config, router validation, sink conversion,
the Firehose/Glue mapping).

A type is written as text in a schema (``string``, ``decimal(10,2)``, ``list<string>``,
``struct<a:int,b:list<string>>``, ``map<string,int>``) and parsed once, into a
:class:`FieldType`, when the configuration is read. A leaf: standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "COLUMN_NAME_RE",
    "FIELD_TYPES",
    "SCALAR_TYPES",
    "FieldType",
    "parse_field_type",
]

#: Column types a schema may declare. The last four take parameters, written in a TOML
#: string as ``decimal(10,2)``, ``list<string>``, ``struct<a:int,b:list<string>>`` and
#: ``map<string,int>`` (see :func:`parse_field_type`); timestamps are µs UTC, dates days.
FIELD_TYPES = (
    "string",
    "int",
    "float",
    "bool",
    "timestamp",
    "date",
    "decimal",
    "list",
    "struct",
    "map",
)
#: Parameterless column types (map keys must be one of these).
SCALAR_TYPES = FIELD_TYPES[:6]

#: A column, struct field or lake table name: what SQL engines take unquoted.
COLUMN_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,100}$")


@dataclass(frozen=True, eq=False)
class FieldType:
    """A parsed column type: its kind and, for the parametric kinds, what it holds.

    ``params`` is ``(precision, scale)`` for decimal; ``items`` the element type of a list,
    the ``(key, value)`` types of a map, the ``(name, type)`` fields of a struct.
    """

    kind: str
    params: tuple[int, ...] = ()
    items: tuple[FieldType, ...] = ()
    names: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        # A type equals its canonical text too: ``spec.type == "timestamp"`` reads as the
        # schema file does.
        if isinstance(other, str):
            return str(self) == other
        if isinstance(other, FieldType):
            return str(self) == str(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))

    def __str__(self) -> str:
        if self.kind == "decimal":
            return f"decimal({self.params[0]},{self.params[1]})"
        if self.kind == "list":
            return f"list<{self.items[0]}>"
        if self.kind == "map":
            return f"map<{self.items[0]},{self.items[1]}>"
        if self.kind == "struct":
            inner = ",".join(f"{n}:{t}" for n, t in zip(self.names, self.items, strict=True))
            return f"struct<{inner}>"
        return self.kind


_TYPE_TOKEN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*|\d+|[<>(),:])")


def parse_field_type(text: str) -> FieldType:
    """Parse a column type such as ``map<string,list<decimal(10,2)>>``; ValueError if bad."""
    tokens = []
    position = 0
    stripped = text.rstrip()
    while position < len(stripped):
        match = _TYPE_TOKEN.match(stripped, position)
        if match is None:
            raise ValueError(f"unexpected {stripped[position:]!r}")
        tokens.append(match.group(1))
        position = match.end()
    tokens.append("")
    index = 0

    def take(expected: str | None = None) -> str:
        nonlocal index
        token = tokens[index]
        if expected is not None and token != expected:
            raise ValueError(f"expected {expected!r} at {token or 'the end'!r}")
        index += 1
        return token

    def parse() -> FieldType:
        kind = take().lower()
        if kind in SCALAR_TYPES:
            return FieldType(kind)
        if kind == "decimal":
            take("(")
            precision = take()
            take(",")
            scale = take()
            take(")")
            if not (precision.isdigit() and scale.isdigit()):
                raise ValueError("decimal takes (precision,scale) integers")
            p, s = int(precision), int(scale)
            if not 1 <= p <= 38 or s > p:
                raise ValueError(f"decimal({p},{s}): precision 1-38 and scale <= precision")
            return FieldType("decimal", (p, s))
        if kind == "list":
            take("<")
            item = parse()
            take(">")
            return FieldType("list", items=(item,))
        if kind == "map":
            take("<")
            key = parse()
            take(",")
            value = parse()
            take(">")
            if key.kind not in SCALAR_TYPES:
                raise ValueError(f"map keys must be scalar, got {key}")
            return FieldType("map", items=(key, value))
        if kind == "struct":
            take("<")
            names: list[str] = []
            items: list[FieldType] = []
            while True:
                name = take()
                if not COLUMN_NAME_RE.match(name) or name in names:
                    raise ValueError(f"bad or repeated struct field name {name!r}")
                take(":")
                names.append(name)
                items.append(parse())
                separator = take()
                if separator == ">":
                    break
                if separator != ",":
                    raise ValueError(f"expected ',' or '>' at {separator or 'the end'!r}")
            return FieldType("struct", items=tuple(items), names=tuple(names))
        raise ValueError(f"unknown type {kind!r} (known: {', '.join(FIELD_TYPES)})")

    result = parse()
    if tokens[index]:
        raise ValueError(f"unexpected {tokens[index]!r} after the type")
    return result

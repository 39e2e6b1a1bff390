"""Record format conversion settings: column types, JSON key mapping, unknown fields.

What Firehose's ``DataFormatConversionConfiguration`` holds, for one sink:

- **Types.** Every Firelake column type (``firelake.grammars.field_types``) has an
  Arrow type: string, int64, float64, bool, timestamp[us, UTC], date32, decimal128(p, s),
  list, struct and map, nested freely. ``pyarrow.json`` reads all of them straight from
  JSON except two: dates (read as text, then cast — the cast refuses a bad date, so the
  line is isolated as a conversion error) and maps (JSON objects with free keys, which the
  JSON reader cannot build; they go through the Python pass below, where keys — strings
  in JSON — and timestamp, date and decimal values are converted as the JSON reader
  would: ISO-8601 text, ``YYYY-MM-DD`` text, a number or numeric text never rounded).
- **Key mapping** like the OpenX JSON SerDe: ``case_insensitive`` folds JSON keys to the
  columns' case, ``dots_to_underscores`` reads ``a.b`` as ``a_b``, ``column_to_json_key``
  names the JSON key of a column outright.
- **Unknown fields**: dropped (the default, what the SerDe does), or kept as one JSON text
  column (``unknown_fields = "keep"``) holding the object of every key the schema lacks.
- **No schema**: a sink whose stream declares none infers the columns from the data;
  :func:`unify` widens types across batches (int → float …), and files of one table may
  differ, which DuckDB's ``union_by_name`` reads together.

The fast path parses the joined NDJSON in C. Only when a mapping, unknown-field column or
map column is configured does the *Python pass* (:func:`prepare_lines`) parse each line
with orjson, rename its keys and pull out what the JSON reader cannot build; it rewrites
the line for the C reader and returns the side columns, row-aligned.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import orjson
import pyarrow as pa

from firelake.config import Schema, SinkConfig
from firelake.grammars.field_types import FieldType

__all__ = [
    "ConversionSpec",
    "Prepared",
    "arrow_type",
    "prepare_lines",
    "spec_for",
    "unify",
]


def arrow_type(kind: FieldType, *, for_reading: bool = False) -> pa.DataType:
    """The Arrow type of a column type; ``for_reading`` gives what ``read_json`` parses."""
    if kind.kind == "string":
        return pa.string()
    if kind.kind == "int":
        return pa.int64()
    if kind.kind == "float":
        return pa.float64()
    if kind.kind == "bool":
        return pa.bool_()
    if kind.kind == "timestamp":
        return pa.timestamp("us", tz="UTC")
    if kind.kind == "date":
        return pa.string() if for_reading else pa.date32()
    if kind.kind == "decimal":
        return pa.decimal128(*kind.params)
    if kind.kind == "list":
        return pa.list_(arrow_type(kind.items[0], for_reading=for_reading))
    if kind.kind == "struct":
        return pa.struct(
            [
                pa.field(name, arrow_type(item, for_reading=for_reading))
                for name, item in zip(kind.names, kind.items, strict=True)
            ]
        )
    if kind.kind == "map":
        return pa.map_(arrow_type(kind.items[0]), arrow_type(kind.items[1]))
    raise ValueError(f"no Arrow type for {kind}")  # pragma: no cover - parse refuses


def _has_map(kind: FieldType) -> bool:
    return kind.kind == "map" or any(_has_map(item) for item in kind.items)


def _fold(key: str, case_insensitive: bool, dots: bool) -> str:
    if dots:
        key = key.replace(".", "_")
    return key.lower() if case_insensitive else key


@dataclass(frozen=True)
class ConversionSpec:
    """How one sink turns JSON lines into rows (hashable: it keys parser caches)."""

    schema: Schema | None
    unknown_fields: str = "drop"
    unknown_column: str = "_unknown"
    case_insensitive: bool = False
    dots_to_underscores: bool = False
    column_to_json_key: tuple[tuple[str, str], ...] = ()

    @functools.cached_property
    def target(self) -> pa.Schema | None:
        """The output schema (None: inferred), with the unknown-field column last."""
        if self.schema is None:
            return None
        fields = [pa.field(f.name, arrow_type(f.type)) for f in self.schema.fields]
        if self.unknown_fields == "keep":
            fields.append(pa.field(self.unknown_column, pa.string()))
        return pa.schema(fields)

    @functools.cached_property
    def read_schema(self) -> pa.Schema | None:
        """What ``read_json`` is told to parse: no map columns, dates as text."""
        if self.schema is None:
            return None
        return pa.schema(
            [
                pa.field(f.name, arrow_type(kind, for_reading=True))
                for f in self.schema.fields
                if not _has_map(kind := f.type)
            ]
        )

    @functools.cached_property
    def map_columns(self) -> dict[str, pa.DataType]:
        return {name: arrow_type(kind) for name, kind in self.map_types.items()}

    @functools.cached_property
    def map_types(self) -> dict[str, FieldType]:
        """The columns holding a map anywhere, read by the Python pass, with their types."""
        if self.schema is None:
            return {}
        return {f.name: kind for f in self.schema.fields if _has_map(kind := f.type)}

    @property
    def python_pass(self) -> bool:
        """True when lines must go through :func:`prepare_lines` before the C reader."""
        return bool(
            self.unknown_fields == "keep"
            or self.case_insensitive
            or self.dots_to_underscores
            or self.column_to_json_key
            or self.map_columns
        )

    @functools.cached_property
    def key_map(self) -> dict[str, str]:
        """Folded JSON key -> column, for the Python pass."""
        ci, dots = self.case_insensitive, self.dots_to_underscores
        if self.schema is None:
            return {}
        out = {_fold(f.name, ci, dots): f.name for f in self.schema.fields}
        for column, key in self.column_to_json_key:
            out[_fold(key, ci, dots)] = column
        return out

    def column_of(self, key: str) -> str | None:
        """The column a JSON key feeds, or None for an unknown field."""
        folded = _fold(key, self.case_insensitive, self.dots_to_underscores)
        if self.schema is None:
            return folded
        return self.key_map.get(folded)


def spec_for(sink: SinkConfig, schema: Schema | None) -> ConversionSpec:
    """The conversion settings of a configured sink."""
    return ConversionSpec(
        schema=schema,
        unknown_fields=sink.unknown_fields,
        unknown_column=sink.unknown_column,
        case_insensitive=sink.case_insensitive,
        dots_to_underscores=sink.dots_to_underscores,
        column_to_json_key=tuple(sorted(sink.column_to_json_key.items())),
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """Lines rewritten for the C reader, and what the Python pass found.

    ``lines[i]`` is None for a line that failed already (``errors[i]`` says why);
    ``side[column][i]`` is the value of a map or unknown-field column for line ``i``.
    """

    lines: list[bytes | None]
    errors: dict[int, str]
    side: dict[str, list[object]]


def prepare_lines(lines: Sequence[bytes], spec: ConversionSpec) -> Prepared:
    """The Python pass: parse each line, map its keys, pull out map and unknown fields.

    A blank line stays blank (skipped later, like the C reader does); a line that is not a
    JSON object, or whose map value does not convert, fails here with its reason.
    """
    out: list[bytes | None] = []
    errors: dict[int, str] = {}
    maps = spec.map_columns
    keep = spec.unknown_fields == "keep" and spec.schema is not None
    side: dict[str, list[object]] = {name: [] for name in maps}
    if keep:
        side[spec.unknown_column] = []
    cache: dict[str, str | None] = {}
    for index, line in enumerate(lines):
        if not line.strip():
            out.append(b"")
            for values in side.values():
                values.append(None)
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            event, reason = None, f"not JSON: {exc}"
        else:
            reason = "event is not a JSON object"
        if not isinstance(event, dict):
            out.append(None)
            errors[index] = reason
            for values in side.values():
                values.append(None)
            continue
        known: dict[str, object] = {}
        unknown: dict[str, object] = {}
        for key, value in event.items():
            column = cache.get(key, "")
            if column == "":
                column = cache[key] = spec.column_of(key)
            if column is None:
                unknown[key] = value
            else:
                known[column] = value
        for name in maps:
            side[name].append(known.pop(name, None))
        if keep:
            side[spec.unknown_column].append(orjson.dumps(unknown).decode() if unknown else None)
        out.append(orjson.dumps(known))
    for name, kind in maps.items():
        _check_side(side[name], spec.map_types[name], kind, name, out, errors)
    return Prepared(out, errors, side)


# Numeric text as Arrow's JSON reader takes it for a decimal: no spaces, NaN or Infinity.
_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INT_TEXT = re.compile(r"[+-]?\d+")
_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}")

PyConverter = Callable[[object], object]


def _to_timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO-8601 timestamp string, got {value!r}")
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _to_date(value: object) -> date:
    # The cast the JSON path uses reads YYYY-MM-DD only; the same here.
    if not isinstance(value, str) or not _DATE_TEXT.fullmatch(value):
        raise ValueError(f"expected a YYYY-MM-DD date, got {value!r}")
    return date.fromisoformat(value)


def _to_decimal(value: object) -> Decimal:
    # Arrow rescales a Decimal to the column's scale and refuses one that would lose digits,
    # so the value is only made exact here: text as given, a float as its shortest repr.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"expected a decimal number, got {value!r}")
    text = value if isinstance(value, str) else repr(value)
    if not _NUMBER_TEXT.fullmatch(text):
        raise ValueError(f"{text!r} is not a decimal number")
    return Decimal(text)


def _key_of(kind: FieldType) -> PyConverter:
    """A map key (always a JSON string) as a value of the key type."""
    if kind.kind == "int":

        def to_int(key: object) -> int:
            if not isinstance(key, str) or not _INT_TEXT.fullmatch(key):
                raise ValueError(f"map key {key!r} is not an integer")
            return int(key)

        return to_int
    if kind.kind == "float":

        def to_float(key: object) -> float:
            if not isinstance(key, str) or not _NUMBER_TEXT.fullmatch(key):
                raise ValueError(f"map key {key!r} is not a number")
            number = float(key)
            if not math.isfinite(number):
                raise ValueError(f"map key {key!r} is outside the float range")
            return number

        return to_float
    if kind.kind == "bool":
        keys = {"true": True, "false": False}

        def to_bool(key: object) -> bool:
            if key not in keys:
                raise ValueError(f"map key {key!r} is not 'true' or 'false'")
            return keys[key]  # type: ignore[index]

        return to_bool
    converter = _python_converter(kind)
    return converter if converter is not None else (lambda key: key)


@functools.lru_cache(maxsize=256)
def _python_converter(kind: FieldType) -> PyConverter | None:
    """How a parsed JSON value becomes what ``pa.array`` takes for ``kind``.

    None when ``pa.array`` takes the JSON value as it is (strings, numbers, bools and
    containers of only those, keyed by strings), so such columns cost no Python per value.
    """
    if kind.kind == "timestamp":
        return _to_timestamp
    if kind.kind == "date":
        return _to_date
    if kind.kind == "decimal":
        return _to_decimal
    if kind.kind == "list":
        item = _python_converter(kind.items[0])
        if item is None:
            return None

        def to_list(value: object) -> object:
            if not isinstance(value, list):
                return value  # pa.array reports the wrong type with its own message
            return [None if v is None else item(v) for v in value]

        return to_list
    if kind.kind == "struct":
        fields = {
            n: c
            for n, t in zip(kind.names, kind.items, strict=True)
            if (c := _python_converter(t)) is not None
        }
        if not fields:
            return None

        def to_struct(value: object) -> object:
            if not isinstance(value, dict):
                return value
            out = dict(value)
            for name, convert in fields.items():
                if out.get(name) is not None:
                    out[name] = convert(out[name])
            return out

        return to_struct
    if kind.kind == "map":
        key_kind, value_kind = kind.items
        value_of = _python_converter(value_kind)
        if key_kind.kind == "string" and value_of is None:
            return None
        key_of = _key_of(key_kind)
        convert_value = value_of or (lambda v: v)

        def to_map(value: object) -> object:
            if not isinstance(value, dict):
                return value
            return [(key_of(k), None if v is None else convert_value(v)) for k, v in value.items()]

        return to_map
    return None


def _check_side(
    values: list[object],
    kind: FieldType,
    arrow: pa.DataType,
    name: str,
    lines: list[bytes | None],
    errors: dict[int, str],
) -> None:
    convert = _python_converter(kind)
    if convert is not None:
        for index, value in enumerate(values):
            if value is None:
                continue
            try:
                values[index] = convert(value)
            except (TypeError, ValueError, ArithmeticError) as exc:
                if lines[index] is not None:
                    errors[index] = f"column {name}: {exc}"
                    lines[index] = None
                values[index] = None
    # One conversion of the whole column; only when it fails, one per row to find the bad.
    # (An int beyond 64 bits raises OverflowError, not an Arrow error.)
    try:
        pa.array(values, type=arrow)
        return
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    for index, value in enumerate(values):
        try:
            pa.array([value], type=arrow)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            if lines[index] is not None:
                errors[index] = f"column {name}: {exc}"
                lines[index] = None
            values[index] = None


def unify(tables: Sequence[pa.Table]) -> list[pa.Table]:
    """Tables of inferred schemas as few as possible: one when the types can be widened.

    Returns one table when ``concat_tables`` can promote the schemas, else the tables
    grouped by identical schema (each group becomes its own file).
    """
    if not tables:
        return []
    if len(tables) == 1:
        return [tables[0]]
    try:
        return [pa.concat_tables(tables, promote_options="permissive")]
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        groups: dict[pa.Schema, list[pa.Table]] = {}
        for table in tables:
            groups.setdefault(table.schema, []).append(table)
        return [pa.concat_tables(group) for group in groups.values()]

"""Reading raw JSON-lines tables (Firehose without format conversion) like Athena's SerDe.

A table's files are records as they arrived, one a line, gzip or plain. With declared
columns (``sinks.columns``: the Glue table given for the delivery stream, or the stream's
schema) the table has exactly those columns, typed — keys outside them are ignored and
absent keys read null, as Athena's JSON SerDe reads a Glue table; without them the
columns are inferred from the data and unified by name.

Local tables are DuckDB views over ``read_json`` (:func:`columns_option` gives its
``columns``); tables on S3 are pyarrow datasets over the listed files
(:func:`json_dataset`), since DuckDB reaches no S3 without its httpfs extension — the same
path S3 Parquet tables take, with bytes scanned measured from the reads (a JSON file is
read whole: its size is what it costs).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.json as pj

from firelake.config import FieldSpec
from firelake.grammars.field_types import FieldType
from queries.sandbox import identifier
from queries.scanned import ReadLog
from sinks.conversion import arrow_type
from sinks.destinations import Destination

__all__ = ["columns_option", "duckdb_type", "json_dataset"]

_SCALARS = {
    "string": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
    "date": "DATE",
}


def duckdb_type(kind: FieldType) -> str:
    """The DuckDB type of a column type (as the Parquet sinks' files read)."""
    if kind.kind in _SCALARS:
        return _SCALARS[kind.kind]
    if kind.kind == "decimal":
        return f"DECIMAL({kind.params[0]},{kind.params[1]})"
    if kind.kind == "list":
        return duckdb_type(kind.items[0]) + "[]"
    if kind.kind == "map":
        return f"MAP({duckdb_type(kind.items[0])}, {duckdb_type(kind.items[1])})"
    inner = ", ".join(
        f"{identifier(n)} {duckdb_type(t)}" for n, t in zip(kind.names, kind.items, strict=True)
    )
    return f"STRUCT({inner})"


def columns_option(columns: Sequence[FieldSpec]) -> str:
    """``read_json``'s ``columns = {...}`` argument for declared columns."""
    pairs = ", ".join(
        "'{}': '{}'".format(c.name.replace("'", "''"), duckdb_type(c.type).replace("'", "''"))
        for c in columns
    )
    return "{" + pairs + "}"


def json_dataset(
    destination: Destination,
    table: str,
    keys: Sequence[tuple[str, int]],
    partition_schema: pa.Schema,
    columns: Sequence[FieldSpec] | None = None,
    reads: ReadLog | None = None,
) -> ds.FileSystemDataset:
    """A pyarrow dataset over a JSON-lines table's files (``(key, size)`` pairs).

    Gzip is recognised by the ``.gz`` ending. Declared columns give the schema (other keys
    ignored); otherwise each file's first block is read to infer it, unified by name.
    """
    fs, base = destination.arrow_fs()
    if reads is not None:
        fs = reads.filesystem(fs)
    if columns:
        declared = pa.schema([pa.field(c.name, arrow_type(c.type)) for c in columns])
        fmt = ds.JsonFileFormat(
            parse_options=pj.ParseOptions(
                explicit_schema=declared, unexpected_field_behavior="ignore"
            )
        )
    else:
        fmt = ds.JsonFileFormat()
    partitioning = ds.HivePartitioning(partition_schema)
    fragments = [
        fmt.make_fragment(
            f"{base}/{key}",
            filesystem=fs,
            partition_expression=partitioning.parse("/" + key[len(table) + 1 :]),
            file_size=size,
        )
        for key, size in keys
    ]
    if columns:
        data = declared
    else:
        data = pa.unify_schemas(
            [f.physical_schema for f in fragments] or [pa.schema([])],
            promote_options="permissive",
        )
    # Hive keys go last, where read_json puts them.
    schema = pa.unify_schemas([data, partition_schema], promote_options="permissive")
    return ds.FileSystemDataset(fragments, schema=schema, format=fmt, filesystem=fs)

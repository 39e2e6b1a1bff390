"""The declared columns of a raw JSON-lines table, kept in the lake beside its files.

A ``format = "json"`` sink writes records as they arrived, so its files say nothing about
their types. When the sink knows a schema — a Glue table given for a Firehose delivery
stream, or the stream's ``[schemas]`` entry — it puts the columns in
``_firelake/tables/<table>/columns.json`` (:func:`sinks.paths.columns_key`), and the
catalog reads the table with them (``read_json`` with ``columns``, like Athena's JSON SerDe
over a Glue table); without the file the columns are inferred. Keeping them in the lake
makes every reader — the CLI, the query service, another machine on the same S3 bucket —
see the same table, with no Kafka registry at query time.

This module is the format only (storage I/O, no Kafka, no writer machinery), so the query
side may import it.
"""

from __future__ import annotations

import orjson

from firelake.config import FieldSpec, Schema
from sinks.destinations import Destination
from sinks.paths import columns_key

__all__ = ["columns_bytes", "read_columns", "write_columns"]


def columns_bytes(schema: Schema) -> bytes:
    """The columns file of a schema: ``{"columns": [{"Name", "Type"}], ...}`` (Glue style)."""
    return orjson.dumps(
        {
            "schema": schema.name,
            "columns": [{"Name": f.name, "Type": str(f.type)} for f in schema.fields],
        }
    )


def write_columns(destination: Destination, table: str, schema: Schema) -> None:
    """Put the table's columns (the same bytes each time for the same schema)."""
    if schema.fields:
        destination.put(columns_key(table), columns_bytes(schema))


def read_columns(destination: Destination, table: str) -> tuple[FieldSpec, ...] | None:
    """The table's declared columns, None when it has none (or the file is unreadable)."""
    data = destination.get(columns_key(table))
    if data is None:
        return None
    try:
        columns = orjson.loads(data)["columns"]
        return tuple(FieldSpec(str(c["Name"]), str(c["Type"])) for c in columns) or None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None

"""JSON-lines tables with declared columns (Glue table) and on S3 (pyarrow datasets)."""

from __future__ import annotations

import gzip
import json

from firelake.config import FieldSpec, Schema
from queries.catalog import list_tables
from queries.engine import QueryEngine
from sinks.columns import read_columns, write_columns
from sinks.destinations import Destination, LocalDestination
from sinks.testing import dest, s3  # noqa: F401  (fixtures)

EVENTS = [{"id": 1, "page": "/", "extra": True}] * 3 + [{"id": 2, "page": "/a", "n": 1.5}]
SCHEMA = Schema(
    "clicks",
    (
        FieldSpec("id", "int"),
        FieldSpec("page", "string"),
        FieldSpec("n", "float"),
        FieldSpec("missing", "list<string>"),
    ),
)


def put_lines(destination: Destination, key: str, events: list[dict]) -> None:
    data = "".join(json.dumps(e) + "\n" for e in events).encode()
    destination.put(key, gzip.compress(data))


def fill(destination: Destination) -> None:
    put_lines(destination, "clicks/dt=2026-11-29/hour=08/part-a.jsonl.gz", EVENTS)
    put_lines(destination, "clicks/dt=2026-11-29/hour=09/part-b.jsonl.gz", EVENTS[:1])


def test_inferred_columns_on_local_and_s3(dest: Destination) -> None:  # noqa: F811
    fill(dest)
    (table,) = list_tables(dest)
    assert (table.format, table.rows, table.columns) == ("json", 5, ())
    with QueryEngine(dest) as engine:
        result = engine.query(
            "SELECT hour, count(*), sum(id), count(extra) FROM clicks GROUP BY 1 ORDER BY 1"
        )
        assert result.rows == [(8, 4, 5, 3), (9, 1, 1, 1)]
        pruned = engine.query("SELECT count(*) FROM clicks WHERE hour = 9")
        assert pruned.rows == [(1,)]
        if isinstance(dest, LocalDestination):
            assert pruned.bytes_scanned  # S3 JSON tables are read at refresh (see engine)


def test_declared_columns_are_the_tables_columns(dest: Destination) -> None:  # noqa: F811
    fill(dest)
    write_columns(dest, "clicks", SCHEMA)
    assert read_columns(dest, "clicks") == SCHEMA.fields
    (table,) = list_tables(dest)
    assert table.columns == SCHEMA.fields
    with QueryEngine(dest) as engine:
        types = dict(engine.query("SELECT column_name, column_type FROM (DESCRIBE clicks)").rows)
        assert types == {
            "id": "BIGINT",
            "page": "VARCHAR",
            "n": "DOUBLE",
            "missing": "VARCHAR[]",
            "dt": "DATE",
            "hour": "INTEGER",
        }
        result = engine.query("SELECT count(*), sum(id), sum(n), count(missing) FROM clicks")
        assert result.rows == [(5, 6, 1.5, 0)]

"""Glue's Data Catalog read operations over the lake (``X-Amz-Target: AWSGlue.*``).

boto3 Glue clients see the lake as Athena users do: one database (``default``) whose
tables are the lake's tables, with their columns in Glue types, partition keys, location,
row counts, partitions and schema versions (:mod:`queries.versions`):

- ``GetDatabases``, ``GetDatabase``
- ``GetTables`` (paged, ``Expression`` as Glue's name regex), ``GetTable``
- ``GetPartitions`` (paged), ``GetTableVersions``

The endpoint's own Glue tables (``CreateTable`` — the schemas Firehose format conversion
names, kept in the registry, :mod:`api.firehose`) still answer ``GetTable`` when the lake
has no table of that name, and ``CreateTable``/``DeleteTable`` stay theirs.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from api.backend import Operation, RequestContext
from api.lake_services import DATABASE, LakeServices
from api.protocol import AwsError, opt_string, page, req_string
from queries.catalog import TableInfo
from queries.versions import Column, TableVersion, last_update, record_versions, table_columns

__all__ = ["LakeGlueApi", "glue_table"]

_PARQUET = {
    "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
    "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
    "SerdeInfo": {
        "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    },
}
#: Raw JSON lines (Firehose without format conversion), as Glue's crawler describes them.
_JSON = {
    "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
    "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
    "SerdeInfo": {"SerializationLibrary": "org.openx.data.jsonserde.JsonSerDe"},
}


def _formats(info: TableInfo) -> dict[str, Any]:
    """The storage formats of a table's files (``TableInfo.format``: parquet or json)."""
    return _JSON if info.format == "json" else _PARQUET


def _compressed(info: TableInfo) -> bool:
    """Parquet pages are compressed; JSON lines only when gzipped."""
    if info.format != "json":
        return True
    return any(str(f.path).endswith(".gz") for f in info.data_files)


def _glue_columns(columns: tuple[Column, ...]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    data = [{"Name": c.name, "Type": c.type} for c in columns if not c.partition_key]
    keys = [{"Name": c.name, "Type": c.type} for c in columns if c.partition_key]
    return data, keys


def glue_table(
    info: TableInfo, versions: list[TableVersion], columns: tuple[Column, ...] | None = None
) -> dict[str, Any]:
    """A lake table as Glue's ``Table`` structure (``columns``: a version's, else now)."""
    data, keys = _glue_columns(columns if columns is not None else table_columns(info))
    updated = last_update(info)
    created = versions[0].created if versions else updated
    return {
        "Name": info.name,
        "DatabaseName": DATABASE,
        "CatalogId": "000000000000",
        "CreateTime": created,
        "UpdateTime": updated,
        "TableType": "EXTERNAL_TABLE",
        "StorageDescriptor": {
            "Columns": data,
            "Location": str(info.path),
            **_formats(info),
            "Compressed": _compressed(info),
            "StoredAsSubDirectories": False,
        },
        "PartitionKeys": keys,
        "Parameters": {
            "classification": "json" if info.format == "json" else "parquet",
            "recordCount": str(info.rows),
            "numFiles": str(info.files),
            "totalSize": str(info.bytes),
            "firelake.problems": str(len(info.problems)),
        },
        "VersionId": str(versions[-1].version) if versions else "1",
        "IsRegisteredWithLakeFormation": False,
    }


def _partitions(info: TableInfo) -> list[dict[str, Any]]:
    """The table's partitions (one per folder of its layout), oldest first."""
    folders: dict[tuple[str, ...], list[float]] = {}
    base = PurePosixPath(str(info.path))
    for data_file in info.data_files:
        relative = PurePosixPath(str(data_file.path)).relative_to(base)
        values = tuple(part.partition("=")[2] for part in relative.parts[:-1])
        folders.setdefault(values, []).append(data_file.mtime)
    data, _ = _glue_columns(table_columns(info))
    return [
        {
            "Values": list(values),
            "DatabaseName": DATABASE,
            "TableName": info.name,
            "CreationTime": min(times),
            "LastAccessTime": max(times),
            "StorageDescriptor": {
                "Columns": data,
                "Location": str(
                    base.joinpath(*(f"{k}={v}" for k, v in zip(info.layout, values, strict=False)))
                ),
                **_formats(info),
            },
        }
        for values, times in sorted(folders.items())
    ]


def _page(payload: Mapping[str, Any], items: list[Any], key: str, limit: int) -> dict[str, Any]:
    return page(payload, items, key, limit=limit, code="InvalidInputException")


class LakeGlueApi:
    """The Glue read operations over the lake; ``registry`` are the endpoint's own Glue
    operations, asked when the lake has no such table."""

    def __init__(self, lake: LakeServices, registry: Mapping[str, Operation] | None = None) -> None:
        self.lake = lake
        self.registry = dict(registry or {})

    @property
    def operations(self) -> dict[str, Operation]:
        return {
            "GetDatabases": self.get_databases,
            "GetDatabase": self.get_database,
            "GetTables": self.get_tables,
            "GetTable": self.get_table,
            "GetPartitions": self.get_partitions,
            "GetTableVersions": self.get_table_versions,
        }

    def _database(self, payload: Mapping[str, Any], name: str = "DatabaseName") -> str:
        database = opt_string(payload, name, min_len=1, max_len=255) or DATABASE
        if database != DATABASE:
            raise AwsError(
                400,
                "EntityNotFoundException",
                f"Database {database} not found (the lake is {DATABASE!r}).",
            )
        return database

    async def _tables(self) -> dict[str, TableInfo]:
        service = await self.lake.service_async()
        return await asyncio.to_thread(service.tables)

    async def _table(self, payload: Mapping[str, Any], key: str = "TableName") -> TableInfo:
        self._database(payload)
        name = req_string(payload, key, min_len=1, max_len=255)
        tables = await self._tables()
        if name not in tables:
            raise AwsError(
                400, "EntityNotFoundException", f"Table {name} not found in database {DATABASE}."
            )
        return tables[name]

    async def get_databases(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return {"DatabaseList": [self._database_json()]}

    async def get_database(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        self._database(payload, "Name")
        return {"Database": self._database_json()}

    def _database_json(self) -> dict[str, Any]:
        return {
            "Name": DATABASE,
            "Description": "The Firelake lake: one table per folder of the lake",
            "LocationUri": self.lake.config.lake_url,
            "CatalogId": "000000000000",
        }

    async def get_tables(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        self._database(payload)
        expression = opt_string(payload, "Expression")
        tables = await self._tables()
        names = sorted(tables)
        if expression:
            try:
                pattern = re.compile(
                    expression.replace("*", ".*")
                    if "*" in expression and ".*" not in expression
                    else expression
                )
            except re.error as exc:
                raise AwsError(
                    400, "InvalidInputException", f"Expression {expression!r}: {exc}"
                ) from None
            names = [n for n in names if pattern.fullmatch(n)]

        # Page the names first: only the page's tables have their versions read (lake I/O).
        answer = _page(payload, names, "TableList", 100)

        def build(page: list[str]) -> list[dict[str, Any]]:
            return [
                glue_table(
                    tables[n], record_versions(tables[n].destination, tables[n], write=False)
                )
                for n in page
            ]

        answer["TableList"] = await asyncio.to_thread(build, answer["TableList"])
        return answer

    async def get_table(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        name = payload.get("Name")
        tables = await self._tables()
        if (
            isinstance(name, str)
            and name in tables
            and (payload.get("DatabaseName") or DATABASE) == DATABASE
        ):
            info = tables[name]
            versions = await asyncio.to_thread(record_versions, info.destination, info, False)
            return {"Table": glue_table(info, versions)}
        fallback = self.registry.get("GetTable")
        if fallback is not None:
            return await fallback(payload, ctx)
        info = await self._table(payload, "Name")
        return {"Table": glue_table(info, [])}

    async def get_partitions(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        info = await self._table(payload)
        partitions = await asyncio.to_thread(_partitions, info)
        return _page(payload, partitions, "Partitions", 1000)

    async def get_table_versions(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        info = await self._table(payload)
        versions = await asyncio.to_thread(record_versions, info.destination, info, False)
        items = [
            {"Table": glue_table(info, versions[: i + 1], v.columns), "VersionId": str(v.version)}
            for i, v in reversed(list(enumerate(versions)))
        ]
        return _page(payload, items, "TableVersions", 100)

"""Firehose operations (``Firehose_20150804.*``) and the few Glue ones they need.

CreateDeliveryStream maps the request onto a Parquet sink (:mod:`api.delivery` says
how, and refuses what cannot be mapped) and records it in the registry; a DirectPut
delivery stream gets its own topic ``firehose-<name>``, a KinesisStreamAsSource one reads
the named Firelake stream. The sink itself runs in the sink process (``firelake up`` or
``firelake sink``) from :func:`streams.resources.registry_config`.

PutRecord / PutRecordBatch write a request's records as one envelope on one partition
(round robin over requests: Firehose has no partition keys and no order to keep), after
normalising each record (:func:`api.records.firehose_line`). ``RecordId`` is the
record's sequence number.

Glue (``AWSGlue.*``): CreateTable, GetTable and DeleteTable hold table schemas —
Glue-style columns — that SchemaConfiguration can name, as on AWS.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from typing import Any

from api.backend import AwsBackend, Operation, RequestContext
from api.delivery import (
    DEFAULT_DATABASE,
    TIME_FIELD_PARAMETER,
    delivery_from_request,
    table_from_request,
)
from api.kinesis import record_error, write_segments
from api.protocol import AwsError, opt_int, opt_string, req_string
from api.records import PlannedRecord, firehose_line, parse_firehose_records, plan_segments
from firelake.config import StreamConfig
from streams.resources import DeliveryEntry, delivery_key, table_key
from streams.sequence import encode_sequence
from streams.topics import delete_topics, ensure_topics

__all__ = ["FirehoseApi", "GlueApi"]

_DELIVERY_NAME = re.compile(r"[a-zA-Z0-9_.-]+")
#: Firelake column type -> the Glue type GetTable reports.
_GLUE_OF = {
    "string": "string",
    "int": "bigint",
    "float": "double",
    "bool": "boolean",
    "timestamp": "timestamp",
}


def _delivery_name(payload: dict[str, Any]) -> str:
    return req_string(payload, "DeliveryStreamName", min_len=1, max_len=64, pattern=_DELIVERY_NAME)


def _not_found(name: str) -> AwsError:
    return AwsError(
        400,
        "ResourceNotFoundException",
        f"Firehose {name} under account 000000000000 not found.",
    )


class FirehoseApi:
    """The Firehose operations of one backend."""

    def __init__(self, backend: AwsBackend) -> None:
        self.backend = backend
        self._turn = itertools.count()

    @property
    def operations(self) -> dict[str, Operation]:
        return {
            "CreateDeliveryStream": self.create,
            "DescribeDeliveryStream": self.describe,
            "ListDeliveryStreams": self.list,
            "DeleteDeliveryStream": self.delete,
            "PutRecord": self.put_record,
            "PutRecordBatch": self.put_record_batch,
        }

    async def _entry(self, name: str) -> DeliveryEntry:
        registry = await self.backend.refresh()
        entry = registry.deliveries.get(name)
        if entry is None:
            registry = await self.backend.refresh(force=True)
            entry = registry.deliveries.get(name)
        if entry is None:
            raise _not_found(name)
        return entry

    async def create(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        name = _delivery_name(payload)
        registry = await self.backend.refresh(force=True)
        if name in registry.deliveries:
            raise AwsError(
                400,
                "ResourceInUseException",
                f"Firehose {name} under account 000000000000 already exists.",
            )
        entry = delivery_from_request(
            payload,
            self.backend.config,
            registry,
            self.backend.streams(),
            time.time_ns() // 1_000_000,
        )
        if entry.source == "DirectPut":
            from firelake.config import FirelakeConfig

            topic = StreamConfig(name=entry.topic, partitions=entry.partitions, retention_hours=24)
            single = FirelakeConfig(kafka=self.backend.config.kafka, streams={topic.name: topic})
            await asyncio.to_thread(ensure_topics, single, self.backend.bootstrap)
        await self.backend.store.put(delivery_key(name), entry.to_json())
        return {"DeliveryStreamARN": ctx.delivery_arn(name)}

    async def describe(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        entry = await self._entry(_delivery_name(payload))
        destination = {k: v for k, v in entry.destination.items() if not k.startswith("_")}
        description: dict[str, Any] = {
            "DeliveryStreamName": entry.name,
            "DeliveryStreamARN": ctx.delivery_arn(entry.name),
            "DeliveryStreamStatus": "ACTIVE",
            "DeliveryStreamType": entry.source,
            "VersionId": "1",
            "CreateTimestamp": entry.created_ms / 1000,
            "DeliveryStreamEncryptionConfiguration": {"Status": "DISABLED"},
            "Destinations": [
                {
                    "DestinationId": "destinationId-000000000001",
                    "ExtendedS3DestinationDescription": destination,
                }
            ],
            "HasMoreDestinations": False,
        }
        if entry.source == "KinesisStreamAsSource":
            source = entry.destination.get("_KinesisStreamSourceConfiguration") or {}
            description["Source"] = {
                "KinesisStreamSourceDescription": {
                    **source,
                    "DeliveryStartTimestamp": entry.created_ms / 1000,
                }
            }
        else:
            description["Source"] = {"DirectPutSourceDescription": {}}
        return {"DeliveryStreamDescription": description}

    async def list(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        limit = opt_int(payload, "Limit", low=1, high=10_000) or 10
        kind = opt_string(payload, "DeliveryStreamType")
        start = opt_string(payload, "ExclusiveStartDeliveryStreamName", min_len=1, max_len=64)
        registry = await self.backend.refresh()
        names = sorted(
            n for n, e in registry.deliveries.items() if kind is None or e.source == kind
        )
        if start is not None:
            names = [n for n in names if n > start]
        return {"DeliveryStreamNames": names[:limit], "HasMoreDeliveryStreams": len(names) > limit}

    async def delete(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        entry = await self._entry(_delivery_name(payload))
        await self.backend.store.put(delivery_key(entry.name), None)
        if entry.source == "DirectPut":
            await asyncio.to_thread(delete_topics, self.backend.bootstrap, [entry.topic])
        return {}

    async def _put(self, payload: dict[str, Any], single: bool) -> list[dict[str, str]]:
        name = _delivery_name(payload)
        datas = parse_firehose_records(payload, single=single)
        entry = await self._entry(name)
        if entry.source != "DirectPut":
            raise AwsError(
                400,
                "InvalidArgumentException",
                f"This operation is not permitted on KinesisStreamAsSource delivery stream "
                f"type: put records into its source stream {entry.topic!r}",
            )
        # Round robin over requests: one envelope per request, spread over the partitions.
        partition = next(self._turn) % entry.partitions
        records = [PlannedRecord(i, firehose_line(d), "") for i, d in enumerate(datas)]
        segments = plan_segments(partition, records, batch=True)
        written = await write_segments(
            self.backend.producer,
            entry.topic,
            segments,
            time.time_ns() // 1_000_000,
            with_keys=False,
        )
        results: list[dict[str, str]] = []
        for index in range(len(records)):
            outcome = written[index]
            if isinstance(outcome, BaseException):
                results.append(record_error(outcome))
            else:
                results.append({"RecordId": encode_sequence(*outcome)})
        return results

    async def put_record(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        result = (await self._put(payload, single=True))[0]
        self.backend.count_records("firehose", [result])
        if "ErrorCode" in result:
            raise AwsError(503, "ServiceUnavailableException", result["ErrorMessage"])
        return {"RecordId": result["RecordId"], "Encrypted": False}

    async def put_record_batch(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        results = await self._put(payload, single=False)
        failed = 0
        for result in results:
            if "ErrorCode" in result:
                failed += 1
                if result["ErrorCode"] != "ProvisionedThroughputExceededException":
                    result["ErrorCode"] = "ServiceUnavailableException"
        self.backend.count_records("firehose", results)
        return {"FailedPutCount": failed, "Encrypted": False, "RequestResponses": results}


class GlueApi:
    """Glue tables: the schemas Firehose format conversion names."""

    def __init__(self, backend: AwsBackend) -> None:
        self.backend = backend

    @property
    def operations(self) -> dict[str, Operation]:
        return {
            "CreateTable": self.create_table,
            "GetTable": self.get_table,
            "DeleteTable": self.delete_table,
        }

    async def create_table(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        entry = table_from_request(payload, time.time_ns() // 1_000_000)
        registry = await self.backend.refresh(force=True)
        if (entry.database, entry.name) in registry.tables:
            raise AwsError(
                400,
                "AlreadyExistsException",
                f"Table already exists: {entry.database}.{entry.name}",
            )
        await self.backend.store.put(table_key(entry.database, entry.name), entry.to_json())
        return {}

    async def _table(self, payload: dict[str, Any]) -> tuple[str, str]:
        database = opt_string(payload, "DatabaseName", min_len=1, max_len=255) or DEFAULT_DATABASE
        name = req_string(payload, "Name", min_len=1, max_len=255)
        registry = await self.backend.refresh(force=True)
        if (database, name) not in registry.tables:
            raise AwsError(
                400, "EntityNotFoundException", f"Table {name} not found in database {database}."
            )
        return database, name

    async def get_table(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        database, name = await self._table(payload)
        entry = self.backend.registry.tables[(database, name)]
        parameters = {"classification": "parquet"}
        if entry.schema.time_field:
            parameters[TIME_FIELD_PARAMETER] = entry.schema.time_field
        return {
            "Table": {
                "Name": name,
                "DatabaseName": database,
                "CreateTime": entry.created_ms / 1000,
                "StorageDescriptor": {
                    "Columns": [
                        {"Name": f.name, "Type": _GLUE_OF[str(f.type)]} for f in entry.schema.fields
                    ]
                },
                "Parameters": parameters,
                "TableType": "EXTERNAL_TABLE",
            }
        }

    async def delete_table(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        database, name = await self._table(payload)
        await self.backend.store.put(table_key(database, name), None)
        return {}

"""Format conversion options on the real broker: OpenX key mapping, a map column, and
unknown fields kept in one JSON column (README: "Sinks: Firehose, exactly once")."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import duckdb
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from firelake.testing import example_config, example_data
from sinks.sink import ParquetSink
from streams.envelope import encode
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.kafka

WAIT_SECONDS = 60.0


def test_openx_mapping_map_columns_and_kept_unknown_fields(
    kafka_bootstrap: str, lake: Path, suffix: str
) -> None:
    data = example_data()
    data["schemas"]["mixed"] = {
        "time_field": "at",
        "required": ["id", "at"],
        "fields": {
            "id": "string",
            "at": "timestamp",
            "device_os": "string",
            "username": "string",
            "labels": "map<string,int>",
            "renamed": "string",
        },
    }
    data["streams"]["mixed-events"] = {"partitions": 1, "schema": "mixed"}
    data["sinks"] = {
        "mixed": {
            "stream": "mixed-events",
            "table": "mixed",
            "max_seconds": 1,
            "unknown_fields": "keep",
            "case_insensitive": True,
            "dots_to_underscores": True,
            "column_to_json_key": {"renamed": "orig"},
        }
    }
    config = example_config(kafka_bootstrap, lake, suffix, data=data)
    ensure_topics(config, kafka_bootstrap)
    (sink_name,) = config.sinks
    topic = config.sinks[sink_name].stream
    events = [
        {
            "id": f"e{n}",
            "at": "2026-11-29T08:00:00.000000Z",
            "device.os": "ios",  # dots_to_underscores -> device_os
            "UserName": f"user {n}",  # case_insensitive -> username
            "labels": {"a": n, "b": 2 * n},
            "orig": f"o{n}",  # column_to_json_key -> renamed
            "extra": {"kept": n},  # unknown -> the JSON column
        }
        for n in range(50)
    ]

    async def scenario() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            value, headers = encode([orjson.dumps(e) for e in events])
            await producer.send_and_wait(topic, value, partition=0, headers=headers)
        finally:
            await producer.stop()
        sink = ParquetSink(config, sink_name)
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        deadline = time.monotonic() + WAIT_SECONDS
        try:
            while time.monotonic() < deadline and not list((lake / "mixed").rglob("*.parquet")):
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await asyncio.wait_for(task, WAIT_SECONDS)

    try:
        asyncio.run(scenario())
    finally:
        delete_topics(kafka_bootstrap, config.streams)

    rows = duckdb.sql(
        f"SELECT id, device_os, username, labels, renamed, _unknown FROM "
        f"read_parquet('{lake}/mixed/**/*.parquet') ORDER BY CAST(substr(id, 2) AS INT)"
    ).fetchall()
    assert len(rows) == 50
    for n, (id_, device_os, username, labels, renamed, unknown) in enumerate(rows):
        assert (id_, device_os, username, renamed) == (f"e{n}", "ios", f"user {n}", f"o{n}")
        assert dict(labels) == {"a": n, "b": 2 * n}
        assert json.loads(unknown) == {"extra": {"kept": n}}

"""The Athena front door holds a bounded number of finished executions in memory."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import api.athena as athena
from api.lake_services import LakeServices
from firelake.config import load_config
from firelake.testing import write_config


def test_finished_executions_leave_memory_and_are_read_back_from_the_lake(
    tmp_path: Path, monkeypatch
) -> None:
    # Every execution and its result (up to a million rows) stayed in memory for the
    # life of the process; now the oldest finished ones go once the lake has them.
    monkeypatch.setattr(athena, "MAX_KEPT_EXECUTIONS", 2)
    lake = tmp_path / "lake"
    lake.mkdir()
    config = load_config(
        write_config(tmp_path / "firelake.toml", {"lake": {"root": str(lake)}}), environ={}
    )
    services = LakeServices(config, engines=1)
    api = athena.AthenaApi(services)

    async def run(sql: str) -> str:
        started = await api.start_query_execution({"QueryString": sql}, None)  # type: ignore[arg-type]
        query_id = started["QueryExecutionId"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answer = await api.get_query_execution({"QueryExecutionId": query_id}, None)  # type: ignore[arg-type]
            if answer["QueryExecution"]["Status"]["State"] == "SUCCEEDED":
                return query_id
            await asyncio.sleep(0.05)
        raise AssertionError(f"{sql} did not finish")

    async def scenario() -> None:
        ids = [await run(f"SELECT {n} AS n") for n in range(4)]
        assert len(api._executions) <= 2 and ids[0] not in api._executions
        first = await api.get_query_results({"QueryExecutionId": ids[0]}, None)  # type: ignore[arg-type]
        assert first["ResultSet"]["Rows"][1]["Data"] == [{"VarCharValue": "0"}]
        listed = await api.list_query_executions({}, None)  # type: ignore[arg-type]
        assert set(ids) <= set(listed["QueryExecutionIds"])

    try:
        asyncio.run(scenario())
    finally:
        api.close()
        services.close()

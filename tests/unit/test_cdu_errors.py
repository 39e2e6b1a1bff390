"""The CDU API answers every error in JSON, as the ingest and query services do."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from agents.cdu.service import create_app


class _Broken:
    """A service whose every part fails: what a bug in a handler looks like."""

    @property
    def challenges(self) -> Any:
        raise RuntimeError("secret internals")


def test_unknown_routes_methods_and_bugs_answer_json() -> None:
    async def scenario() -> list[tuple[int, str, Any]]:
        async with TestClient(TestServer(create_app(_Broken()))) as client:  # type: ignore[arg-type]
            answers = []
            for method, path in (
                ("GET", "/v1/cdu/nope"),
                ("DELETE", "/v1/cdu/challenges"),
                ("GET", "/v1/cdu/challenges"),
            ):
                response = await client.request(method, path)
                answers.append((response.status, response.content_type, await response.json()))
            return answers

    (missing, method, bug) = asyncio.run(scenario())
    assert missing == (404, "application/json", {"error": "no route for GET /v1/cdu/nope"})
    assert method[:2] == (405, "application/json") and "DELETE" in method[2]["error"]
    assert bug[:2] == (500, "application/json") and "secret" not in bug[2]["error"]

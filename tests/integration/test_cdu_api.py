"""The CDU API over HTTP on the real broker: refusals name the problem (400, 404, 413), a
valid submission is a command on the submissions stream, queued until scored."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from agents.cdu.service import running_service
from agents.cdu.testing import cdu_config_dict
from firelake.config import parse_config
from streams.topics import ensure_topics

pytestmark = pytest.mark.kafka


async def _exercise(config) -> None:
    async with running_service(config, config.apps["cdu"], port=0) as (service, port):
        base = f"http://127.0.0.1:{port}/v1/cdu"
        good = {
            "student_id": "ada",
            "challenge_id": "fizzbuzz",
            "language": "python",
            "source": "def fizzbuzz(n):\n    return str(n)\n",
        }
        async with aiohttp.ClientSession() as http:

            async def post(body: bytes | dict) -> tuple[int, dict]:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                async with http.post(f"{base}/submissions", data=data) as answer:
                    return answer.status, await answer.json()

            async def get(path: str) -> tuple[int, dict]:
                async with http.get(f"{base}{path}") as answer:
                    return answer.status, await answer.json()

            status, body = await post(b"{not json")
            assert status == 400 and "not JSON" in body["error"]
            status, body = await post({**good, "challenge_id": "nope"})
            assert status == 404 and "unknown challenge_id 'nope'" in body["error"]
            status, body = await post({**good, "language": "cobol"})
            assert status == 400 and "'cobol' is not scored" in body["error"]
            status, body = await post({**good, "source": "x" * 100_000})
            assert status == 413 and "limit" in body["error"]
            status, body = await post(b"x" * 300_000)
            assert status == 413
            status, body = await get("/submissions/0123")
            assert status == 404 and "unknown submission" in body["error"]
            status, body = await get("/students/nobody")
            assert status == 404 and "no results yet" in body["error"]
            status, body = await get("/leaderboard?size=abc")
            assert status == 400 and "size" in body["error"]
            status, body = await get("/challenges/nope")
            assert status == 404
            status, body = await get("/challenges/fizzbuzz")
            assert status == 200 and body["xp"] == 50 and "reference" not in body
            status, body = await post({**good, "plan": "paid"})
            assert status == 202 and body["priority"] == "high", body
            status, queued = await get(f"/submissions/{body['submission_id']}")
            assert status == 200 and queued["status"] == "queued"
            # The command is on the submissions stream: the profile agent reads it back.
            for _ in range(100):
                if body["submission_id"] in service.queued and service.caught_up.is_set():
                    break
                await asyncio.sleep(0.1)
            assert service.caught_up.is_set()
            status, board = await get("/leaderboard?language=python")
            assert status == 200 and board == {"language": "python", "leaders": []}


def test_the_api_refuses_bad_requests_and_queues_good_ones(
    kafka_bootstrap: str, tmp_path: Path, suffix: str
) -> None:
    raw = cdu_config_dict(kafka_bootstrap, tmp_path / "lake", suffix)
    config = parse_config(raw, source="<test>", base_dir=str(tmp_path), environ={})
    ensure_topics(config, kafka_bootstrap)
    asyncio.run(_exercise(config))

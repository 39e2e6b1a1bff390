"""The shaped load generator against a real ingest that throttles: nothing lost or doubled."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from api.server import IngestServer
from firelake.config import FirelakeConfig
from firelake.testing import example_config
from streams.ingest import INGEST_KEY, RETRY_AFTER_SECONDS
from streams.loadgen import SendReport, send_shaped
from streams.loadshape import YleShape
from streams.topics import delete_topics

from .test_loadgen_ingest import events_on

pytestmark = pytest.mark.kafka


@pytest.fixture
def config(kafka_bootstrap: str, lake: Path, suffix: str) -> Iterator[FirelakeConfig]:
    cfg = example_config(kafka_bootstrap, lake, suffix, ingest={"port": 0})
    yield cfg
    delete_topics(kafka_bootstrap, list(cfg.streams))


def test_busy_ingest_answers_503_with_retry_after_and_the_sender_honours_it(
    config: FirelakeConfig,
) -> None:
    raw = next(iter(config.routers.values())).source
    partitions = config.streams[raw].partitions
    # A burst well above what one in-flight slot with no wait takes: most requests of the
    # burst are refused with 503 and sent again after Retry-After.
    shape = YleShape(duration=8.0, prime_rate=400.0, burst_rate=6_000.0, burst_seconds=2.0)

    async def main() -> tuple[SendReport, list[tuple], dict[str, str]]:
        async with IngestServer(config, port=0, max_inflight=1, slot_wait_s=0.0) as server:
            # A 503 names when to come back.
            async with aiohttp.ClientSession() as session:
                url = f"{server.url}/v1/streams/{raw}/records"
                body = orjson.dumps({"records": [{"data": {"n": 1}, "partition_key": "k"}]})
                assert server.app is not None
                async with server.app[INGEST_KEY].slot():
                    async with session.post(
                        url, data=body, headers={"content-type": "application/json"}
                    ) as response:
                        busy = {"status": str(response.status), **response.headers}
            report = await send_shaped(
                server.url, raw, shape, count=50_000, batch_size=100, concurrency=8, seed=7
            )
        found = await events_on(config.bootstrap, raw, partitions, report.accepted)
        return report, found, busy

    report, found, busy = asyncio.run(main())
    assert busy["status"] == "503" and busy["Retry-After"] == RETRY_AFTER_SECONDS
    assert report.sent > 0 and report.throttled_requests > 0
    assert report.accepted == report.sent and report.failed == report.rejected_events == 0
    # Every accepted event is on the raw stream once (the refused probe is not).
    ids = [orjson.loads(line).get("event_id") for _, _, line in found]
    ids = [i for i in ids if i]
    assert len(ids) == len(set(ids)) == report.accepted

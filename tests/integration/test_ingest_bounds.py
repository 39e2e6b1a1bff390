"""The ingest's connection bounds on the real broker: slow-header connections are closed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from api.server import IngestServer
from firelake.testing import example_config
from streams.topics import delete_topics

pytestmark = pytest.mark.kafka


def test_slow_header_connections_are_closed(kafka_bootstrap: str, lake: Path, suffix: str) -> None:
    """50 slowloris connections (a header line every 0.3 s) are closed by the header timeout;
    a well-behaved client is served meanwhile."""
    cfg = example_config(kafka_bootstrap, lake, suffix, ingest={"header_timeout_seconds": 1.0})

    async def slowloris_until_closed(host: str, port: int) -> float:
        # wait_for(read) raises TimeoutError while the connection stays open: keep going.
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /v1/streams/x/records HTTP/1.1\r\nHost: x\r\n")
        try:
            for n in range(40):
                try:
                    writer.write(f"X-Slow-{n}: y\r\n".encode())
                    await writer.drain()
                except ConnectionError:
                    break
                try:
                    if await asyncio.wait_for(reader.read(1), 0.3) == b"":
                        break
                except TimeoutError:
                    continue
                except ConnectionError:
                    break
        finally:
            writer.close()
        return time.monotonic() - started

    async def main() -> None:
        async with IngestServer(cfg, port=0) as server:
            host, port = server.host, server.port
            attack = [asyncio.create_task(slowloris_until_closed(host, port)) for _ in range(50)]
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/health") as r:
                    assert r.status == 200
            lasted = await asyncio.gather(*attack)
        # Closed after the 1 s header timeout (plus scheduling), long before 12 s.
        assert max(lasted) < 5.0, sorted(lasted)[-5:]

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        delete_topics(kafka_bootstrap, list(cfg.streams))


def test_metrics_count_requests_records_and_latency(
    kafka_bootstrap: str, lake: Path, suffix: str
) -> None:
    cfg = example_config(kafka_bootstrap, lake, suffix)
    raw = next(iter(cfg.routers.values())).source

    async def main() -> str:
        async with IngestServer(cfg, port=0) as server, aiohttp.ClientSession() as session:
            url = f"{server.url}/v1/streams/{raw}/records"
            records = [{"data": {"n": n}, "partition_key": f"k{n}"} for n in range(7)]
            async with session.post(url, json={"records": records}) as r:
                assert r.status == 200
            async with session.post(url, data=b"{}", headers={"Content-Type": "text/plain"}) as r:
                assert r.status == 415
            async with session.get(f"{server.url}/metrics") as r:
                assert r.status == 200
                return await r.text()

    try:
        text = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        delete_topics(kafka_bootstrap, list(cfg.streams))
    assert 'firelake_ingest_requests_total{api="native",status="200"} 1.0' in text
    assert 'firelake_ingest_requests_total{api="native",status="415"} 1.0' in text
    assert 'firelake_ingest_records_total{api="native",result="ok"} 7.0' in text
    assert 'firelake_ingest_request_seconds_count{api="native"} 2.0' in text
    assert "firelake_ingest_in_flight_requests 0.0" in text

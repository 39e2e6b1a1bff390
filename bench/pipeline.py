"""Full path (HTTP ingest -> raw stream -> router -> sink -> Parquet) vs a minimal loop.

Both run in one process invocation on the same events: the full path first, through the
real services started as child processes like ``firelake up`` does; then the minimal loop
(aiokafka ``getmany`` -> join lines -> ``pyarrow.json.read_json`` -> Parquet) over the very
raw-stream messages the full path ingested.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import orjson

from bench.harness import BenchResult, minimal_loop, scratch_dir
from firelake.broker import free_port
from firelake.config import load_config
from firelake.supervisor import Supervisor, pipeline_services
from firelake.testing import example_dict, sample_event, unique_suffix, wait_healthy, write_config
from queries.engine import QueryEngine
from streams.topics import ensure_topics

__all__ = ["run_pipeline_bench"]


def _bodies(first: int, count: int, batch: int) -> list[bytes]:
    bodies = []
    for start in range(first, first + count, batch):
        events = [sample_event(n) for n in range(start, min(start + batch, first + count))]
        records = [{"data": e, "partition_key": e["user_id"]} for e in events]
        bodies.append(orjson.dumps({"records": records}))
    return bodies


async def _post_all(url: str, bodies: list[bytes], concurrency: int) -> int:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    failed = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as r:
                answer = await r.json()
                if r.status != 200 or answer.get("failed_record_count"):
                    failed += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failed


def _lake_count(lake: Path) -> int:
    engine = QueryEngine(lake)
    total = 0
    for table in ("playback", "page"):
        try:
            total += int(engine.query(f"SELECT count(*) FROM {table}").rows[0][0])
        except Exception:  # table without files yet
            pass
    return total


def _wait_count(lake: Path, expected: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _lake_count(lake) >= expected:
            return time.perf_counter()
        time.sleep(0.2)
    raise TimeoutError(
        f"the lake did not reach {expected} events in {timeout:.0f}s (has {_lake_count(lake)})"
    )


def run_pipeline_bench(
    bootstrap: str, events: int = 200_000, concurrency: int = 4
) -> list[BenchResult]:
    """Measure the full path and the minimal loop on the same events; return both."""
    with scratch_dir("firelake-bench-") as tmp:
        suffix = unique_suffix()
        port = free_port()
        data = example_dict(bootstrap, tmp / "lake", suffix, ingest={"port": port})
        for sink in data["sinks"].values():
            sink["max_seconds"] = 1
            sink["max_events"] = 500_000
        path = write_config(tmp / "firelake.toml", data)
        config = load_config(path, environ={})
        ensure_topics(config, bootstrap)
        supervisor = Supervisor(pipeline_services(config, str(path), bootstrap))
        supervisor.start()
        try:
            base = f"http://127.0.0.1:{port}"
            if not wait_healthy(base):
                raise TimeoutError("the ingest did not become healthy")
            url = f"{base}/v1/streams/raw-events-{suffix}/records"
            # Warm-up: the router and sinks join their groups before the clock starts.
            warm = 1_000
            asyncio.run(_post_all(url, _bodies(10_000_000, warm, 500), 1))
            _wait_count(tmp / "lake", warm, 120)
            bodies = _bodies(0, events, 500)
            start = time.perf_counter()
            failed = asyncio.run(_post_all(url, bodies, concurrency))
            accepted = time.perf_counter()
            end = _wait_count(tmp / "lake", warm + events, 300)
            full = BenchResult(
                "full path: HTTP ingest -> raw -> router -> sink -> Parquet",
                events,
                end - start,
                {"ingest accepted in": f"{accepted - start:.2f}s", "failed requests": str(failed)},
            )
        finally:
            supervisor.stop()
        out = tmp / "minimal"
        out.mkdir()
        minimal = asyncio.run(
            minimal_loop(
                bootstrap,
                f"raw-events-{suffix}",
                warm + events,
                out,
                partition_fetch_bytes=16 * 1024 * 1024,
            )
        )
        return [full, minimal]

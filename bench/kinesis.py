"""Kinesis PutRecords through the ingest vs the same events produced straight to Kafka.

``python -m bench.kinesis [--events N] [--concurrency C]`` prints a Markdown section for
BENCHMARKS.md. Two paths over the same ~200-byte JSON events:

* **PutRecords via the AWS endpoint**: the ingest runs as its own process (as
  ``firelake ingest`` does); C concurrent light HTTP clients (aiohttp, unsigned — boto3
  spends more time signing than the server spends on a request) post pre-built
  ``Kinesis_20131202.PutRecords`` bodies of 500 records each.
* **aiokafka direct**: the fastest Python producer available here (aiokafka with
  ``create_batch`` / ``send_batch`` per partition, acks=all), one Kafka message per event,
  as a producer without Firelake would write them.

Bounded: each path sends exactly ``--events`` events and has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from bench.harness import BenchResult, broker, render_markdown, scratch_dir
from firelake.testing import example_dict, sample_event, unique_suffix, write_config
from streams.partitioning import partition_for_key
from streams.topics import MAX_MESSAGE_BYTES, delete_topics

__all__ = ["main", "run_kinesis_bench"]

RECORDS_PER_CALL = 500
PARTITIONS = 4
DEADLINE_S = 600.0


def _events(count: int) -> list[tuple[bytes, str]]:
    """~200-byte compact JSON events with their partition keys."""
    out = []
    for n in range(count):
        event = sample_event(n, "page_view")
        out.append((orjson.dumps(event), event["user_id"]))
    return out


def _bodies(stream: str, events: list[tuple[bytes, str]]) -> list[bytes]:
    bodies = []
    for start in range(0, len(events), RECORDS_PER_CALL):
        chunk = events[start : start + RECORDS_PER_CALL]
        records = [
            {"Data": base64.b64encode(data).decode(), "PartitionKey": key} for data, key in chunk
        ]
        bodies.append(orjson.dumps({"StreamName": stream, "Records": records}))
    return bodies


async def _post_all(url: str, bodies: list[bytes], concurrency: int) -> int:
    """Post every body with ``concurrency`` clients; returns records that failed."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    failed = 0
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "Kinesis_20131202.PutRecords",
    }

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(url, data=body, headers=headers) as response:
                answer = orjson.loads(await response.read())
                if response.status != 200:
                    raise RuntimeError(f"PutRecords answered {response.status}: {answer}")
                failed += answer["FailedRecordCount"]

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.wait_for(
            asyncio.gather(*(client(session) for _ in range(concurrency))), DEADLINE_S
        )
    return failed


async def _direct(bootstrap: str, topic: str, events: list[tuple[bytes, str]]) -> None:
    """One message per event, batched per partition by hand (aiokafka's fastest path)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=1024 * 1024,
        max_request_size=MAX_MESSAGE_BYTES,
    )
    await producer.start()
    try:
        pending = []
        batches = {p: producer.create_batch() for p in range(PARTITIONS)}
        for data, key in events:
            partition = partition_for_key(key, PARTITIONS)
            batch = batches[partition]
            if batch.append(key=key.encode(), value=data, timestamp=None) is None:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key.encode(), value=data, timestamp=None)
        for partition, batch in batches.items():
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.wait_for(asyncio.gather(*pending), DEADLINE_S)
    finally:
        await producer.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the ingest exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("the ingest did not become healthy")


def run_kinesis_bench(bootstrap: str, events: int, concurrency: int = 16) -> list[BenchResult]:
    """Both paths over ``events`` events; returns their results (direct path first)."""
    suffix = unique_suffix()
    stream = f"raw-events-{suffix}"
    direct_topic = f"bench-direct-{suffix}"
    data = _events(events)
    bodies = _bodies(stream, data)
    results: list[BenchResult] = []
    with scratch_dir("firelake-bench-kinesis-") as scratch:
        port = _free_port()
        raw = example_dict(
            bootstrap,
            scratch / "lake",
            suffix,
            ingest={"port": port},
            streams={"raw-events": {"partitions": PARTITIONS}},
        )
        # Only the raw stream: no routers or sinks compete for the two cores.
        raw["streams"] = {k: v for k, v in raw["streams"].items() if k == stream}
        raw["routers"], raw["sinks"], raw["schemas"] = {}, {}, {}
        config_file = write_config(scratch / "firelake.toml", raw)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        ingest = subprocess.Popen(
            [sys.executable, "-m", "firelake.cli", "ingest", "--config", str(config_file)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, ingest)
            # Warm up: the AWS endpoint starts its registry reader on the first request.
            asyncio.run(_post_all(url + "/", bodies[:2], 1))
            start = time.perf_counter()
            failed = asyncio.run(_post_all(url + "/", bodies, concurrency))
            seconds = time.perf_counter() - start
            results.append(
                BenchResult(
                    "PutRecords via the AWS endpoint",
                    events,
                    seconds,
                    {
                        "calls": f"{len(bodies)} x {RECORDS_PER_CALL} records",
                        "clients": str(concurrency),
                        "failed": str(failed),
                    },
                )
            )
        finally:
            ingest.terminate()
            ingest.wait(30)
        from firelake.config import FirelakeConfig, StreamConfig
        from streams.topics import ensure_topics

        ensure_topics(
            FirelakeConfig(streams={direct_topic: StreamConfig(direct_topic, PARTITIONS)}),
            bootstrap,
        )
        start = time.perf_counter()
        asyncio.run(_direct(bootstrap, direct_topic, data))
        seconds = time.perf_counter() - start
        results.insert(
            0,
            BenchResult(
                "aiokafka direct (1 message per event)",
                events,
                seconds,
                {"producer": "create_batch/send_batch, acks=all"},
            ),
        )
        delete_topics(bootstrap, [stream, direct_topic])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kinesis", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events per path")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent HTTP clients")
    args = parser.parse_args()
    with broker() as bootstrap:
        results = run_kinesis_bench(bootstrap, args.events, args.concurrency)
    print(
        render_markdown(
            "Kinesis PutRecords through the ingest vs direct to Kafka (issue 3)",
            results,
            baseline=results[0].name,
        )
    )


if __name__ == "__main__":
    main()

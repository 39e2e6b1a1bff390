"""Router throughput vs a plain aiokafka loop, on the same raw data (issue 4).

``python -m bench.router [--events N]`` fills a 6-partition raw stream with ingest-shaped
envelopes (500 events per request, one envelope per partition), then measures

- **router**: one :class:`agents.router.RouterWorker` (validation, enrichment, idempotency
  window, routing, envelopes, one Kafka transaction per partition batch);
- **plain loop**: one aiokafka consumer that decodes the envelopes and produces every event
  to its destination topic (by event type, no validation), committing per batch.

Both are timed from their first record to their last commit (group join excluded) and the
Markdown table gives the ratio (target >= 0.5; >= 50 000 events/s per router worker).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.router import RouterWorker
from bench.harness import BenchResult, broker, render_markdown, scratch_dir
from firelake.config import load_config
from firelake.testing import example_data, example_dict, sample_event, unique_suffix, write_config
from streams.envelope import decode, encode
from streams.partitioning import partition_for_key
from streams.topics import delete_topics, ensure_topics

__all__ = ["main", "run_router_bench"]

PARTITIONS = 6


async def _fill(bootstrap: str, topic: str, events: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    try:
        for first in range(0, events, 500):
            groups: dict[int, tuple[list[bytes], list[str]]] = {}
            for n in range(first, min(first + 500, events)):
                event = sample_event(n)
                lines, keys = groups.setdefault(
                    partition_for_key(event["user_id"], PARTITIONS), ([], [])
                )
                lines.append(orjson.dumps(event))
                keys.append(event["user_id"])
            for partition, (lines, keys) in groups.items():
                value, headers = encode(lines, keys)
                await producer.send(topic, value, partition=partition, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


async def _router(config_path: Path, name: str, bootstrap: str, events: int) -> BenchResult:
    config = load_config(config_path, environ={})
    worker = RouterWorker(config, name, bootstrap)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    stats = worker.router.stats
    first = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        if first is None and stats.events_in:
            first = time.perf_counter()
        if stats.events_in >= events and not worker.pending and not worker.lock.locked():
            break
    seconds = time.perf_counter() - (first or time.perf_counter())
    stop.set()
    await task
    return BenchResult(
        "router worker",
        stats.events_in,
        seconds,
        {"batches": str(worker.edge.batches), "routed": str(stats.routed)},
    )


async def _plain(bootstrap: str, source: str, targets: dict[str, str], events: int) -> BenchResult:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"bench-plain-{unique_suffix()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1024 * 1024, acks="all"
    )
    await consumer.start()
    await producer.start()
    seen, first = 0, None
    try:
        deadline = time.monotonic() + 600
        while seen < events and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            if batches and first is None:
                first = time.perf_counter()
            for records in batches.values():
                for record in records:
                    envelope = decode(record.value, record.headers, record.key)
                    for index, line in enumerate(envelope.lines):
                        # Destination by a byte search: no parsing, no routing logic.
                        target = targets["page"] if b'"page"' in line else targets["playback"]
                        key = envelope.key_at(index)
                        await producer.send(target, line, key=key.encode() if key else None)
                    seen += len(envelope.lines)
            if batches:
                await producer.flush()
                await consumer.commit()
        seconds = time.perf_counter() - (first or time.perf_counter())
    finally:
        await producer.stop()
        await consumer.stop()
    return BenchResult("plain aiokafka loop", seen, seconds, {"one message per event": "yes"})


def run_router_bench(bootstrap: str, events: int) -> list[BenchResult]:
    """Both paths on the same raw stream; the router first, then the plain loop."""
    suffix = unique_suffix()
    data = example_data()
    data["streams"]["raw-events"]["partitions"] = PARTITIONS
    with scratch_dir("firelake-bench-router-") as folder:
        path = write_config(
            folder / "firelake.toml", example_dict(bootstrap, folder, suffix, data=data)
        )
        config = load_config(path, environ={})
        ensure_topics(config, bootstrap)
        name = next(iter(config.routers))
        spec = config.routers[name]
        try:
            asyncio.run(_fill(bootstrap, spec.source, events))
            router = asyncio.run(_router(path, name, bootstrap, events))
            targets = {"playback": spec.routes["start"][0], "page": spec.routes["click"][0]}
            plain = asyncio.run(_plain(bootstrap, spec.source, targets, events))
        finally:
            delete_topics(bootstrap, config.streams)
    return [router, plain]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.router", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events in the raw stream")
    args = parser.parse_args()
    with broker() as bootstrap:
        results = run_router_bench(bootstrap, args.events)
    print(render_markdown("Router vs plain aiokafka loop (issue 4)", results, results[1].name))


if __name__ == "__main__":
    main()

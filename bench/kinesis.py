"""Kinesis PutRecords through the ingest vs the same events produced straight to Kafka.

``python -m bench.kinesis [--events N] [--concurrency C] [--runs R] [--workers W]`` prints
a Markdown section for BENCHMARKS.md. Two paths over the same ~200-byte JSON events,
measured side by side in each of R runs (direct first, then the endpoint, fresh topics):

* **aiokafka direct**: the fastest Python producer available here (aiokafka with
  ``create_batch`` / ``send_batch`` per partition, acks=all, idempotent), one Kafka message
  per event, as a producer without Firelake would write them. The producer is started
  before the clock starts, as a long-running producer would be.
* **PutRecords via the AWS endpoint**: the ingest runs as its own processes, as
  ``firelake up`` runs ``[ingest] workers`` of them on one port (``--workers``). The load
  is a separate *light* client process, so that it steals little of the two cores (a
  producer fleet on other machines would steal none):
  the HTTP requests (unsigned ``Kinesis_20131202.PutRecords`` of 500 records each; boto3
  spends more time signing than the server spends on a request) are built before the
  clock starts and sent as raw bytes over C keep-alive connections, and an answer is
  checked without parsing its 500 entries (status 200, ``FailedRecordCount`` read from
  the head of the body, one ``SequenceNumber`` per record counted). The client reports
  its own CPU time, and the ingest's CPU time is read from ``/proc``, so the table shows
  where the two cores went.

Bounded: each path sends exactly ``--events`` events and has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import resource
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.cpu import cpu_seconds, descendants
from bench.harness import BenchResult, broker, render_markdown, scratch_dir
from firelake.broker import free_port
from firelake.testing import example_dict, sample_event, unique_suffix, wait_healthy, write_config
from streams.partitioning import partition_for_key
from streams.topics import MAX_MESSAGE_BYTES, delete_topics

__all__ = ["main", "run_kinesis_bench"]

RECORDS_PER_CALL = 500
PARTITIONS = 4
DEADLINE_S = 600.0
#: The head of a PutRecords answer that holds FailedRecordCount (orjson writes it first,
#: but the check does not rely on that: it searches this many leading bytes).
_ANSWER_HEAD = 256
_FAILED_RE = re.compile(rb'"FailedRecordCount"\s*:\s*(\d+)')


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


def _http_request(port: int, body: bytes) -> bytes:
    """One whole HTTP/1.1 PutRecords request, as bytes on the wire."""
    head = (
        "POST / HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-amz-json-1.1\r\n"
        "X-Amz-Target: Kinesis_20131202.PutRecords\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


def _write_requests(path: Path, requests: list[bytes]) -> None:
    with path.open("wb") as out:
        for request in requests:
            out.write(struct.pack(">I", len(request)))
            out.write(request)


def _read_requests(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, at = [], 0
    while at < len(data):
        (size,) = struct.unpack_from(">I", data, at)
        out.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return out


# --------------------------------------------------------------------------- light client


async def _client_loop(port: int, requests: list[bytes], concurrency: int) -> tuple[int, int]:
    """Send every request over ``concurrency`` connections; (failed records, answers)."""
    queue = list(reversed(requests))
    failed = answered = 0

    async def connection() -> None:
        nonlocal failed, answered
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                request = queue.pop()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = head[9:12]
                match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
                if match is None:
                    raise RuntimeError(f"answer without Content-Length: {head[:200]!r}")
                body = await reader.readexactly(int(match[1]))
                if status != b"200":
                    raise RuntimeError(f"PutRecords answered {status.decode()}: {body[:300]!r}")
                found = _FAILED_RE.search(body, 0, _ANSWER_HEAD)
                if found is None or body.count(b'"SequenceNumber"') + int(found[1]) != (
                    RECORDS_PER_CALL
                ):
                    raise RuntimeError(f"unexpected PutRecords answer: {body[:300]!r}")
                failed += int(found[1])
                answered += 1
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(connection() for _ in range(concurrency))), DEADLINE_S)
    return failed, answered


def _client_main(port: int, requests_file: Path, concurrency: int) -> None:
    """The load client process: times itself and prints a JSON report on stdout."""
    requests = _read_requests(requests_file)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    failed, answered = asyncio.run(_client_loop(port, requests, concurrency))
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report = {"seconds": seconds, "cpu": cpu, "failed": failed, "answered": answered}
    sys.stdout.write(orjson.dumps(report).decode() + "\n")


# --------------------------------------------------------------------------- paths


async def _direct(bootstrap: str, topic: str, events: list[tuple[bytes, str]]) -> float:
    """One message per event, batched per partition by hand (aiokafka's fastest path).

    Returns the seconds from the first send to the last ack (the producer's start and
    stop are outside the clock, as for the ingest, which is started before its run).
    """
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
        await producer.partitions_for(topic)
        start = time.perf_counter()
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
        return time.perf_counter() - start
    finally:
        await producer.stop()


@dataclass
class _Run:
    direct_s: float
    endpoint_s: float
    failed: int
    client_cpu_s: float
    ingest_cpu_s: float


def _run_client(
    port: int, requests_file: Path, concurrency: int, env: dict[str, str]
) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.kinesis",
            "--client-port",
            str(port),
            "--client-requests",
            str(requests_file),
            "--concurrency",
            str(concurrency),
        ],
        env=env,
        capture_output=True,
        timeout=DEADLINE_S + 60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load client failed: {done.stderr.decode()[-2000:]}")
    report: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return report


def run_kinesis_bench(
    bootstrap: str, events: int, concurrency: int = 8, runs: int = 3, workers: int = 2
) -> list[BenchResult]:
    """Both paths over ``events`` events, ``runs`` times side by side.

    Returns two results (direct path first), each the run with the median endpoint rate,
    with every run's rate and ratio in the notes so the spread is visible.
    """
    from firelake.config import FirelakeConfig, StreamConfig
    from streams.topics import ensure_topics

    suffix = unique_suffix()
    stream = f"raw-events-{suffix}"
    data = _events(events)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    measured: list[_Run] = []
    with scratch_dir("firelake-bench-kinesis-") as scratch:
        port = free_port()
        ingest_settings: dict[str, object] = {"port": port}
        if workers > 1:
            ingest_settings["workers"] = workers
        raw = example_dict(
            bootstrap,
            scratch / "lake",
            suffix,
            ingest=ingest_settings,
            streams={"raw-events": {"partitions": PARTITIONS}},
        )
        # Only the raw stream: no routers or sinks compete for the two cores.
        raw["streams"] = {k: v for k, v in raw["streams"].items() if k == stream}
        raw["routers"], raw["sinks"], raw["schemas"] = {}, {}, {}
        raw.pop("windows", None)  # window agents read streams this run does not have
        config_file = write_config(scratch / "firelake.toml", raw)
        requests_file = scratch / "requests.bin"
        _write_requests(requests_file, [_http_request(port, b) for b in _bodies(stream, data)])
        warmup_file = scratch / "warmup.bin"
        _write_requests(
            warmup_file, [_http_request(port, b) for b in _bodies(stream, data[: 64 * 500])]
        )
        # As `firelake up` runs them: one process per worker, all on the one port.
        ingests = [
            subprocess.Popen(
                [sys.executable, "-m", "firelake.cli", "ingest", "--config", str(config_file)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        direct_topics: list[str] = []
        try:
            url = f"http://127.0.0.1:{port}"
            for ingest in ingests:
                if not wait_healthy(url, ingest):
                    raise TimeoutError("the ingest did not become healthy")
            # Warm up: the AWS endpoint starts its registry reader on the first request
            # (in every worker: the kernel spreads the warm-up connections over them).
            _run_client(port, warmup_file, 4 * workers, env)
            for run in range(runs):
                topic = f"bench-direct-{suffix}-{run}"
                direct_topics.append(topic)
                ensure_topics(
                    FirelakeConfig(streams={topic: StreamConfig(topic, PARTITIONS)}), bootstrap
                )
                direct_s = asyncio.run(_direct(bootstrap, topic, data))
                pids = [pid for ingest in ingests for pid in descendants(ingest.pid)]
                cpu_before = cpu_seconds(pids)
                report = _run_client(port, requests_file, concurrency, env)
                ingest_cpu = cpu_seconds(pids) - cpu_before
                if report["answered"] * RECORDS_PER_CALL < events:
                    raise RuntimeError(f"the client got {report['answered']} answers")
                measured.append(
                    _Run(direct_s, report["seconds"], report["failed"], report["cpu"], ingest_cpu)
                )
        finally:
            for ingest in ingests:
                ingest.terminate()
            for ingest in ingests:
                ingest.wait(30)
            delete_topics(bootstrap, [stream, *direct_topics])
    return _summarise(measured, events, concurrency, workers)


def _summarise(runs: list[_Run], events: int, concurrency: int, workers: int) -> list[BenchResult]:
    ratios = [r.direct_s / r.endpoint_s for r in runs]
    order = sorted(range(len(runs)), key=lambda i: runs[i].endpoint_s)
    median = runs[order[len(order) // 2]]
    endpoint_rates = [events / r.endpoint_s for r in runs]
    direct_rates = [events / r.direct_s for r in runs]

    def spread(values: list[float], fmt: str) -> str:
        return f"{min(values):{fmt}} to {max(values):{fmt}} over {len(values)} runs"

    calls = -(-events // RECORDS_PER_CALL)
    return [
        BenchResult(
            "aiokafka direct (1 message per event)",
            events,
            median.direct_s,
            {
                "producer": "create_batch/send_batch, acks=all, idempotent",
                "events/s": spread(direct_rates, ",.0f"),
            },
        ),
        BenchResult(
            "PutRecords via the AWS endpoint",
            events,
            median.endpoint_s,
            {
                "calls": f"{calls} x {RECORDS_PER_CALL} records",
                "clients": str(concurrency),
                "ingest workers": str(workers),
                "failed": str(sum(r.failed for r in runs)),
                "events/s": spread(endpoint_rates, ",.0f"),
                "ratio per run": ", ".join(f"{x:.2f}" for x in ratios),
                "median ratio": f"{statistics.median(ratios):.2f}",
                "load client CPU": f"{median.client_cpu_s / median.endpoint_s:.0%} of a core",
                "ingest CPU": f"{median.ingest_cpu_s / median.endpoint_s:.0%} of a core",
            },
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kinesis", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events per path and run")
    parser.add_argument("--concurrency", type=int, default=8, help="HTTP connections")
    parser.add_argument("--runs", type=int, default=3, help="side-by-side runs")
    # Two: on this 2-core box one ingest process is CPU-bound below what the broker takes
    # (measured: ~0.4 of the direct path with 1, ~0.7 with 2); `[ingest] workers = 2`.
    parser.add_argument(
        "--workers", type=int, default=2, help="ingest processes ([ingest] workers)"
    )
    # The load client's own process (started by the benchmark, not by hand).
    parser.add_argument("--client-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client-requests", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_port is not None:
        _client_main(args.client_port, args.client_requests, args.concurrency)
        return
    with broker() as bootstrap:
        results = run_kinesis_bench(
            bootstrap, args.events, args.concurrency, args.runs, args.workers
        )
    print(
        render_markdown(
            "Kinesis PutRecords through the ingest vs direct to Kafka (issue 3)",
            results,
            baseline=results[0].name,
        )
    )


if __name__ == "__main__":
    main()

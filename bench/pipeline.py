"""Full path (HTTP ingest -> raw stream -> router -> sink -> Parquet) vs a minimal loop,
with the CPU each stage spends per event.

``python -m bench.pipeline [--events N | --rate R --seconds S] [--engine faust]`` prints a
Markdown section for BENCHMARKS.md. Both paths run in one invocation on the same events:
the full path first, through the real services started as child processes like
``firelake up`` does (ingest, router, sinks; no window agents); then the minimal loop
(aiokafka ``getmany`` -> join lines -> ``pyarrow.json.read_json`` -> Parquet) over the very
raw-stream messages the full path ingested.

The load is a separate *light* client process (raw HTTP/1.1 over keep-alive connections,
bodies of 500 events stamped with fresh event ids from a few templates, the answer checked
from its head), so the services are measured, not the client. With ``--rate`` it paces
requests to that many events/s (sustained-rate mode); else it sends as fast as answers come.
Every process's CPU time is read from ``/proc`` before and after the timed section
(``bench.cpu``): ingest, router, sinks, broker, the load client, and this process (which
polls DuckDB for the count) — the per-event µs figure is what to steer by on a shared box.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.cpu import StageMeter, cpu_seconds, descendants, listening_pid
from bench.harness import BenchResult, broker, minimal_loop, render_markdown, scratch_dir
from bench.profiles import ProfileRecorder, render_top_costs
from firelake.broker import free_port
from firelake.config import load_config
from firelake.supervisor import Supervisor, pipeline_services
from firelake.testing import example_dict, sample_event, unique_suffix, wait_healthy, write_config
from queries.engine import QueryEngine
from streams.topics import ensure_topics

__all__ = ["main", "run_pipeline_bench", "start_pipeline"]

RECORDS_PER_CALL = 500
TEMPLATES = 16
DEADLINE_S = 600.0
#: Replaced in a template body by the request's number: every event id stays unique.
_STAMP = b"QQQQQQQQ"
_FAILED_RE = re.compile(rb'"failed_record_count"\s*:\s*(\d+)')
_RETRY_RE = re.compile(rb"\r\nretry-after:\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_LENGTH_RE = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


def _templates() -> list[bytes]:
    """Request bodies with a placeholder in every event id (a mix of Yle event types)."""
    bodies = []
    for t in range(TEMPLATES):
        records = []
        for i in range(RECORDS_PER_CALL):
            event = sample_event(t * RECORDS_PER_CALL + i)
            event["event_id"] = f"evt-{_STAMP.decode()}-{t:02d}{i:03d}"
            records.append({"data": event, "partition_key": event["user_id"]})
        bodies.append(orjson.dumps({"records": records}))
    return bodies


# --------------------------------------------------------------------------- light client


async def _client_loop(
    port: int, path: str, calls: int, first: int, concurrency: int, rate: float
) -> dict[str, Any]:
    """Send ``calls`` requests over ``concurrency`` connections, paced to ``rate`` events/s
    (0: as fast as answers come); a 503 is retried after its Retry-After."""
    templates = _templates()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    next_call = 0
    failed = throttled = 0
    start = time.perf_counter()
    interval = RECORDS_PER_CALL / rate if rate > 0 else 0.0

    async def connection() -> None:
        nonlocal next_call, failed, throttled
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_call < calls:
                k = next_call
                next_call += 1
                if interval:
                    delay = start + k * interval - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                number = first + k
                body = templates[number % TEMPLATES].replace(_STAMP, b"%08d" % number)
                request = head + str(len(body)).encode() + b"\r\n\r\n" + body
                while True:
                    writer.write(request)
                    answer = await reader.readuntil(b"\r\n\r\n")
                    length = _LENGTH_RE.search(answer)
                    if length is None:
                        raise RuntimeError(f"answer without Content-Length: {answer[:200]!r}")
                    payload = await reader.readexactly(int(length[1]))
                    status = answer[9:12]
                    if status == b"503":
                        throttled += 1
                        wait = _RETRY_RE.search(answer)
                        await asyncio.sleep(float(wait[1]) if wait else 0.1)
                        continue
                    if status != b"200":
                        raise RuntimeError(f"ingest answered {status.decode()}: {payload[:300]!r}")
                    found = _FAILED_RE.search(payload, 0, 64)
                    if found is None:
                        raise RuntimeError(f"unexpected answer: {payload[:300]!r}")
                    failed += int(found[1])
                    break
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(connection() for _ in range(concurrency))), DEADLINE_S)
    return {
        "seconds": time.perf_counter() - start,
        "failed": failed,
        "throttled": throttled,
    }


def _client_main(args: argparse.Namespace) -> None:
    """The load client process: times itself and prints a JSON report on stdout."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    before = resource.getrusage(resource.RUSAGE_SELF)
    report = asyncio.run(
        _client_loop(
            args.client_port,
            args.client_path,
            args.calls,
            args.first,
            args.concurrency,
            args.rate,
        )
    )
    after = resource.getrusage(resource.RUSAGE_SELF)
    report["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sys.stdout.write(orjson.dumps(report).decode() + "\n")


def _run_client(
    port: int, path: str, calls: int, first: int, concurrency: int, rate: float
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    argv = [sys.executable, "-m", "bench.pipeline", "--client-port", str(port)]
    argv += ["--client-path", path, "--calls", str(calls), "--first", str(first)]
    argv += ["--concurrency", str(concurrency), "--rate", str(rate)]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=DEADLINE_S + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the load client failed: {done.stderr.decode()[-2000:]}")
    report: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return report


# --------------------------------------------------------------------------- full path


def _lake_count(lake: Path) -> int:
    engine = QueryEngine(lake)  # a fresh catalog: tables appear with their first files
    total = 0
    for table in ("playback", "page"):
        try:
            total += int(engine.query(f"SELECT count(*) FROM {table}").rows[0][0])
        except Exception:  # table without files yet
            pass
    return total


def _wait_count(lake: Path, expected: int, timeout: float, poll_s: float = 0.25) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _lake_count(lake) >= expected:
            return time.perf_counter()
        time.sleep(poll_s)
    raise TimeoutError(
        f"the lake did not reach {expected} events in {timeout:.0f}s (has {_lake_count(lake)})"
    )


def _stage_pids(supervisor: Supervisor, bootstrap: str) -> dict[str, list[int]]:
    stages: dict[str, list[int]] = {"ingest": [], "router": [], "sinks": []}
    for child in supervisor.children:
        stage = child.spec.name.split(":", 1)[0]
        if stage in stages and child.process is not None:
            stages[stage] += descendants(child.process.pid)
    broker_pid = listening_pid(int(bootstrap.rsplit(":", 1)[1]))
    if broker_pid is not None:
        stages["broker"] = [broker_pid]
    return stages


def _targets(router: dict[str, Any]) -> set[str]:
    """The streams a router's configuration sends to (routes, rules, its DLQ)."""
    out = {router["dlq"]} if router.get("dlq") else set()
    for targets in router.get("routes", {}).values():
        out |= {targets} if isinstance(targets, str) else set(targets)
    for rule in router.get("rules", []):
        targets = rule.get("streams", ())
        out |= {targets} if isinstance(targets, str) else set(targets)
    return out


def start_pipeline(
    bootstrap: str,
    tmp: Path,
    sink_settings: dict[str, Any] | None = None,
    router_settings: dict[str, Any] | None = None,
) -> tuple[str, int, Supervisor]:
    """The example's HTTP -> Parquet path (no window agents, nor their streams and sinks)
    as ``firelake up`` runs it, with settings over every sink and router; (the names'
    suffix, the ingest's port, the started supervisor) once the ingest is healthy."""
    suffix = unique_suffix()
    port = free_port()
    data = example_dict(bootstrap, tmp / "lake", suffix, ingest={"port": port})
    data.pop("windows", None)
    routed = {s for r in data["routers"].values() for s in _targets(r)}
    data["sinks"] = {k: v for k, v in data["sinks"].items() if v["stream"] in routed}
    for sink in data["sinks"].values():
        sink.update(sink_settings or {})
    for router in data["routers"].values():
        router.update(router_settings or {})
    path = write_config(tmp / "firelake.toml", data)
    config = load_config(path, environ={})
    ensure_topics(config, bootstrap)
    supervisor = Supervisor(pipeline_services(config, str(path), bootstrap))
    supervisor.start()
    if not wait_healthy(f"http://127.0.0.1:{port}"):
        supervisor.stop()
        raise TimeoutError("the ingest did not become healthy")
    return suffix, port, supervisor


def run_pipeline_bench(
    bootstrap: str,
    events: int = 200_000,
    concurrency: int = 4,
    rate: float = 0.0,
    engine: str = "transactional",
    profile: Path | None = None,
    flush_seconds: float = 1.0,
    router_settings: dict[str, Any] | None = None,
    warmup_events: int = 50_000,
) -> list[BenchResult]:
    """Measure the full path and the minimal loop on the same events; return both, each
    with its CPU seconds by stage."""
    calls = -(-events // RECORDS_PER_CALL)
    events = calls * RECORDS_PER_CALL
    with scratch_dir("firelake-bench-") as tmp:
        sinks = {"max_seconds": flush_seconds, "max_events": 500_000}
        routers = {"engine": engine, **(router_settings or {})}
        suffix, port, supervisor = start_pipeline(bootstrap, tmp, sinks, routers)
        try:
            url_path = f"/v1/streams/raw-events-{suffix}/records"
            # Warm-up: the router and sinks join their groups before the clock starts, and
            # a fresh broker's JIT compilers (C1/C2 threads: over a third of its CPU in a
            # short cold run) finish the hot paths — a long-running broker pays that once.
            warm_calls = max(2, min(warmup_events, events) // RECORDS_PER_CALL)
            warm = warm_calls * RECORDS_PER_CALL
            _run_client(port, url_path, warm_calls, 90_000_000, concurrency, 0.0)
            _wait_count(tmp / "lake", warm, 180)
            meter = StageMeter(_stage_pids(supervisor, bootstrap))
            recorder = None
            if profile is not None:
                mains = {
                    c.spec.name.replace(":", "-"): c.process.pid
                    for c in supervisor.children
                    if c.process is not None and not c.spec.name.startswith("queries")
                }
                guess = events / rate if rate else events / 20_000
                recorder = ProfileRecorder(profile, mains, seconds=min(60.0, guess))
                recorder.start()
            own_before = cpu_seconds([os.getpid()])
            meter.start()
            start = time.perf_counter()
            report = _run_client(port, url_path, calls, 0, concurrency, rate)
            accepted = time.perf_counter()
            end = _wait_count(tmp / "lake", warm + events, 300, poll_s=0.5)
            meter.stop()
            if recorder is not None:
                recorder.wait()
            meter.add("load client", report["cpu"])
            meter.add("harness (DuckDB polls)", cpu_seconds([os.getpid()]) - own_before)
            notes = {
                "engine": engine,
                **{f"router {k}": str(v) for k, v in (router_settings or {}).items()},
                "sink max_seconds": f"{flush_seconds:g}",
                "ingest accepted in": f"{accepted - start:.2f}s",
                "failed records": str(report["failed"]),
                "503 answers": str(report["throttled"]),
            }
            if rate:
                notes["target rate"] = f"{rate:,.0f}/s"
            full = BenchResult(
                "full path: HTTP ingest -> raw -> router -> sink -> Parquet",
                events,
                end - start,
                notes,
                cpu=dict(meter.spent),
            )
        finally:
            supervisor.stop()
        out = tmp / "minimal"
        out.mkdir()
        broker_pids = meter.stages.get("broker", [])
        broker_before = cpu_seconds(broker_pids)
        own_before = cpu_seconds([os.getpid()])
        minimal = asyncio.run(
            minimal_loop(
                bootstrap,
                f"raw-events-{suffix}",
                warm + events,
                out,
                partition_fetch_bytes=16 * 1024 * 1024,
            )
        )
        minimal.cpu = {
            "consume -> Parquet loop": cpu_seconds([os.getpid()]) - own_before,
            "broker": cpu_seconds(broker_pids) - broker_before,
        }
        return [full, minimal]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events to send")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="pace the load to this many events/s (0: max)"
    )
    parser.add_argument(
        "--seconds", type=float, default=0.0, help="with --rate: send rate x seconds events"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="HTTP connections")
    parser.add_argument("--engine", default="transactional", choices=["transactional", "faust"])
    parser.add_argument(
        "--profile", type=Path, help="record each stage with py-spy into this folder"
    )
    # The load client's own process (started by the benchmark, not by hand).
    parser.add_argument("--client-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client-path", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_port is not None:
        _client_main(args)
        return
    events = int(args.rate * args.seconds) if args.rate and args.seconds else args.events
    with broker() as bootstrap:
        results = run_pipeline_bench(
            bootstrap, events, args.concurrency, args.rate, args.engine, args.profile
        )
    print(
        render_markdown(
            "Full path vs minimal loop (issues 2 and 15)", results, baseline=results[1].name
        )
    )
    if args.profile is not None:
        print(render_top_costs(args.profile))


if __name__ == "__main__":
    main()

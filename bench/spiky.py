"""Yle's spiky day through the whole pipeline: loss, freshness, ingest memory, CPU per stage.

``python -m bench.spiky [--duration S] [--scale X] [--count N] [--concurrency C]`` runs the
pipeline (ingest, router, sinks; the sinks with their default buffering) and drives it with
``firelake send --profile yle``'s sender (:func:`streams.loadgen.send_shaped`) in its own
process: a day in ``--duration`` seconds, prime time at ~10 000 events/s and bursts of
~42 000 events/s (times ``--scale``), with more connections than the ingest has in-flight
slots, so a burst above capacity meets throttling (503 + Retry-After, honoured).

It reports: events the shape asked for, sent, accepted, throttled; whether every accepted
event is in the lake (none lost, none doubled, by event id); freshness — for every row,
its file's time of writing minus the row's ``receive_time`` (the ingest's arrival stamp), p50
and p99; the ingest's peak resident memory (sampled twice a second); CPU per stage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench.cpu import StageMeter, render_stage_table
from bench.harness import broker, scratch_dir
from bench.pipeline import _stage_pids, start_pipeline
from firelake.config import load_config

__all__ = ["main", "run_spiky_bench"]

TABLES = ("playback", "page")


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _RssSampler(threading.Thread):
    """Peak and last RSS of some processes, sampled every ``interval`` seconds."""

    def __init__(self, pids: list[int], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.peak = self.first = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            rss = sum(_rss_bytes(p) for p in self.pids)
            self.first = self.first or rss
            self.peak = max(self.peak, rss)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def _client(args: argparse.Namespace) -> None:
    """The sender's own process: a shaped run, its report as JSON on stdout."""
    from streams.loadgen import send_shaped
    from streams.loadshape import shape_for

    shape = shape_for("yle", args.duration, args.scale)
    report = asyncio.run(
        send_shaped(
            args.client_url,
            args.client_stream,
            shape,
            count=args.count,
            concurrency=args.concurrency,
            seed=1,
        )
    )
    out = {
        k: getattr(report, k)
        for k in ("target", "sent", "accepted", "failed", "rejected_events", "requests")
    }
    out |= {"throttled": report.throttled_requests, "resent": report.resent}
    out |= {"elapsed": report.elapsed, "errors": dict(report.errors)}
    sys.stdout.write(orjson.dumps(out).decode() + "\n")


def _lake_rows(lake: Path) -> tuple[int, int, list[float]]:
    """(rows, distinct event ids, freshness seconds per row) over the lake's tables."""
    import duckdb

    rows = distinct = 0
    lags: list[float] = []
    con = duckdb.connect()
    for table in TABLES:
        files = sorted((lake / table).rglob("*.parquet"))
        if not files:
            continue
        mtimes = {str(f): f.stat().st_mtime for f in files}
        listing = [str(f) for f in files]
        got = con.execute(
            "SELECT filename, epoch_us(receive_time) / 1e6 AS received, event_id "
            "FROM read_parquet(?, filename = true, union_by_name = true)",
            [listing],
        ).fetchall()
        rows += len(got)
        distinct += len({g[2] for g in got})
        lags += [mtimes[f] - received for f, received, _ in got if received is not None]
    return rows, distinct, lags


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_spiky_bench(
    bootstrap: str,
    duration: float = 120.0,
    scale: float = 1.0,
    count: int = 1_000_000,
    concurrency: int = 32,
) -> str:
    """Run the spiky day through the pipeline; a Markdown section."""
    with scratch_dir("firelake-bench-spiky-") as tmp:
        suffix, port, supervisor = start_pipeline(bootstrap, tmp)
        sinks = load_config(tmp / "firelake.toml", environ={}).sinks.values()
        flush = max(s.max_seconds for s in sinks)
        try:
            url = f"http://127.0.0.1:{port}"
            stages = _stage_pids(supervisor, bootstrap)
            meter = StageMeter(stages)
            rss = _RssSampler(stages["ingest"])
            rss.start()
            meter.start()
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
            argv = [sys.executable, "-m", "bench.spiky", "--client-url", url]
            argv += ["--client-stream", f"raw-events-{suffix}", "--duration", str(duration)]
            argv += ["--scale", str(scale), "--count", str(count)]
            argv += ["--concurrency", str(concurrency)]
            started = time.perf_counter()
            done = subprocess.run(
                argv, env=env, capture_output=True, timeout=duration + 300, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"the sender failed: {done.stderr.decode()[-2000:]}")
            report: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
            sent_s = time.perf_counter() - started
            deadline = time.monotonic() + 300
            rows = distinct = 0
            lags: list[float] = []
            while time.monotonic() < deadline:
                rows = sum(len(list((tmp / "lake" / t).rglob("*.parquet"))) for t in TABLES)
                rows, distinct, lags = _lake_rows(tmp / "lake") if rows else (0, 0, [])
                if rows >= report["accepted"]:
                    break
                time.sleep(2)
            drained_s = time.perf_counter() - started
            meter.stop()
            rss.stop()
        finally:
            supervisor.stop()
    lost = report["accepted"] - distinct
    lines = [
        "### Spiky day (issue 15): `firelake send --profile yle` through the pipeline",
        "",
        f"Machine: {os.cpu_count()} cores, run "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; a day in {duration:g} s "
        f"at scale {scale:g} (prime time {10_000 * scale:,.0f}/s, "
        f"bursts {42_000 * scale:,.0f}/s), {concurrency} sender connections, sinks' default "
        f"buffering (max_seconds = {flush:g}).",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| events the shape asked for | {report['target']:,} |",
        f"| sent / accepted | {report['sent']:,} / {report['accepted']:,} |",
        f"| achieved rate while sending | {report['sent'] / report['elapsed']:,.0f} events/s |",
        f"| 503 answers honoured (Retry-After) / records resent | {report['throttled']:,} / "
        f"{report['resent']:,} |",
        f"| failed / refused events | {report['failed']:,} / {report['rejected_events']:,} |",
        f"| rows in the lake / distinct event ids | {rows:,} / {distinct:,} |",
        f"| accepted but not in the lake | **{lost:,}** |",
        f"| freshness p50 / p99 (received -> file written) | **{_percentile(lags, 0.5):.2f} s"
        f" / {_percentile(lags, 0.99):.2f} s** (target p99 <= {flush + 5:g} s) |",
        f"| ingest RSS at start / peak | {rss.first / 2**20:.0f} MiB / "
        f"**{rss.peak / 2**20:.0f} MiB** |",
        f"| sending / until all in the lake | {sent_s:.0f} s / {drained_s:.0f} s |",
        "",
    ]
    table = render_stage_table(
        "CPU per event, by stage (µs of CPU time / event)",
        {"spiky day": (max(1, report["accepted"]), drained_s, meter.spent)},
    )
    return "\n".join(lines) + "\n" + table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.spiky", description=__doc__)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds for one day")
    parser.add_argument("--scale", type=float, default=1.0, help="rate multiplier")
    parser.add_argument("--count", type=int, default=1_000_000, help="most events sent")
    parser.add_argument("--concurrency", type=int, default=32, help="sender connections")
    parser.add_argument("--client-url", help=argparse.SUPPRESS)
    parser.add_argument("--client-stream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_url:
        _client(args)
        return
    with broker() as bootstrap:
        print(run_spiky_bench(bootstrap, args.duration, args.scale, args.count, args.concurrency))


if __name__ == "__main__":
    main()

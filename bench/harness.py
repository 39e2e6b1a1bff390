"""What every benchmark needs: a broker, unique names, a lake, timing, a results table."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BenchResult",
    "broker",
    "minimal_loop",
    "render_markdown",
    "scratch_dir",
    "timer",
]


@dataclass
class BenchResult:
    """One measured path: events, seconds, and free-form notes."""

    name: str
    events: int
    seconds: float
    notes: dict[str, str] = field(default_factory=dict)
    #: CPU seconds by stage (ingest, router, sinks, broker, client, ...) over ``seconds``,
    #: printed as µs per event beside the rate (``bench.cpu``); empty when not measured.
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """FIRELAKE_KAFKA_BOOTSTRAP, or a local broker started for this run."""
    external = os.environ.get("FIRELAKE_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    from firelake.broker import LocalBroker, free_port

    with tempfile.TemporaryDirectory(prefix="firelake-bench-kafka-") as data:
        local = LocalBroker(data_dir=Path(data), port=free_port(), controller_port=0)
        local.start(timeout=180)
        try:
            yield local.bootstrap
        finally:
            local.stop()


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        yield Path(path)


class timer:
    """Wall-clock seconds of a block."""

    def __enter__(self) -> timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def render_markdown(title: str, results: list[BenchResult], baseline: str) -> str:
    """A Markdown section: each path's rate and its ratio to the baseline path."""
    base = next(r for r in results if r.name == baseline)
    lines = [
        f"### {title}",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| path | events | seconds | events/s | ratio to baseline | notes |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        notes = "; ".join(f"{k}: {v}" for k, v in r.notes.items())
        ratio = r.rate / base.rate if base.rate else 0.0
        lines.append(
            f"| {r.name} | {r.events} | {r.seconds:.2f} | {r.rate:,.0f} | {ratio:.2f} | {notes} |"
        )
    measured = {r.name: (r.events, r.seconds, r.cpu) for r in results if r.cpu}
    if measured:
        from bench.cpu import render_stage_table

        title = "CPU per event, by stage (µs of CPU time / event)"
        lines += ["", render_stage_table(title, measured)]
    return "\n".join(lines) + "\n"


async def minimal_loop(
    bootstrap: str,
    topic: str,
    events: int,
    out: Path,
    per_partition: bool = False,
    partition_fetch_bytes: int = 1024 * 1024,
) -> BenchResult:
    """The baseline of a consume → Parquet hop: aiokafka ``getmany`` → join the values →
    ``pyarrow.json.read_json`` → ``pyarrow.parquet.write_table`` per poll (per partition of
    each poll with ``per_partition``, as the sink writes files per source partition; with
    the sink's 1 MiB partition fetch unless ``partition_fetch_bytes`` says otherwise), with
    no schema, no folders and no bookkeeping. Timed from the first polled records (no group
    join), bounded to five minutes."""
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=partition_fetch_bytes,
        fetch_max_bytes=max(partition_fetch_bytes * 4, 50 * 1024 * 1024),
    )
    await consumer.start()
    seen = files = 0
    started = 0.0
    try:
        deadline = time.monotonic() + 300
        while seen < events and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            groups = [[m.value for m in messages if m.value] for messages in batches.values()]
            if not per_partition:
                groups = [[value for group in groups for value in group]]
            for values in groups:
                if not values:
                    continue
                started = started or time.perf_counter()
                table = pa_json.read_json(io.BytesIO(b"\n".join(values)))
                pq.write_table(table, out / f"part-{files}.parquet", compression="zstd")
                files += 1
                seen += table.num_rows
            await asyncio.sleep(0)
        seconds = time.perf_counter() - started if started else 0.0
    finally:
        await consumer.stop()
    return BenchResult(
        "minimal loop: getmany -> join -> read_json -> write_table",
        seen,
        seconds,
        {"files": str(files)},
    )

"""The window agent as a Faust agent (``windows.<name>.engine = "faust"``): at-least-once.

For users who run their agents on Faust (faust-streaming). The agent reads the window's
source stream in consumer group ``firelake-window-<name>``, hands each raw message (an
envelope of events) to the same pure :class:`~agents.windows.processor.WindowProcessor`
as the transactional engine, sends the result envelopes, late events and changelog
records, and **acks the message only after Kafka confirmed all of them**; Faust commits
acked offsets every second. At start it restores the state from the window's changelog.

The caveat, at-least-once: after a crash the messages processed since the last offset
commit are processed again, on top of a state whose changelog already holds their effect —
so windows open at the crash may count those events twice, and results and late events may
be emitted twice. ``windows verify`` reports such windows. For exact results use the default
``"transactional"`` engine (``agents/window_agent.py``). One worker only (``workers = 1``):
Faust spreads partitions over workers, and a window's state must stay in one process.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import faust
from mode import CrashingSupervisor

from agents.faust_agent import faust_settings, record_of, run_worker
from agents.window_agent import changelog_topic, ensure_changelog, group_id, read_changelog
from agents.windows.batch import SourceMessage
from agents.windows.processor import Emission, WindowProcessor
from agents.windows.snapshot import SNAPSHOT_SECONDS, SnapshotWriter
from firelake.config import FirelakeConfig

__all__ = ["ActiveProcessor", "build_window_app", "run_faust_window"]

log = logging.getLogger("firelake.window")

#: How often the agent asks the clock whether windows closed (idle partitions).
TICK_SECONDS = 1.0


class ActiveProcessor:
    """The window processor of the current assignment.

    Each assignment restores a fresh processor from the changelog; it replaces the last
    one, which is closed (its DuckDB reader would otherwise leak, one per rebalance).
    Processing is synchronous, so no batch is midway in the old one when it closes.
    """

    def __init__(self) -> None:
        self.current: WindowProcessor | None = None
        self._ready = asyncio.Event()

    def replace(self, fresh: WindowProcessor) -> None:
        old, self.current = self.current, fresh
        self._ready.set()
        if old is not None:
            old.close()

    async def wait(self) -> WindowProcessor:
        """The current processor, once the first assignment restored one."""
        await self._ready.wait()
        assert self.current is not None
        return self.current


def build_window_app(
    config: FirelakeConfig, name: str, bootstrap: str | None = None, *, datadir: str | Path
) -> faust.App:
    """A Faust app running window ``name`` against ``bootstrap``."""
    spec = config.windows[name]
    bootstrap = config.require_bootstrap(bootstrap)
    app = faust.App(
        group_id(name),
        **faust_settings(bootstrap, datadir),
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=8 * 1024 * 1024,
    )
    partitions = range(config.streams[spec.source].partitions)
    active = ActiveProcessor()
    changelog = changelog_topic(name)
    changelog_made: list[bool] = []  # the changelog topic is ensured once, not per rebalance

    async def send(emission: Emission) -> None:
        producer = await app.maybe_start_producer()
        futures: list[Any] = []
        for m in emission.messages:
            futures.append(
                await producer.send(m.stream, m.key, m.value, m.partition, None, m.headers)
            )
        for key, value in emission.changelog:
            futures.append(await producer.send(changelog, key, value, 0, None, None))
        await asyncio.gather(*futures)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        if not assigned:
            return
        if not changelog_made:
            await ensure_changelog(config, bootstrap, name)
            changelog_made.append(True)
        records = await read_changelog(bootstrap, name)
        fresh = WindowProcessor(config, name, partitions)
        fresh.restore(records)
        active.replace(fresh)
        log.info("window %s (faust): active on %s", name, sorted(map(tuple, assigned)))

    source = app.topic(spec.source, key_serializer="raw", value_serializer="raw", allow_empty=True)

    async def aggregate(stream: faust.StreamT) -> None:
        async for event in stream.noack().events():
            record = record_of(event.message)
            window = await active.wait()
            emission = window.process(
                [
                    SourceMessage(
                        record.partition,
                        record.offset,
                        record.timestamp,
                        record.value,
                        record.headers,
                        record.key,
                    )
                ]
            )
            await send(emission)
            event.ack()

    app.agent(source, name=f"window-{name}", supervisor_strategy=CrashingSupervisor)(aggregate)

    @app.timer(TICK_SECONDS)
    async def tick() -> None:
        if active.current is not None:
            emission = active.current.tick()
            if emission.results:
                await send(emission)

    snapshots = SnapshotWriter(config, name)

    @app.timer(SNAPSHOT_SECONDS)
    async def snapshot() -> None:
        # The open windows for the query service (``<name>_open``), as the default engine.
        await snapshots.write(active.current, force=True)

    return app


def run_faust_window(config: FirelakeConfig, name: str, bootstrap: str | None = None) -> int:
    """Run the window's Faust worker until SIGTERM/SIGINT; its exit code."""
    datadir = Path(tempfile.mkdtemp(prefix=f"{group_id(name)}-"))
    try:
        app = build_window_app(config, name, bootstrap, datadir=datadir)
        return run_worker(app) or 0
    finally:
        shutil.rmtree(datadir, ignore_errors=True)

"""The window agent's Kafka edge: exactly-once results, state in a compacted changelog.

A window runs as consumer group ``firelake-window-<name>`` over its source stream. **One
worker is active**: a partition assignor gives every source partition to one member (the
one that already holds them, if it is still there), so the window's watermark — the minimum
over all partitions — and its state live in one process, and a window is never split
between workers. Further ``workers`` stand by in the group and take over when the active
one dies (after the group's session timeout). Scaling one window beyond one core would need
a repartition stage by key (not built); BENCHMARKS.md gives one worker's throughput.

**Exactly-once.** Each batch is one Kafka transaction (``transactional.id =
firelake-window-<name>``) holding the result envelopes, the late events, the changelog
records of every window the batch changed or closed, the watermarks, *and* the source
offsets. A new owner opens the same transactional id, which aborts a dead owner's open
transaction and fences it; it then restores the state from the changelog (read
``read_committed`` up to its end) and resumes from the committed offsets — the state and
the offsets it restores always belong together, so the results after a crash are the ones
a run without the crash gives. Readers of the output and late streams must read
``read_committed`` (the sinks do).

**State.** The changelog ``_firelake-window-<name>-changelog`` is a compacted topic: one
record per open window and bucket of keys (per key for sessions and sliding windows), a
tombstone when a window closes, and the watermarks; compaction keeps it to the open windows.

**Open windows in the lake.** The active worker writes its open windows to
``_firelake/windows/<name>/open.parquet`` (:mod:`agents.windows.snapshot`), replaced whole
every few seconds and when it stops, so the query service (which reads the lake only)
shows them as the view ``<name>_open``.

A failed transaction stops the worker (exit 1) rather than guess what its in-memory state
should be: the supervisor restarts it and the restore puts state and offsets back together.

Run it as ``python -m agents.window_agent --config FILE --window NAME``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from agents.edge import event_count
from agents.metrics import serve_metrics
from agents.window_metrics import WindowCollector
from agents.windows.batch import SourceMessage
from agents.windows.processor import Emission, WindowProcessor
from agents.windows.snapshot import SnapshotWriter
from firelake.aio import run as run_loop
from firelake.config import ConfigError, FirelakeConfig, load_config
from firelake.log import setup_logging
from streams.admin import TopicSpec, admin_client, ensure_topic

__all__ = [
    "INSTANCE_ENV",
    "ActiveMemberAssignor",
    "WindowWorker",
    "changelog_topic",
    "group_id",
    "main",
    "open_windows",
    "publish_results",
    "read_changelog",
    "run_window",
]

log = logging.getLogger("firelake.window")

#: Largest changelog record (a session list or sliding rows of one key) and request.
MAX_REQUEST_BYTES = 8 * 1024 * 1024
#: How often an idle worker asks the clock whether windows closed (idle partitions).
TICK_SECONDS = 1.0
#: How often the worker logs its counters.
STATS_INTERVAL_SECONDS = 60.0
#: Static group membership: a restarted worker with the same id takes its place (and the
#: window's partitions) at once instead of after the session timeout.
INSTANCE_ENV = "FIRELAKE_WINDOW_INSTANCE_ID"
#: How long a dead worker keeps the window before a standby takes over.
SESSION_TIMEOUT_MS = 10_000


def group_id(window: str) -> str:
    """The consumer group (and transactional id) of a window."""
    return f"firelake-window-{window}"


def changelog_topic(window: str) -> str:
    """The compacted topic holding a window's state."""
    return f"_firelake-window-{window}-changelog"


class ActiveMemberAssignor(AbstractPartitionAssignor):
    """Every partition to one member: the one that held them (it says so in its
    metadata), else the first by member id. One process holds a window's whole state."""

    name = "firelake-active-member"
    version = 0
    #: True while this process holds the window's partitions (one window per process).
    holding = False

    @classmethod
    def assign(
        cls,
        cluster: ClusterMetadata,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics: set[str] = set()
        for metadata in members.values():
            topics.update(metadata.subscription)
        holders = sorted(m for m, meta in members.items() if meta.user_data == b"held")
        chosen = holders[0] if holders else sorted(members)[0]
        partitions = {
            topic: sorted(cluster.partitions_for_topic(topic) or ()) for topic in sorted(topics)
        }
        return {
            member: ConsumerProtocolMemberAssignment(
                cls.version, sorted(partitions.items()) if member == chosen else [], b""
            )
            for member in members
        }

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(
            cls.version, list(topics), b"held" if cls.holding else b""
        )

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        cls.holding = bool(assignment.assignment)


async def ensure_changelog(config: FirelakeConfig, bootstrap: str, window: str) -> str:
    """Create the window's compacted changelog topic unless it exists; its name."""
    topic = changelog_topic(window)
    # Compaction only cleans closed segments: short segments keep what a restore reads near
    # the open windows' size instead of a week of history (Kafka's default segment.ms).
    spec = TopicSpec(
        partitions=1,
        configs={
            "cleanup.policy": "compact",
            "max.message.bytes": str(MAX_REQUEST_BYTES),
            "segment.ms": str(10 * 60 * 1000),
            "segment.bytes": str(64 * 1024 * 1024),
            "min.cleanable.dirty.ratio": "0.2",
        },
    )

    def create() -> None:
        with admin_client(bootstrap, f"{config.kafka.client_id}-window-{window}-admin") as admin:
            ensure_topic(admin, topic, spec, config.kafka.replication_factor)

    await asyncio.to_thread(create)
    return topic


async def read_changelog(bootstrap: str, window: str) -> list[tuple[bytes, bytes | None]]:
    """Every committed record of a window's changelog, in log order (``read_committed``)."""
    topic = changelog_topic(window)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=MAX_REQUEST_BYTES,
        fetch_max_bytes=4 * MAX_REQUEST_BYTES,
    )
    await consumer.start()
    records: list[tuple[bytes, bytes | None]] = []
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return records
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)

        async def behind() -> bool:
            for tp in tps:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        while await behind():
            batches = await consumer.getmany(*tps, timeout_ms=500, max_records=50_000)
            for tp_records in batches.values():
                records.extend((r.key, r.value) for r in tp_records if r.key is not None)
    finally:
        await consumer.stop()
    return records


class _Listener(ConsumerRebalanceListener):
    def __init__(self, worker: WindowWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.worker.on_assigned(set(assigned))


class WindowWorker:
    """One worker process of a window: standby, or active with the whole state."""

    def __init__(self, config: FirelakeConfig, name: str, bootstrap: str | None = None) -> None:
        spec = config.windows.get(name)
        if spec is None:
            known = ", ".join(sorted(config.windows)) or "none"
            raise ValueError(f"{config.source}: no window named {name!r} (declared: {known})")
        self.config = config
        self.spec = spec
        self.name = name
        self.group = group_id(name)
        self.bootstrap = config.require_bootstrap(bootstrap)
        self.client_id = f"{config.kafka.client_id}-window-{name}"
        self.partitions = list(range(config.streams[spec.source].partitions))
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.processor: WindowProcessor | None = None
        self.assigned: set[TopicPartition] = set()
        self.pending: list[Any] = []
        self.pending_events = 0
        self.pending_since = 0.0
        #: Held while a batch is processed and committed; a rebalance waits for it.
        self.lock = asyncio.Lock()
        #: A transaction that failed inside a rebalance callback (the loop raises it).
        self.failure: KafkaError | None = None
        self.changelog = changelog_topic(name)
        #: The open-windows snapshot in the lake (local or S3).
        self.snapshots = SnapshotWriter(config, name)

    # ------------------------------------------------------------------ ownership

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            try:
                if revoked and self.pending and self.failure is None:
                    # Commit what was read while we still own it: nothing is repeated.
                    await self._commit_batch()
            except KafkaError as exc:
                # Inside the group's callback: hand it to the loop, which stops the worker
                # (the state in memory no longer matches what was committed).
                self.failure = exc
            self.pending.clear()
            self.pending_events = 0

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.lock:
            if assigned == self.assigned and self.processor is not None:
                return  # the same owner again: state and producer stay valid
            await self._release()
            self.assigned = assigned
            if not assigned:
                log.info("window %s: standing by", self.name)
                return
            started = time.monotonic()
            # Opening the transactional id fences a previous owner before we read state.
            self.producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id=self.client_id,
                transactional_id=self.group,
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                max_batch_size=1024 * 1024,
                max_request_size=MAX_REQUEST_BYTES,
            )
            await self.producer.start()
            processor = WindowProcessor(self.config, self.name, self.partitions)
            records = await read_changelog(self.bootstrap, self.name)
            entries = processor.restore(records)
            self.processor = processor
            log.info(
                "window %s: active on %s; restored %d entries from %d changelog records in %.2fs",
                self.name,
                sorted(map(tuple, assigned)),
                entries,
                len(records),
                time.monotonic() - started,
            )

    async def _release(self) -> None:
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.stop()
        self.producer = None
        if self.processor is not None:
            self.processor.close()
        self.processor = None
        self.assigned = set()

    # ------------------------------------------------------------------ batches

    async def _send(self, emission: Emission, offsets: dict[TopicPartition, int]) -> None:
        producer = self.producer
        assert producer is not None
        async with producer.transaction():
            futures = [
                await producer.send(
                    m.stream, m.value, key=m.key, partition=m.partition, headers=m.headers
                )
                for m in emission.messages
            ]
            # Changelog records go in batches: one append each instead of one send each.
            batch = producer.create_batch()
            for key, value in emission.changelog:
                if batch.append(key=key, value=value, timestamp=None) is not None:
                    continue
                if batch.record_count():
                    futures.append(await producer.send_batch(batch, self.changelog, partition=0))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is not None:
                        continue
                # Bigger than a batch: on its own (up to MAX_REQUEST_BYTES).
                futures.append(await producer.send(self.changelog, value, key=key, partition=0))
            if batch.record_count():
                futures.append(await producer.send_batch(batch, self.changelog, partition=0))
            for result in await asyncio.gather(*futures, return_exceptions=True):
                if isinstance(result, BaseException):
                    raise result
            if offsets:
                await producer.send_offsets_to_transaction(offsets, self.group)

    async def _commit_batch(self) -> None:
        """Process what was read, ``batch_size`` events (one transaction) at a time."""
        records = self.pending
        self.pending = []
        self.pending_events = 0
        chunk: list[Any] = []
        events = 0
        for record in records:
            count = event_count(record.headers)
            if chunk and events + count > self.spec.batch_size:
                await self._commit(chunk)
                chunk, events = [], 0
            chunk.append(record)
            events += count
        if chunk:
            await self._commit(chunk)

    async def _commit(self, records: list[Any]) -> None:
        processor = self.processor
        assert processor is not None
        messages = [
            SourceMessage(r.partition, r.offset, r.timestamp, r.value, r.headers, r.key)
            for r in records
        ]
        emission = processor.process(messages)
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            offsets[TopicPartition(r.topic, r.partition)] = r.offset + 1
        await self._send(emission, offsets)

    async def _tick(self) -> None:
        processor = self.processor
        if processor is None:
            return
        emission = processor.tick()
        if emission.results:
            await self._send(emission, {})

    async def run(self, stop: asyncio.Event) -> None:
        """Aggregate until ``stop`` is set; then commit what was read and leave the group."""
        spec = self.spec
        await ensure_changelog(self.config, self.bootstrap, self.name)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            partition_assignment_strategy=(ActiveMemberAssignor,),
            group_instance_id=os.environ.get(INSTANCE_ENV) or None,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=SESSION_TIMEOUT_MS // 4,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        self.consumer.subscribe([spec.source], listener=_Listener(self))
        await self.consumer.start()
        log.info(
            "window %s: %s over %s by %s as group %s; results to %s, late events to %s",
            self.name,
            spec.type,
            spec.source,
            list(spec.key) or "(global)",
            self.group,
            spec.output,
            spec.late,
        )
        next_tick = time.monotonic() + TICK_SECONDS
        next_stats = time.monotonic() + STATS_INTERVAL_SECONDS
        try:
            while not stop.is_set():
                if self.failure is not None:
                    raise self.failure
                wait = 10 if self.pending else int(spec.batch_window_seconds * 1000) or 10
                batches = await self.consumer.getmany(timeout_ms=min(wait, 1000))
                now = time.monotonic()
                snapshot = None
                async with self.lock:
                    if self.processor is None:
                        continue
                    for tp, records in batches.items():
                        if tp not in self.assigned:
                            continue
                        if not self.pending:
                            self.pending_since = now
                        self.pending.extend(records)
                        self.pending_events += sum(event_count(r.headers) for r in records)
                    if self.pending and (
                        self.pending_events >= spec.batch_size
                        or now - self.pending_since >= spec.batch_window_seconds
                    ):
                        await self._commit_batch()
                        next_tick = now + TICK_SECONDS
                    elif now >= next_tick:
                        await self._tick()
                        next_tick = now + TICK_SECONDS
                    snapshot = self.snapshots.take(self.processor)
                await self.snapshots.put(snapshot)  # the lake's PUT outside the lock
                if now >= next_stats and self.processor is not None:
                    next_stats = now + STATS_INTERVAL_SECONDS
                    log.info(
                        "window %s: %s; open entries %d",
                        self.name,
                        self.processor.stats,
                        self.processor.state.size(),
                    )
            async with self.lock:
                if self.pending and self.processor is not None:
                    await self._commit_batch()
                snapshot = self.snapshots.take(self.processor, force=True)
            await self.snapshots.put(snapshot)
        finally:
            if self.processor is not None:
                log.info("window %s stopping: %s", self.name, self.processor.stats)
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            await self._release()


async def open_windows(
    config: FirelakeConfig, name: str, bootstrap: str | None = None
) -> list[dict[str, Any]]:
    """The open windows of ``name`` as the changelog holds them (``windows show``)."""
    processor = WindowProcessor(
        config, name, range(config.streams[config.windows[name].source].partitions)
    )
    try:
        processor.restore(await read_changelog(bootstrap or config.bootstrap, name))
        return processor.open_rows()
    finally:
        processor.close()


async def publish_results(
    config: FirelakeConfig, name: str, rows: list[dict[str, Any]], bootstrap: str | None = None
) -> int:
    """Send result rows (``windows backfill``) to the window's output stream in one
    transaction; the number of envelopes sent."""
    processor = WindowProcessor(config, name, [])
    try:
        messages = processor.messages_for(rows)
    finally:
        processor.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap or config.bootstrap,
        client_id=f"{config.kafka.client_id}-window-{name}-backfill",
        transactional_id=f"{group_id(name)}-backfill",
        enable_idempotence=True,
        acks="all",
        max_request_size=MAX_REQUEST_BYTES,
    )
    await producer.start()
    try:
        async with producer.transaction():
            futures = [
                await producer.send(
                    m.stream, m.value, key=m.key, partition=m.partition, headers=m.headers
                )
                for m in messages
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(messages)


async def serve_window(config: FirelakeConfig, name: str, bootstrap: str | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT."""
    worker = WindowWorker(config, name, bootstrap)
    spec = config.windows[name]
    if spec.metrics_port:
        ports = spec.metrics_ports
        collector = WindowCollector(name, lambda: worker.processor)
        serve_metrics(collector, ports.start, tries=len(ports), label=f"window {name}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.run(stop)


def run_window(config: FirelakeConfig, name: str, bootstrap: str | None = None) -> int:
    """Run the window in this process on its engine until SIGTERM/SIGINT; its exit code."""
    spec = config.windows.get(name)
    if spec is not None and spec.engine == "faust":
        from agents.faust_window import run_faust_window

        return run_faust_window(config, name, bootstrap)
    try:
        run_loop(serve_window(config, name, bootstrap))
    except KafkaError as exc:
        # State and offsets are restored together by the next start: exit and be restarted.
        log.error("window %s: a transaction failed (%r); exiting to restore", name, exc)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.window_agent --config FILE --window NAME``."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.window_agent", description="Run one Firelake window worker."
    )
    parser.add_argument("--config", help="Firelake TOML file (default: firelake.toml or example)")
    parser.add_argument("--window", required=True, help="Window name (key under [windows])")
    parser.add_argument("--bootstrap", help="Kafka bootstrap address")
    parser.add_argument("--log-level", default=None, help="Log level (default: INFO)")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
        if args.window not in config.windows:
            known = ", ".join(sorted(config.windows)) or "none"
            raise ConfigError(config.source, "windows", f"no window {args.window!r} ({known})")
    except ConfigError as exc:
        print(f"firelake window: {exc}", file=sys.stderr)
        return 2
    return run_window(config, args.window, args.bootstrap)


if __name__ == "__main__":
    sys.exit(main())

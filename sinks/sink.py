"""The Parquet sink process: Kafka stream in, exactly-once Parquet files out (Firehose).

This is the thin Kafka edge around the pure modules: an ``AIOKafkaConsumer`` per sink
(group ``firelake-sink-<name>``, no auto-commit, ``read_committed`` so a transactional
router's aborted batches never land) converts each poll's envelopes to Arrow rows by output
folder (``sinks.parquet``, ``sinks.prefix``) into per-partition buffers (``sinks.buffer``);
a buffer that reaches a hint — or that the global memory budget or the open-partition
bound picks (``sinks.memory``) — is written under the destination's progress protocol
(``sinks.progress``) to a local folder or S3 (``sinks.destinations``). Conversion and
writing run in a worker thread, so the consumer keeps heart-beating while pyarrow works.

The lake is the source of truth. On every assignment the sink recovers each partition's
progress and seeks to ``state + 1`` (or, before the first flush, its
``starting_position``: the earliest retained offset by default). On revocation it waits
for a flush in flight and drops the rest of the partition's buffer: the next owner
re-reads it from the lake's state, and no process writes a partition it may no longer
own. Kafka offsets are committed after each flush only so that lag shows in the usual
tools.

Stopping (the ``stop`` event, task cancellation, SIGTERM/SIGINT in ``main``) flushes
every buffer and commits before exiting; SIGKILL loses nothing but the buffers.

``FIRELAKE_SINK_CRASH_AT=<point>[:<n>]`` makes the process SIGKILL itself the n-th time
(default first) a flush passes ``point`` (``after_intent``, ``during_files``,
``after_files``, ``after_state``, ``after_commit``) — a real crash, for the crash tests.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from firelake.config import FirelakeConfig, Schema, SinkConfig, load_config
from sinks.buffer import (
    Batch,
    BufferLimits,
    Clock,
    PartitionBuffer,
    PartitionBuffers,
    message_event_count,
)
from sinks.columns import write_columns
from sinks.conversion import spec_for
from sinks.destinations import destination_for
from sinks.jsonlines import plan_json_flush
from sinks.memory import BufferUsage, evictions
from sinks.parquet import Layout, convert, folder_chunks, plan_flush
from sinks.progress import CRASH_POINTS, Checkpoint, ProgressStore
from streams.positions import starting_offsets
from streams.rejoin import run_rejoining

__all__ = [
    "CRASH_ENV",
    "INSTANCE_ENV",
    "SINK_CRASH_POINTS",
    "FlushOutcome",
    "ParquetSink",
    "SinkError",
    "SinkStats",
    "crash_hook",
    "main",
    "run_sink",
    "run_sinks",
]

log = logging.getLogger(__name__)

#: Environment variable that arms the crash hook (tests only).
CRASH_ENV = "FIRELAKE_SINK_CRASH_AT"
#: Environment variable giving the consumer a static group membership id (KIP-345): a
#: restarted sink process gets its partitions back at once instead of after the dead
#: member's session times out. Set it only when one process runs the sink (supervisors).
INSTANCE_ENV = "FIRELAKE_SINK_INSTANCE_ID"
#: Every point the crash hook can stop at: the progress protocol's, then the Kafka commit.
SINK_CRASH_POINTS = (*CRASH_POINTS, "after_commit")

#: Longest wait in one poll, so a stop request or an idle buffer's deadline is seen soon.
POLL_MS = 500
#: Most messages (envelopes) one poll returns.
MAX_RECORDS = 5_000
#: Kafka group session: a crashed sink's partitions move on after this long. 6 s is the
#: broker's default minimum; flushes run in a thread, so heartbeats never wait on pyarrow.
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 1_500
MiB = 1024 * 1024
#: aiokafka's default largest fetch response (50 MiB); a small memory budget lowers it.
FETCH_MAX_BYTES = 50 * MiB
#: Longest wait for a consumer to leave its group on the way out.
STOP_TIMEOUT_S = 10.0
#: A fetch answers once this much is there or after FETCH_MAX_WAIT_MS (bench/pipeline.py).
FETCH_MIN_BYTES = 512 * 1024
FETCH_MAX_WAIT_MS = 250


class SinkError(ValueError):
    """A sink that cannot run as configured: names the sink and what is wrong."""

    def __init__(self, sink: str, reason: str) -> None:
        self.sink = sink
        self.reason = reason
        super().__init__(f"sink {sink!r}: {reason}")


def crash_hook(spec: str | None) -> Checkpoint | None:
    """A checkpoint that SIGKILLs this process at ``point`` (the n-th time, ``point:n``).

    ``point:n:stop`` SIGSTOPs it instead — a sink frozen mid-flush, for the zombie test.
    None for an empty spec. Raises ValueError for an unknown point.
    """
    if not spec:
        return None
    spec, stop = (spec[: -len(":stop")], True) if spec.endswith(":stop") else (spec, False)
    point, _, nth = spec.partition(":")
    if point not in SINK_CRASH_POINTS:
        raise ValueError(
            f"{CRASH_ENV}={spec!r}: unknown point (known: {', '.join(SINK_CRASH_POINTS)})"
        )
    target = int(nth) if nth else 1
    seen = 0

    def checkpoint(name: str) -> None:
        nonlocal seen
        if name != point:
            return
        seen += 1
        if seen == target and stop:
            sys.stderr.write(f"firelake sink: crash hook {spec} -> SIGSTOP\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGSTOP)
        elif seen >= target and not stop:
            # A real, unclean death: no finally blocks, no flush, no Kafka leave-group.
            sys.stderr.write(f"firelake sink: crash hook {spec} -> SIGKILL\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return checkpoint


@dataclass
class SinkStats:
    """Running totals of one sink, for logs and tests."""

    messages: int = 0
    flushes: int = 0
    rows: int = 0
    files: int = 0
    bad_lines: int = 0
    commit_failures: int = 0
    #: Times the consumer was rebuilt after a broker error (restart, stall, failover).
    rejoins: int = 0
    #: Wall-clock time of the last committed flush (0: none yet), for freshness.
    last_flush_at: float = 0.0
    #: Rows of the last flush of each partition.
    last_flush_rows: dict[int, int] = field(default_factory=dict)
    #: partition -> messages between what was read and the end of the log.
    lag: dict[int, int] = field(default_factory=dict)
    #: Flushes forced before a hint by the memory budget or the open-partition bound.
    early_flushes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FlushOutcome:
    """What one partition flush did."""

    partition: int
    first_offset: int
    last_offset: int
    rows: int
    files: tuple[str, ...] = field(default=())
    bad_lines: int = 0


class _Listener(ConsumerRebalanceListener):
    """Routes aiokafka's rebalance callbacks to the sink."""

    def __init__(self, sink: ParquetSink) -> None:
        self._sink = sink

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._sink._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._sink._on_assigned(assigned)


class ParquetSink:
    """One sink of the configuration: its stream into its lake table, exactly once."""

    def __init__(
        self,
        config: FirelakeConfig,
        sink_name: str,
        *,
        clock: Clock = time.monotonic,
        checkpoint: Checkpoint | None = None,
        poll_ms: int = POLL_MS,
        max_records: int = MAX_RECORDS,
    ) -> None:
        spec = config.sinks.get(sink_name)
        if spec is None:
            raise SinkError(sink_name, f"not configured (sinks: {', '.join(config.sinks)})")
        schema = config.schema_of(spec.stream)  # None: inferred from the data
        layout = Layout.of(spec, schema)
        for column in layout.prefix.fields:
            declared = schema.field_named(column) if schema is not None else None
            if schema is not None and declared is None:
                raise SinkError(sink_name, f"prefix reads column {column!r}, not in the schema")
            if declared is not None and declared.type.items:
                raise SinkError(sink_name, f"prefix column {column!r} is not a scalar")
        if not config.kafka.bootstrap:
            raise SinkError(sink_name, "kafka.bootstrap is empty; start the broker first")
        self.config = config
        self.name = sink_name
        self.spec: SinkConfig = spec
        self.schema: Schema | None = schema
        self.layout = layout
        self.conversion = spec_for(spec, schema)
        self.topic = spec.stream
        self.destination = destination_for(config, spec)
        self.store = ProgressStore(self.destination, sink_name)
        self.buffers = PartitionBuffers(
            self.topic,
            BufferLimits(spec.max_events, spec.max_bytes, spec.max_seconds),
            clock,
        )
        self.checkpoint = (
            checkpoint if checkpoint is not None else crash_hook(os.environ.get(CRASH_ENV))
        )
        self.poll_ms = poll_ms
        self.max_records = max_records
        self.stats = SinkStats()
        self._lock = asyncio.Lock()
        #: Bumped by every rebalance callback, so a poll can tell its records went stale.
        self._generation = 0
        self._consumer: AIOKafkaConsumer | None = None
        #: What recovery at the last assignment raised (the poll loop raises it).
        self._assign_error: Exception | None = None
        #: A JSON table with a schema still has to put its columns file (sinks.columns).
        self._columns_pending = spec.format == "json" and self.schema is not None

    # ----------------------------------------------------------------- rebalancing

    async def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        # aiokafka only logs what a rebalance listener raises, and the partition would
        # then be read from the group's offset, unrecovered and unfenced: keep the error
        # for the poll loop to raise (a retriable one rejoins, any other ends the sink).
        try:
            await self._recover(assigned)
        except Exception as exc:
            log.error("sink %s: recovery at assignment failed: %r", self.name, exc)
            if self._assign_error is None:
                self._assign_error = exc

    def _raise_assign_error(self) -> None:
        """Raise what the last assignment's recovery raised, once."""
        error, self._assign_error = self._assign_error, None
        if error is not None:
            raise error

    async def _recover(self, assigned: list[TopicPartition]) -> None:
        async with self._lock:
            self._generation += 1
            behind: dict[TopicPartition, int] = {}
            for tp in assigned:
                if tp.topic != self.topic:
                    continue
                resume = await asyncio.to_thread(self.store.recover, self.topic, tp.partition)
                assert self._consumer is not None
                start = resume if resume is not None else await self._start_offset(tp)
                if resume is not None:
                    committed = await self._consumer.committed(tp)
                    if committed is None or committed < resume:
                        behind[tp] = resume
                self._consumer.seek(tp, start)
                self.buffers.reset(tp.partition, start)
                log.info(
                    "sink %s: partition %s/%d resumes at %d (%s)",
                    self.name,
                    self.topic,
                    tp.partition,
                    start,
                    "the lake's progress" if resume is not None else self.spec.starting_position,
                )
            if behind:
                # The lake got ahead of the group (a commit lost to a rebalance): bring the
                # group's offsets up to it, or lag (status, replay quiescence) would show
                # events the lake already holds as pending until the next flush.
                await self._commit_offsets(behind)

    async def _start_offset(self, tp: TopicPartition) -> int:
        """Where a partition the destination holds no progress for starts.

        The lake is the source of progress: with ``TRIM_HORIZON`` (the default) the sink
        reads the whole retained stream, whatever offset the group committed (a new or
        emptied lake, a new destination). ``LATEST`` and ``AT_TIMESTAMP`` resume at the
        group's committed offset when there is one, and commit the position they start
        from, so a sink restarted before its first flush skips nothing that arrived since
        it first started (``streams.positions`` turns the position into an offset).
        """
        consumer = self._consumer
        assert consumer is not None
        position = self.spec.starting_position
        if position == "TRIM_HORIZON":
            return (await starting_offsets(consumer, [tp], position))[tp]
        committed = await consumer.committed(tp)
        if committed is not None:
            return int(committed)
        start = (await starting_offsets(consumer, [tp], position, self.spec.starting_timestamp))[tp]
        # Only a restart before the first flush, after a failed commit, starts over there.
        await self._commit_offsets({tp: start})
        return start

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        # The lock waits out a flush in flight; what is still buffered is dropped.
        async with self._lock:
            self._generation += 1
            gone = [tp.partition for tp in revoked if tp.topic == self.topic]
            self.buffers.drop(gone)
            # Metrics show the partitions this sink owns, not every one it ever had.
            for partition in gone:
                self.stats.lag.pop(partition, None)
                self.stats.last_flush_rows.pop(partition, None)

    # ----------------------------------------------------------------- flushing

    def _put_columns(self, required: bool = False) -> None:
        """Put a JSON table's declared columns for the catalog, once per sink run (the same
        bytes every time, outside the flush protocol). At start a failure is only logged
        (the lake may be away): the first flush tries again, and then it counts."""
        assert self.schema is not None
        try:
            write_columns(self.destination, self.spec.table, self.schema)
        except Exception as exc:
            if required:
                raise
            log.warning("sink %s: columns not written yet: %r", self.name, exc)
            return
        self._columns_pending = False

    def _flush_batches(self, batches: Sequence[Batch]) -> list[FlushOutcome]:
        """Convert and commit batches to the lake (runs in a worker thread)."""
        outcomes = []
        if self._columns_pending and batches:
            self._put_columns(required=True)
        for batch in batches:
            plan = (plan_json_flush if self.spec.format == "json" else plan_flush)(
                batch, self.layout
            )
            state = self.store.commit_flush(
                self.topic,
                batch.partition,
                batch.first_offset,
                batch.last_offset,
                plan.files,
                self.checkpoint,
            )
            outcomes.append(
                FlushOutcome(
                    batch.partition,
                    batch.first_offset,
                    batch.last_offset,
                    plan.rows,
                    state.files,
                    len(plan.bad),
                )
            )
        return outcomes

    async def flush(self, partitions: Sequence[int]) -> list[FlushOutcome]:
        """Flush the given partitions' buffers now, then commit their Kafka offsets."""
        async with self._lock:
            outcomes = await self._write(self._take(partitions))
        await self._after_flush(outcomes)
        return outcomes

    def _take(self, partitions: Sequence[int]) -> list[Batch]:
        # Call with the lock held: a rebalance may have dropped or emptied a partition.
        pending = set(self.buffers.pending())
        return [self.buffers.take(p) for p in partitions if p in pending]

    async def _write(self, batches: list[Batch]) -> list[FlushOutcome]:
        # Call with the lock held, so a revocation waits for the flush to finish.
        if not batches:
            return []
        work = asyncio.ensure_future(asyncio.to_thread(self._flush_batches, batches))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            # Let the thread finish its flush (a half-done one is recovered anyway, but a
            # finished one saves re-reading), then go on being cancelled.
            await asyncio.wait([work])
            raise

    async def _after_flush(self, outcomes: Sequence[FlushOutcome]) -> None:
        for outcome in outcomes:
            self.stats.flushes += 1
            self.stats.rows += outcome.rows
            self.stats.files += len(outcome.files)
            self.stats.bad_lines += outcome.bad_lines
            self.stats.last_flush_at = time.time()
            self.stats.last_flush_rows[outcome.partition] = outcome.rows
            log.info(
                "sink %s: wrote %d rows of %s/%d offsets %d..%d in %d files%s",
                self.name,
                outcome.rows,
                self.topic,
                outcome.partition,
                outcome.first_offset,
                outcome.last_offset,
                len(outcome.files),
                f", {outcome.bad_lines} failed conversion" if outcome.bad_lines else "",
            )
        await self._commit(outcomes)

    def _add_rows(self, buffer: PartitionBuffer, segment: list) -> None:
        """Convert a run of one partition's messages and hold the rows in its buffer."""
        if not segment or self.spec.format == "json":
            return  # a JSON-lines sink writes the values it holds, unconverted
        conversion = convert(
            [m.value for m in segment],
            [m.offset for m in segment],
            self.conversion,
            [m.timestamp for m in segment],
        )
        chunks, folders = folder_chunks(
            conversion,
            self.layout.prefix,
            time_field=self.schema.time_field if self.schema is not None else "",
            fallback_ms=max(m.timestamp for m in segment),
            table=self.spec.table,
        )
        # What the converted tables hold (Arrow buffers), plus the failed lines' bytes.
        memory = sum(
            t.get_total_buffer_size() + (0 if isinstance(k, str) else k.get_total_buffer_size())
            for t, k in chunks
        )
        memory += sum(len(bad.line) for bad in conversion.bad)
        buffer.add_rows(chunks, folders, conversion.bad, memory)

    def _buffer(self, records: dict[TopicPartition, list]) -> list[Batch]:
        """Convert polled messages into the buffers; returns the batches to flush now.

        Runs in a worker thread with the lock held (pyarrow releases the GIL while it
        parses, so the event loop keeps heart-beating).
        """
        full: list[Batch] = []
        keep_raw = self.layout.archive_prefix is not None or self.spec.format == "json"
        for tp, messages in records.items():
            buffer = self.buffers.get(tp.partition)
            segment: list = []
            for message in messages:
                events = message_event_count(message.value, message.headers)
                if not buffer.append(
                    message.offset,
                    message.value,
                    events,
                    message.timestamp,
                    keep=keep_raw,
                    key=message.key,
                    headers=message.headers,
                ):
                    # A re-delivery (a seek at assignment re-fetches what a poll already
                    # returned): already buffered, so neither buffered nor counted again.
                    continue
                self.stats.messages += 1
                if message.value:
                    segment.append(message)
                # Checked per message, so a batch overshoots its bound by one message at
                # most, however many messages one poll returns.
                if buffer.is_full():
                    self._add_rows(buffer, segment)
                    segment = []
                    full.append(buffer.take())
            self._add_rows(buffer, segment)
        usages = [
            BufferUsage(b.partition, b.memory, b.started_at or 0.0, b.folders)
            for b in self.buffers
            if not b.empty
        ]
        for eviction in evictions(
            usages, self.spec.memory_limit_bytes, self.spec.max_open_partitions
        ):
            early = self.stats.early_flushes
            early[eviction.reason] = early.get(eviction.reason, 0) + 1
            log.info(
                "sink %s: early flush of partition %d (%s)",
                self.name,
                eviction.key,
                eviction.reason,
            )
            full.append(self.buffers.take(eviction.key))
        return full

    async def _poll_once(self, consumer: AIOKafkaConsumer) -> None:
        self._raise_assign_error()
        records = await consumer.getmany(
            timeout_ms=self._poll_timeout_ms(), max_records=self.max_records
        )
        self._raise_assign_error()  # never buffer a partition that was not recovered
        owned = consumer.assignment()
        for tp, messages in records.items():
            high = consumer.highwater(tp)
            if high is not None and messages and tp in owned:
                self.stats.lag[tp.partition] = max(0, high - messages[-1].offset - 1)
        generation = self._generation
        async with self._lock:
            if generation != self._generation:
                # A rebalance ran while we waited for the lock: these records predate the
                # positions it set, and the consumer fetches them again from there.
                return
            batches = await asyncio.to_thread(self._buffer, records) if records else []
            batches += self._take(self.buffers.due())
            if self.spec.flush_when_caught_up:
                batches += self._take(await self._caught_up(consumer))
            outcomes = await self._write(batches)
        await self._after_flush(outcomes)

    async def _caught_up(self, consumer: AIOKafkaConsumer) -> list[int]:
        """Partitions holding a buffer whose position reached the last stable offset.

        With ``flush_when_caught_up`` these flush at once instead of at a hint: nothing
        more is there to wait for, so a replay test's lake is complete at quiescence.
        """
        ready = []
        for partition in self.buffers.pending():
            tp = TopicPartition(self.topic, partition)
            stable = consumer.last_stable_offset(tp)
            try:
                position = await consumer.position(tp)
            except IllegalStateError:  # revoked meanwhile
                continue
            if stable is not None and position >= stable:
                ready.append(partition)
        return ready

    async def _commit(self, outcomes: Sequence[FlushOutcome]) -> None:
        # Advisory: the lake already holds the truth, so a failed commit is only logged.
        if self._consumer is None or not outcomes:
            return
        offsets = {TopicPartition(self.topic, o.partition): o.last_offset + 1 for o in outcomes}
        await self._commit_offsets(offsets)
        if self.checkpoint:
            self.checkpoint("after_commit")

    async def _commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the group's offsets; a failure is counted and logged (the lake is ahead)."""
        assert self._consumer is not None
        try:
            await self._consumer.commit(offsets)
        except (KafkaError, IllegalStateError) as exc:
            self.stats.commit_failures += 1
            log.warning("sink %s: offset commit failed (lake is ahead): %s", self.name, exc)

    # ----------------------------------------------------------------- main loop

    def _poll_timeout_ms(self) -> int:
        deadline = self.buffers.next_deadline()
        if deadline is None:
            return self.poll_ms
        wait_ms = int((deadline - self.buffers.clock()) * 1000) + 1
        return max(0, min(self.poll_ms, wait_ms))

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume and write until ``stop`` is set (or the task is cancelled), then flush.

        A broker restart or stall does not end it: after a rejoinable error
        (:mod:`streams.rejoin`) the buffers are dropped — the lake holds the truth, and the
        partitions may have moved meanwhile — and a new consumer joins the group.
        """
        stop = stop or asyncio.Event()
        if self._columns_pending:
            # At start too, not only before a first flush: a sink restarted with a new Glue
            # table (sinks.fleet) may have nothing left to flush.
            await asyncio.to_thread(self._put_columns)

        def rejoin(error: BaseException) -> None:
            self.stats.rejoins += 1
            self.buffers.drop([b.partition for b in self.buffers])

        await run_rejoining(f"sink {self.name}", lambda: self._consume(stop), stop, rejoin)

    async def _consume(self, stop: asyncio.Event) -> None:
        kafka = self.config.kafka
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap,
            group_id=f"firelake-sink-{self.name}",
            client_id=f"{kafka.client_id}-sink-{self.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            group_instance_id=os.environ.get(INSTANCE_ENV) or None,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            # Harmless without transactions; with a transactional router, aborted batches
            # are never written and the sink never reads past an open transaction.
            isolation_level="read_committed",
            # One poll's raw data counts against the memory budget too: keep it a slice.
            fetch_max_bytes=max(MiB, min(FETCH_MAX_BYTES, self.spec.memory_limit_bytes // 8)),
            max_partition_fetch_bytes=MiB,
            # Fewer, fuller fetches under load (the broker's CPU goes per round trip); the
            # sink buffers for seconds anyway, so waiting this long for data costs nothing.
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self._consumer = consumer
        self._assign_error = None
        consumer.subscribe([self.topic], listener=_Listener(self))
        await consumer.start()
        log.info(
            "sink %s: %s -> %s/%s", self.name, self.topic, self.destination.url, self.spec.table
        )
        try:
            try:
                while not stop.is_set():
                    await self._poll_once(consumer)
            except asyncio.CancelledError:
                # Cancellation is how the CLI stops services: finish like a stop request.
                await asyncio.shield(self.flush(self.buffers.pending()))
                raise
            await self.flush(self.buffers.pending())
        finally:
            self._consumer = None
            # A consumer cut off from its broker may wait long to leave its group: bounded.
            try:
                await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT_S)
            except Exception as exc:
                log.warning("sink %s: consumer did not stop cleanly: %r", self.name, exc)
            log.info("sink %s: stopped (%s)", self.name, self.stats)


async def run_sink(
    config: FirelakeConfig, sink_name: str, stop: asyncio.Event | None = None
) -> SinkStats:
    """Run one sink until ``stop`` is set; returns its :class:`SinkStats`."""
    sink = ParquetSink(config, sink_name)
    await sink.run(stop)
    return sink.stats


async def run_sinks(
    config: FirelakeConfig, names: Sequence[str], stop: asyncio.Event | None = None
) -> list[SinkStats]:
    """Run several sinks in this process, one consumer each; one failing stops them all."""
    stop = stop or asyncio.Event()
    sinks = [ParquetSink(config, name) for name in names]
    async with asyncio.TaskGroup() as group:
        for sink in sinks:
            group.create_task(sink.run(stop), name=f"sink-{sink.name}")
    return [sink.stats for sink in sinks]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sinks.sink --config FILE (--sink NAME ... | --all)``."""
    from firelake.log import setup_logging

    parser = argparse.ArgumentParser(
        prog="python -m sinks.sink", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", default=None, help="configuration file (TOML)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--sink", action="append", help="sink name (repeatable)")
    which.add_argument("--all", action="store_true", help="every sink of the configuration")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    config = load_config(args.config)  # FIRELAKE_KAFKA_BOOTSTRAP / FIRELAKE_LAKE apply here
    names = list(config.sinks) if args.all else list(dict.fromkeys(args.sink))
    for name in names:
        if name not in config.sinks:
            parser.error(f"no sink {name!r} in {config.source} (sinks: {', '.join(config.sinks)})")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_sinks(config, names, stop)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())

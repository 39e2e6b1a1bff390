"""The router's Kafka edge: Lambda event-source-mapping semantics, exactly-once output.

Yle's Router Lambda with its event source mapping becomes a worker in consumer group
``firelake-router-<name>`` reading the router's source streams. Like the mapping, it reads
**batches per partition** (``batch_size`` events or ``batch_window_seconds``, whichever comes
first), hands each raw message to the pure :class:`~agents.routing.Router`, and delivers what
comes out. Several workers of one router share the partitions (one consumer group).

**Exactly-once into the destination streams.** Each source partition has its own
transactional producer (``transactional.id = <group>-<topic>-<partition>``). A batch's
outgoing envelopes, its DLQ records *and* the batch's source offsets are committed in one
Kafka transaction, so a batch is either wholly routed and consumed, or not at all. After a
crash (even SIGKILL) the next owner of the partition opens the same transactional id, which
aborts the dead worker's open transaction and fences it; the uncommitted input is routed
again and only its committed copy is ever visible to ``read_committed`` readers. Readers of
the typed streams and the DLQ **must** consume with ``isolation_level="read_committed"``.

Why not Faust's ``processing_guarantee="exactly_once"``: faust-streaming keys its
transactional producers by the *destination* partition (it assumes co-partitioned output)
and logs, rather than raises, failed commits (faust-streaming issues #177, #323, #517);
a router sends to other topics with other partition counts, so it manages its
transactions itself with aiokafka, which the Faust worker only wrapped here anyway.

**Failures** (:class:`agents.retry.RetryPolicy`): a batch whose delivery fails is retried
whole, with exponential backoff and full jitter, until ``max_retry_attempts`` or
``max_record_age_seconds`` runs out; then — a partial batch failure, like
``ReportBatchItemFailures`` — only the events of the envelopes Kafka refused go to the DLQ
(``delivery_failed``, with attempts and first/last attempt time) and the rest is delivered.
If even that fails, the worker exits non-zero with its input uncommitted. Only transient
errors are retried (``agents/edge.py``, :func:`~agents.edge.failure_kind`): a record the
producer refuses itself goes to the DLQ at once, and a terminal error (an authorization
error, a producer in a fatal state) stops the worker at once, non-zero, input uncommitted.
A fenced producer (a newer worker owns the partition) drops the batch for its new owner.
Bad *data* never stops a partition: it becomes DLQ records at once.

**Owning a partition.** A worker routes a partition only while it *owns* it: from the end
of its take-over (it opened the partition's transactional producer, which fences the previous
owner and waits out or aborts its open transaction, then re-read the committed offset) until
its revocation starts or its producer is fenced. Revocation takes the partition out of
:attr:`RouterWorker.owned` at once, before waiting for the batch in flight, and every chunk
checks ownership before and after its transform, so a rebalance waits for at most one chunk.
A worker never opens a producer for a partition it does not own (that would fence the rightful
owner), and one that re-opens a producer of its own after a failed transaction checks that
the committed offset is still the one it last committed. The consumer's rebalance timeout
and poll interval are sized from a worst-case chunk (:func:`chunk_seconds`). aiokafka's
``TxnOffsetCommit`` carries no group generation (KIP-447), so it is the transactional
fencing, not the group, that keeps an evicted worker from committing.

The retry loop, the DLQ fallback and the counters are shared with the Faust engine
(``agents/edge.py``). ``routers.<name>.engine = "faust"`` runs the router as a Faust agent
instead (``agents/faust_agent.py``, at-least-once); :func:`run_router` and :func:`main`
dispatch on it.

Run it as ``python -m agents.router --config FILE --router NAME``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import TopicPartition

from agents.dedup_log import DedupLog
from agents.edge import (
    DeliveryError,
    Fenced,
    Routed,
    SendFailed,
    app_id,
    deliver,
    event_count,
    refused_at_send,
    route_records_off_loop,
)
from agents.metrics import EdgeStats, RouterCollector, metrics_ports, serve_metrics
from agents.routing import DEFAULT_MAX_ENVELOPE_BYTES, Outgoing, Router
from firelake.aio import run as run_loop
from firelake.config import ConfigError, FirelakeConfig, load_config
from firelake.log import setup_logging
from streams.positions import starting_offsets
from streams.rejoin import is_rejoinable, run_rejoining

__all__ = [
    "STATS_INTERVAL_SECONDS",
    "DeliveryError",
    "RouterWorker",
    "app_id",
    "chunk_seconds",
    "main",
    "run_router",
    "transactional_id",
]

log = logging.getLogger("firelake.router")

#: How often the worker logs its counters.
STATS_INTERVAL_SECONDS = 60.0
#: Largest fetch per partition: a few full envelopes.
_FETCH_BYTES = 8 * 1024 * 1024
#: A fetch answers once this much is there, or after _FETCH_MAX_WAIT_MS (bench/pipeline.py:
#: the broker's CPU per event falls with fewer round trips; latency grows by at most that).
_FETCH_MIN_BYTES = 256 * 1024
_FETCH_MAX_WAIT_MS = 100
#: Delivering one chunk's transaction, with headroom (aiokafka's request timeout is 40 s).
_DELIVERY_SECONDS = 60.0
#: The longest rebalance timeout asked for: a rebalance waits at most this for a slow member.
_MAX_CHUNK_SECONDS = 1800.0
#: Retries assumed when max_retry_attempts is -1 (only the record age ends them).
_UNLIMITED_RETRIES = 10


def chunk_seconds(spec: Any) -> float:
    """The longest one chunk (``batch_size`` events, one transaction) may take, capped.

    A rebalance waits for the chunk in flight (on_revoked holds it back), so the consumer's
    rebalance timeout must outlast it or the broker evicts the worker mid-chunk. The worst
    chunk calls its transform for every node of the bisect tree (``2n - 1`` calls) and
    retries every single event ``max_retry_attempts`` times, each call up to
    ``transform_timeout_seconds`` plus its backoff, and then delivers with its retries.
    """
    retries = spec.max_retry_attempts if spec.max_retry_attempts >= 0 else _UNLIMITED_RETRIES
    delivery = (retries + 1) * (_DELIVERY_SECONDS + spec.retry_max_seconds)
    if not spec.transform:
        return min(_MAX_CHUNK_SECONDS, delivery)
    timeout = spec.transform_timeout_seconds or _MAX_CHUNK_SECONDS  # 0: no timeout
    singles = spec.batch_size if spec.bisect_on_error else 1
    calls = (2 * singles - 1) + singles * retries
    transform = calls * timeout + singles * retries * spec.retry_max_seconds
    return min(_MAX_CHUNK_SECONDS, transform + delivery)


def transactional_id(router_name: str, topic: str, partition: int) -> str:
    """The transactional id owning one source partition's output (stable across workers)."""
    return f"{app_id(router_name)}-{topic}-{partition}"


@dataclass
class _Pending:
    """Records read from one partition, not yet routed."""

    records: list[Any] = field(default_factory=list)
    events: int = 0
    since: float = 0.0


class _Listener(ConsumerRebalanceListener):
    def __init__(self, worker: RouterWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.worker.on_assigned(set(assigned))


class RouterWorker:
    """One worker process of a router: consume, route, deliver transactionally."""

    def __init__(
        self,
        config: FirelakeConfig,
        router_name: str,
        bootstrap: str | None = None,
        *,
        router: Router | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.router = router or Router(config, router_name)
        self.spec = self.router.spec
        self.name = router_name
        self.group = app_id(router_name)
        self.bootstrap = bootstrap or config.kafka.bootstrap
        if not self.bootstrap:
            raise ValueError(
                f"{config.source}: kafka.bootstrap is empty; start the broker first or set "
                "FIRELAKE_KAFKA_BOOTSTRAP"
            )
        self.client_id = f"{config.kafka.client_id}-router-{router_name}"
        self.policy = self.router.policy
        self.rng = rng or random.Random()
        self.edge = EdgeStats()
        self.collector = RouterCollector(router_name, self.router.stats, self.edge)
        self.consumer: AIOKafkaConsumer | None = None
        self.producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self.pending: dict[TopicPartition, _Pending] = {}
        #: Event ids logged in each batch's transaction, read back on assignment.
        dedup = self.router.dedup
        self.dedup_log = (
            DedupLog(config, router_name, dedup, self.bootstrap) if dedup is not None else None
        )
        # Held while batches are routed and committed: a rebalance waits for them, so a
        # revoked partition never has a transaction in flight when its new owner starts.
        self.lock = asyncio.Lock()
        #: Partitions being taken over (fencing, dedup read-back): their records wait.
        self.loading: set[TopicPartition] = set()
        #: Partitions this worker routes: taken over and neither revoked nor fenced since.
        self.owned: set[TopicPartition] = set()
        #: Fenced while still assigned: taken over again before the next batch.
        self.retake: set[TopicPartition] = set()
        chunk = chunk_seconds(self.spec)
        self.rebalance_seconds = chunk + 30.0
        self.max_poll_seconds = max(300.0, 2 * chunk + 60.0)
        #: How long one flush routes before it lets the loop poll again.
        self.flush_seconds = self.max_poll_seconds - chunk - 30.0
        #: The source offset this worker last committed (or found committed) per owned
        #: partition: a re-opened producer checks nobody else has committed since.
        self.committed_at: dict[TopicPartition, int | None] = {}
        #: Revocations begun so far: a take-over again owns nothing revoked meanwhile.
        self.revocations = 0
        #: Why the last take-over failed; the loop raises it to rejoin.
        self.takeover_failed: Exception | None = None

    # ------------------------------------------------------------------ rebalance

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Before waiting for the lock: the chunk in flight sees it and the flush stops there,
        # so the rebalance waits for one chunk, not for everything fetched.
        self.owned -= revoked
        self.retake -= revoked
        self.revocations += 1
        async with self.lock:
            for tp in revoked:
                self.pending.pop(tp, None)  # read, not committed: the next owner reads it
                self.committed_at.pop(tp, None)
                producer = self.producers.pop(tp, None)
                if producer is not None:
                    await producer.stop()
                if self.router.dedup is not None:
                    self.router.dedup.drop_partition(tp.topic, tp.partition)
            if revoked:
                log.info("router %s: revoked %s", self.name, sorted(map(tuple, revoked)))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("router %s: assigned %s", self.name, sorted(map(tuple, assigned)))
        # aiokafka starts fetching before this callback returns: hold the partitions back
        # until the previous owner is fenced and the dedup window is read back.
        self.loading |= assigned
        try:
            await self._take_over(assigned)
        except Exception as exc:
            # aiokafka only logs a listener's error: keep the partitions held back and
            # make the loop rejoin, so nothing is routed without its dedup window.
            log.warning("router %s: taking over %s failed: %r", self.name, assigned, exc)
            self.takeover_failed = exc
            return
        self.loading -= assigned
        self.owned |= assigned

    async def _take_over(self, assigned: set[TopicPartition]) -> None:
        """Fence the previous owners, read the dedup log, then resume at the committed offsets.

        Opening a partition's transactional producer makes the coordinator finish or abort
        whatever transaction the previous owner (another worker, or this one before a
        rejoin) left in flight; only then are the dedup log and the committed offsets final,
        so a batch whose commit was in doubt is neither routed again nor lost. This holds
        with the dedup window off too: only the read-back depends on it.
        """
        consumer = self.consumer
        if consumer is None:
            return
        for tp in assigned:
            await self._producer(tp, take_over=True)
        if self.dedup_log is not None:
            await self.dedup_log.load(assigned)
        committed = {tp: await consumer.committed(tp) for tp in assigned}
        self.committed_at.update(committed)
        fresh = [tp for tp, offset in committed.items() if offset is None]
        start: dict[TopicPartition, int] = {}
        if fresh and self.spec.starting_position == "TRIM_HORIZON":
            start = await consumer.beginning_offsets(fresh)
        elif fresh and self.spec.starting_position == "LATEST":
            start = await consumer.end_offsets(fresh)
        elif fresh and self.spec.starting_position == "AT_TIMESTAMP":
            timestamp = self.spec.starting_timestamp
            start = await starting_offsets(consumer, fresh, "AT_TIMESTAMP", timestamp)
        # No await from here until the partitions are released: what was fetched before
        # these seeks is discarded, what comes after them is routed (a seek after the
        # release raced the loop, which routed a first fetch from the earliest offset).
        for tp, offset in committed.items():
            target = offset if offset is not None else start.get(tp)
            if target is not None:
                consumer.seek(tp, target)

    # ------------------------------------------------------------------ delivery

    async def _producer(self, tp: TopicPartition, *, take_over: bool = False) -> AIOKafkaProducer:
        """The partition's transactional producer, opened (which fences its other users) only
        by a take-over or by the owner; raises :class:`Fenced` otherwise."""
        producer = self.producers.get(tp)
        if producer is None:
            if not take_over and tp not in self.owned:
                # Opening it would fence the partition's new owner and abort its transaction.
                raise Fenced(f"{tp.topic}[{tp.partition}] is no longer ours")
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id=self.client_id,
                transactional_id=transactional_id(self.name, tp.topic, tp.partition),
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                max_batch_size=DEFAULT_MAX_ENVELOPE_BYTES + 64 * 1024,
                max_request_size=1024 * 1024,
            )
            # start() initialises the transactional id: aborts a dead owner's open
            # transaction and fences it, before this worker writes anything.
            await producer.start()
            if not take_over:
                # Re-opened after a failed transaction: if another worker committed since
                # (this one was evicted unawares), our position is stale and we just fenced
                # the owner: leave the partition, the owner takes it over again.
                consumer = self.consumer
                committed = await consumer.committed(tp) if consumer is not None else None
                if tp not in self.owned or committed != self.committed_at.get(tp):
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    raise Fenced(f"{tp.topic}[{tp.partition}] was committed by another worker")
            self.producers[tp] = producer
        return producer

    async def _transaction(
        self, producer: AIOKafkaProducer, tp: TopicPartition, out: list[Outgoing], next_offset: int
    ) -> None:
        """One transaction: every message and the source offset.

        Raises when the transaction did not commit; SendFailed's list says which sends failed.
        """
        errors: list[BaseException | None] = [None] * len(out)
        async with producer.transaction():
            pending: list[tuple[int, Any]] = []
            for index, o in enumerate(out):
                try:
                    future = await producer.send(
                        o.stream, o.value, key=o.key, partition=o.partition, headers=o.headers
                    )
                except KafkaError as exc:  # refused before it left (e.g. too big)
                    errors[index] = refused_at_send(exc)
                else:
                    pending.append((index, future))
            results = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
            for (index, _), result in zip(pending, results, strict=True):
                if isinstance(result, BaseException):
                    errors[index] = result
            if any(errors):
                raise SendFailed(errors)
            logged = await self.dedup_log.record(producer, tp) if self.dedup_log else 0
            await producer.send_offsets_to_transaction({tp: next_offset}, self.group)
        if self.dedup_log is not None:
            self.dedup_log.committed(tp, logged)

    async def _deliver(self, tp: TopicPartition, routed: list[Routed]) -> bool:
        """Commit one partition's batch with the shared retries, then its DLQ fallback.

        False when the batch was dropped because the partition is not ours any more.
        """
        next_offset = routed[-1].record.offset + 1

        async def attempt(out: list[Outgoing]) -> None:
            producer = await self._producer(tp)
            try:
                try:
                    await self._transaction(producer, tp, out, next_offset)
                    self.committed_at[tp] = next_offset
                except SendFailed as exc:
                    # A fenced producer fails its pending sends with ProducerFenced.
                    fenced = next((e for e in exc.errors if isinstance(e, ProducerFenced)), None)
                    if fenced is None:
                        raise
                    raise fenced from exc
            except ProducerFenced as exc:
                # A newer worker owns this partition now: it re-reads what we did not commit.
                log.warning("router %s: fenced on %s; leaving it", self.name, tuple(tp))
                self.producers.pop(tp, None)
                await producer.stop()
                raise Fenced from exc

        async def reset() -> None:
            # Replace a producer whose transaction failed: re-initialising the transactional
            # id aborts whatever the failed one left open, whether abortable or fatal.
            producer = self.producers.pop(tp, None)
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()

        return await deliver(self.router, self.edge, routed, attempt, rng=self.rng, reset=reset)

    # ------------------------------------------------------------------ the loop

    def _leave(self, tp: TopicPartition, *, fenced: bool) -> None:
        """Stop routing a partition (revoked or fenced): forget what its dropped chunk saw."""
        if fenced and tp in self.owned:
            # No revocation seen: another worker opened our producer. Take the partition over
            # again (fence, re-read the committed offset) unless a rebalance moves it first.
            self.retake.add(tp)
        self.owned.discard(tp)
        if self.router.dedup is not None:
            # The dropped chunk's ids were never committed: they must not reach the log.
            self.router.dedup.drop_partition(tp.topic, tp.partition)

    async def _chunk(self, tp: TopicPartition, chunk: list[Any]) -> bool:
        """Route and commit one chunk of a partition; False when the partition is not ours."""
        if tp not in self.owned:
            return False
        routed = await route_records_off_loop(
            self.router, self.edge, chunk, keep=lambda: tp in self.owned
        )
        if routed is None or tp not in self.owned:
            self._leave(tp, fenced=False)
            return False
        if not await self._deliver(tp, routed):
            self._leave(tp, fenced=True)
            return False
        return True

    async def _flush(self, ready: list[TopicPartition]) -> None:
        # A flush hands the rest back to the loop after this long, so the consumer is polled
        # well within its max_poll_interval whatever the backlog.
        deadline = time.monotonic() + self.flush_seconds

        async def one(tp: TopicPartition) -> None:
            # batch_size caps a batch (Lambda's BatchSize): a big fetch becomes several
            # transactions, in offset order. The partition stops at the first chunk it
            # does not own any more: its new owner routes the rest from the committed offset.
            records = self.pending.pop(tp).records
            chunk: list[Any] = []
            events = 0
            for index, record in enumerate(records):
                count = event_count(record.headers)
                if chunk and events + count > self.spec.batch_size:
                    if not await self._chunk(tp, chunk):
                        return
                    chunk, events = [], 0
                    if time.monotonic() >= deadline:
                        rest = records[index:]
                        self.pending[tp] = _Pending(
                            rest, sum(event_count(r.headers) for r in rest), 0.0
                        )
                        return
                chunk.append(record)
                events += count
            if chunk:
                await self._chunk(tp, chunk)

        tasks = [asyncio.ensure_future(one(tp)) for tp in ready]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # One partition failed: stop the others too, so no transaction of this worker
            # is still in flight when it rejoins or exits.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _retake(self, tps: set[TopicPartition]) -> None:
        """Take over again partitions fenced while assigned (see :meth:`_leave`)."""
        log.info("router %s: taking over %s again", self.name, sorted(map(tuple, tps)))
        revocations = self.revocations
        for tp in tps:
            self.pending.pop(tp, None)
        self.loading |= tps
        await self._take_over(tps)  # raises to rejoin, with the partitions held back
        self.loading -= tps
        if self.revocations == revocations:
            self.owned |= tps

    def _update_lag(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """Lag of each partition just read: its high watermark minus the next offset."""
        consumer = self.consumer
        assert consumer is not None
        for tp, records in batches.items():
            high = consumer.highwater(tp)
            if high is not None and records:
                self.edge.lag[(tp.topic, tp.partition)] = max(0, high - records[-1].offset - 1)

    async def run(self, stop: asyncio.Event) -> None:
        """Route until ``stop`` is set; then commit what was routed and leave the group."""
        spec = self.spec
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id=self.client_id,
            enable_auto_commit=False,
            # A rebalance waits for the chunk in flight: past the rebalance timeout the
            # broker would evict this worker mid-chunk (aiokafka's default: the 10 s session
            # timeout). A flush polls again within flush_seconds plus one chunk.
            rebalance_timeout_ms=int(1000 * self.rebalance_seconds),
            max_poll_interval_ms=int(1000 * self.max_poll_seconds),
            auto_offset_reset="latest" if spec.starting_position == "LATEST" else "earliest",
            # Upstream routers (pipes and filters) and redrives write transactionally.
            isolation_level="read_committed",
            max_partition_fetch_bytes=_FETCH_BYTES,
            fetch_max_bytes=4 * _FETCH_BYTES,
            # Under load, fewer and fuller fetches: each fetch round trip costs the broker
            # about as much as the records in it; an idle stream waits at most this long.
            fetch_min_bytes=_FETCH_MIN_BYTES,
            fetch_max_wait_ms=_FETCH_MAX_WAIT_MS,
        )
        self.consumer.subscribe(list(spec.sources), listener=_Listener(self))
        await self.consumer.start()
        log.info(
            "router %s: reading %s as group %s; routes %s; rules %d; filters %d; DLQ %s",
            self.name,
            ", ".join(spec.sources),
            self.group,
            dict(spec.routes),
            len(spec.rules),
            len(spec.filters),
            spec.dlq,
        )
        window = spec.batch_window_seconds
        next_stats = time.monotonic() + STATS_INTERVAL_SECONDS
        try:
            while not stop.is_set():
                if self.takeover_failed is not None:
                    failed, self.takeover_failed = self.takeover_failed, None
                    self.loading.clear()
                    raise failed
                wait_ms = int(window * 1000) if not self.pending else 10
                batches = await self.consumer.getmany(timeout_ms=max(10, wait_ms))
                now = time.monotonic()
                async with self.lock:
                    assigned = self.consumer.assignment()
                    retake, self.retake = self.retake & assigned, set()
                    if retake:
                        await self._retake(retake)
                    for tp, records in batches.items():
                        if tp not in assigned or tp in self.loading or tp not in self.owned:
                            continue  # re-read from the committed offset once taken over
                        pending = self.pending.get(tp)
                        if pending is None:
                            pending = self.pending[tp] = _Pending(since=now)
                        pending.records.extend(records)
                        pending.events += sum(event_count(r.headers) for r in records)
                    ready = [
                        tp
                        for tp, p in self.pending.items()
                        if p.events >= spec.batch_size or now - p.since >= window
                    ]
                    if ready:
                        await self._flush(ready)
                self._update_lag(batches)
                if now >= next_stats:
                    next_stats = now + STATS_INTERVAL_SECONDS
                    log.info("router %s: %s %s", self.name, self.router.stats, self.edge)
            # A clean stop routes and commits what was read, so a restart repeats nothing.
            async with self.lock:
                if self.pending:
                    await self._flush(list(self.pending))
        finally:
            log.info("router %s stopping: %s", self.name, self.router.stats)
            try:
                await self.consumer.stop()
            except asyncio.CancelledError:
                # aiokafka can let its own tasks' cancellation out of stop() (a take-over
                # in flight when the broker went away): only this task's own counts.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
            except Exception:
                log.debug("router %s: consumer stop failed", self.name, exc_info=True)
            for producer in list(self.producers.values()):
                with contextlib.suppress(Exception):
                    await producer.stop()
            self.producers.clear()
            self.owned.clear()
            self.retake.clear()
            self.committed_at.clear()
            self.loading.clear()
            if self.router.transform is not None:
                self.router.transform.close()


async def serve_router(
    config: FirelakeConfig, router_name: str, bootstrap: str | None = None
) -> None:
    """Run one worker until SIGTERM/SIGINT (raises DeliveryError on a lost batch)."""
    worker = RouterWorker(config, router_name, bootstrap)
    spec = worker.spec
    if spec.metrics_port:
        ports = metrics_ports(spec)
        serve_metrics(worker.collector, ports.start, tries=len(ports))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def rejoin(error: BaseException) -> None:
        # Nothing uncommitted survives a rejoin: the next assignment re-reads the input
        # from the committed offsets and the dedup window from its log.
        worker.edge.rejoins += 1
        worker.pending.clear()
        if worker.router.dedup is not None:
            worker.router.dedup.clear()

    def rejoinable(error: BaseException) -> bool:
        # A batch the broker could not take while it was away (retries spent): its input is
        # uncommitted, so rejoining re-reads it — riding the outage out, not exiting.
        if isinstance(error, DeliveryError):
            failed = getattr(error.cause, "errors", None) or [error.cause]
            return all(is_rejoinable(e) for e in failed if e is not None)
        return is_rejoinable(error)

    await run_rejoining(
        f"router {router_name}", lambda: worker.run(stop), stop, rejoin, rejoinable=rejoinable
    )


def run_router(
    config: FirelakeConfig,
    router_name: str,
    bootstrap: str | None = None,
    *,
    loglevel: str = "info",
) -> int:
    """Run the router in this process until SIGTERM/SIGINT, on its engine; its exit code.

    ``routers.<name>.engine`` picks the runtime: the transactional worker here, or the
    Faust agent (:func:`agents.faust_agent.run_faust_router`).
    """
    spec = config.routers.get(router_name)
    if spec is not None and spec.engine == "faust":
        # Imported only when chosen: Faust is a heavy import the default engine never needs.
        from agents.faust_agent import run_faust_router

        return run_faust_router(config, router_name, bootstrap, loglevel=loglevel)
    del loglevel  # logging is set up by the caller (firelake.log)
    try:
        run_loop(serve_router(config, router_name, bootstrap))
    except DeliveryError as exc:
        log.error("%s", exc)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.router --config FILE --router NAME``."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.router",
        description="Run one Firelake router worker (on its configured engine).",
    )
    parser.add_argument("--config", help="Firelake TOML file (default: firelake.toml or example)")
    parser.add_argument("--router", required=True, help="Router name (key under [routers])")
    parser.add_argument(
        "--bootstrap", help="Kafka bootstrap address (default: config / FIRELAKE_KAFKA_BOOTSTRAP)"
    )
    parser.add_argument("--log-level", default=None, help="Log level (default: INFO)")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
        if args.router not in config.routers:
            known = ", ".join(sorted(config.routers)) or "none"
            raise ConfigError(config.source, "routers", f"no router {args.router!r} ({known})")
    except ConfigError as exc:
        print(f"firelake router: {exc}", file=sys.stderr)
        return 2
    try:
        return run_router(
            config, args.router, args.bootstrap, loglevel=(args.log_level or "info").lower()
        )
    except ValueError as exc:
        print(f"firelake router: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

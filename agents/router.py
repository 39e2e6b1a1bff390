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
If even that fails, the worker exits non-zero with its input uncommitted. Bad *data* never
stops a partition: it becomes DLQ records at once.

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
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import TopicPartition

from agents.metrics import EdgeStats, RouterCollector, serve_metrics
from agents.routing import DEFAULT_MAX_ENVELOPE_BYTES, Outgoing, Router
from agents.validation import DELIVERY_FAILED
from firelake.config import ConfigError, FirelakeConfig, load_config
from firelake.log import setup_logging
from streams.envelope import HEADER_COUNT, decode

__all__ = [
    "STATS_INTERVAL_SECONDS",
    "DeliveryError",
    "RouterWorker",
    "app_id",
    "main",
    "run_router",
    "transactional_id",
]

log = logging.getLogger("firelake.router")

#: How often the worker logs its counters.
STATS_INTERVAL_SECONDS = 60.0
#: Largest fetch per partition: a few full envelopes.
_FETCH_BYTES = 8 * 1024 * 1024


class DeliveryError(RuntimeError):
    """Kafka did not accept a batch even after its retries and its DLQ fallback."""

    def __init__(self, topic: str, partition: int, offset: int, cause: BaseException) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.cause = cause
        super().__init__(
            f"could not deliver the envelopes routed from {topic}[{partition}]@{offset}: {cause!r}"
        )


def app_id(router_name: str) -> str:
    """The consumer group of a router (also the prefix of its transactional ids)."""
    return f"firelake-router-{router_name}"


def transactional_id(router_name: str, topic: str, partition: int) -> str:
    """The transactional id owning one source partition's output (stable across workers)."""
    return f"{app_id(router_name)}-{topic}-{partition}"


def _event_count(headers: Sequence[tuple[str, bytes]] | None) -> int:
    for name, value in headers or ():
        if name == HEADER_COUNT:
            try:
                return max(1, int(value))
            except ValueError:
                return 1
    return 1


@dataclass
class _Routed:
    """One raw message and what the router made of it."""

    record: Any
    outgoing: list[Outgoing]


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
        # Held while batches are routed and committed: a rebalance waits for them, so a
        # revoked partition never has a transaction in flight when its new owner starts.
        self.lock = asyncio.Lock()

    # ------------------------------------------------------------------ rebalance

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            for tp in revoked:
                self.pending.pop(tp, None)  # read, not committed: the next owner reads it
                producer = self.producers.pop(tp, None)
                if producer is not None:
                    await producer.stop()
                if self.router.dedup is not None:
                    self.router.dedup.drop_partition(tp.topic, tp.partition)
            if revoked:
                log.info("router %s: revoked %s", self.name, sorted(map(tuple, revoked)))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("router %s: assigned %s", self.name, sorted(map(tuple, assigned)))
        consumer = self.consumer
        if consumer is None or self.spec.starting_position != "AT_TIMESTAMP" or not assigned:
            return
        fresh = [tp for tp in assigned if await consumer.committed(tp) is None]
        if not fresh:
            return
        moment = datetime.fromisoformat(self.spec.starting_timestamp)
        stamp = int(moment.timestamp() * 1000)
        found = await consumer.offsets_for_times({tp: stamp for tp in fresh})
        ends = await consumer.end_offsets(fresh)
        for tp in fresh:
            meta = found.get(tp)
            consumer.seek(tp, meta.offset if meta is not None else ends[tp])

    # ------------------------------------------------------------------ delivery

    async def _producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = self.producers.get(tp)
        if producer is None:
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
            self.producers[tp] = producer
        return producer

    async def _transaction(
        self, producer: AIOKafkaProducer, tp: TopicPartition, out: list[Outgoing], next_offset: int
    ) -> list[BaseException | None]:
        """One transaction: every message and the source offset; per-message errors.

        Raises when the transaction did not commit; the list says which sends failed.
        """
        errors: list[BaseException | None] = [None] * len(out)
        async with producer.transaction():
            futures = [
                await producer.send(
                    o.stream, o.value, key=o.key, partition=o.partition, headers=o.headers
                )
                for o in out
            ]
            results = await asyncio.gather(*futures, return_exceptions=True)
            for index, result in enumerate(results):
                if isinstance(result, BaseException):
                    errors[index] = result
            if any(errors):
                raise _SendFailed(errors)
            await producer.send_offsets_to_transaction({tp: next_offset}, self.group)
        return errors

    async def _deliver(self, tp: TopicPartition, routed: list[_Routed]) -> None:
        """Commit one partition's batch with retries, then its DLQ fallback."""
        out = [o for r in routed for o in r.outgoing]
        next_offset = routed[-1].record.offset + 1
        first_attempt = self.router.dead_letters.now()
        retries = 0
        while True:
            producer = await self._producer(tp)
            try:
                await self._transaction(producer, tp, out, next_offset)
                self.edge.batches += 1
                return
            except ProducerFenced:
                # A newer worker owns this partition now: it re-reads what we did not commit.
                log.warning("router %s: fenced on %s; leaving it", self.name, tuple(tp))
                self.producers.pop(tp, None)
                await producer.stop()
                return
            except (KafkaError, _SendFailed, OSError) as exc:
                failure = exc
            oldest = min((r.record.timestamp for r in routed), default=None)
            if self.policy.may_retry(retries) and not self.policy.too_old(oldest, time.time()):
                delay = self.policy.delay(retries, self.rng)
                retries += 1
                self.edge.retries += 1
                log.warning(
                    "router %s: batch from %s[%d] failed (%s); retry %d in %.2fs",
                    self.name,
                    tp.topic,
                    tp.partition,
                    _describe(failure),
                    retries,
                    delay,
                )
                await self._reset(tp, producer)
                await asyncio.sleep(delay)
                continue
            break
        # Out of budget: dead-letter only the events of the refused messages.
        self.edge.delivery_failures += 1
        failed = failure.errors if isinstance(failure, _SendFailed) else [failure] * len(out)
        replacement = self._dead_letter_failed(routed, failed, retries + 1, first_attempt)
        await self._reset(tp, producer)
        producer = await self._producer(tp)
        try:
            await self._transaction(producer, tp, replacement, next_offset)
            self.edge.batches += 1
        except (KafkaError, _SendFailed, OSError) as exc:
            first = routed[0].record
            raise DeliveryError(tp.topic, tp.partition, first.offset, exc) from exc

    async def _reset(self, tp: TopicPartition, producer: AIOKafkaProducer) -> None:
        """Replace a producer whose transaction failed: the next one starts clean.

        (Re-initialising the transactional id aborts whatever the failed one left open,
        whether its error was abortable or fatal.)
        """
        self.producers.pop(tp, None)
        with contextlib.suppress(Exception):
            await producer.stop()

    def _dead_letter_failed(
        self,
        routed: list[_Routed],
        errors: list[BaseException | None],
        attempts: int,
        first_attempt: str,
    ) -> list[Outgoing]:
        """The batch's messages with every refused one replaced by DLQ records."""
        keep: list[Outgoing] = []
        dead: list[Outgoing] = []
        position = 0
        now = self.router.dead_letters.now()
        for item in routed:
            record = item.record
            envelope = None
            records: list[dict[str, Any]] = []
            for o in item.outgoing:
                error = errors[position]
                position += 1
                if error is None:
                    keep.append(o)
                    continue
                if envelope is None:
                    envelope = decode(record.value, record.headers, record.key)
                for index in dict.fromkeys(o.origins):
                    records.append(
                        self.router.dead_letters.record(
                            envelope.lines[index],
                            DELIVERY_FAILED,
                            f"{o.stream}[{o.partition}] refused: {_describe(error)}",
                            source_topic=record.topic,
                            source_partition=record.partition,
                            source_offset=record.offset,
                            source_index=index,
                            failed_at=now,
                            attempts=attempts,
                            first_attempt_at=first_attempt,
                            source_key=envelope.key_at(index),
                        )
                    )
            counts = self.router.stats.dead_lettered
            counts[DELIVERY_FAILED] = counts.get(DELIVERY_FAILED, 0) + len(records)
            self.router.emit_dead(records, record.partition, dead)
        return keep + dead

    # ------------------------------------------------------------------ the loop

    def _route(self, tp: TopicPartition, records: list[Any]) -> list[_Routed]:
        route = self.router.route
        routed = []
        for record in records:
            outgoing = route(
                record.value,
                record.headers,
                record.key,
                record.topic,
                record.partition,
                record.offset,
                record.timestamp,
            )
            routed.append(_Routed(record, outgoing))
        if records:
            last = records[-1]
            self.edge.age_s[(tp.topic, tp.partition)] = max(
                0.0, time.time() - last.timestamp / 1000.0
            )
        return routed

    async def _flush(self, ready: list[TopicPartition]) -> None:
        async def one(tp: TopicPartition) -> None:
            # batch_size caps a batch (Lambda's BatchSize): a big fetch becomes several
            # transactions, in offset order.
            records = self.pending.pop(tp).records
            chunk: list[Any] = []
            events = 0
            for record in records:
                count = _event_count(record.headers)
                if chunk and events + count > self.spec.batch_size:
                    await self._deliver(tp, self._route(tp, chunk))
                    chunk, events = [], 0
                chunk.append(record)
                events += count
            if chunk:
                await self._deliver(tp, self._route(tp, chunk))

        await asyncio.gather(*(one(tp) for tp in ready))

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
            auto_offset_reset="latest" if spec.starting_position == "LATEST" else "earliest",
            # Upstream routers (pipes and filters) and redrives write transactionally.
            isolation_level="read_committed",
            max_partition_fetch_bytes=_FETCH_BYTES,
            fetch_max_bytes=4 * _FETCH_BYTES,
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
                wait_ms = int(window * 1000) if not self.pending else 10
                batches = await self.consumer.getmany(timeout_ms=max(10, wait_ms))
                now = time.monotonic()
                async with self.lock:
                    assigned = self.consumer.assignment()
                    for tp, records in batches.items():
                        if tp not in assigned:
                            continue
                        pending = self.pending.get(tp)
                        if pending is None:
                            pending = self.pending[tp] = _Pending(since=now)
                        pending.records.extend(records)
                        pending.events += sum(_event_count(r.headers) for r in records)
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
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            for producer in list(self.producers.values()):
                with contextlib.suppress(Exception):
                    await producer.stop()
            self.producers.clear()
            if self.router.transform is not None:
                self.router.transform.close()


class _SendFailed(Exception):
    """Some sends of a transaction failed; ``errors`` holds each message's error or None."""

    def __init__(self, errors: list[BaseException | None]) -> None:
        self.errors = errors
        first = next(e for e in errors if e is not None)
        super().__init__(f"{sum(e is not None for e in errors)} sends failed, first: {first!r}")


def _describe(error: BaseException | None) -> str:
    if isinstance(error, _SendFailed):
        error = next(e for e in error.errors if e is not None)
    return f"{type(error).__name__}: {error}"


async def serve_router(
    config: FirelakeConfig, router_name: str, bootstrap: str | None = None
) -> None:
    """Run one worker until SIGTERM/SIGINT (raises DeliveryError on a lost batch)."""
    worker = RouterWorker(config, router_name, bootstrap)
    spec = worker.spec
    if spec.metrics_port:
        serve_metrics(worker.collector, spec.metrics_port, tries=max(spec.workers, 2))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.run(stop)


def run_router(
    config: FirelakeConfig,
    router_name: str,
    bootstrap: str | None = None,
    *,
    loglevel: str = "info",
) -> int:
    """Run a router worker in this process until SIGTERM/SIGINT; its exit code."""
    del loglevel  # logging is set up by the caller (firelake.log)
    try:
        asyncio.run(serve_router(config, router_name, bootstrap))
    except DeliveryError as exc:
        log.error("%s", exc)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.router --config FILE --router NAME``."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.router", description="Run one Firelake router worker."
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
        return run_router(config, args.router, args.bootstrap)
    except ValueError as exc:
        print(f"firelake router: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

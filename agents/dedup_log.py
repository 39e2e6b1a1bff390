"""The router's durable idempotency window: event ids logged in the batch's own transaction.

The memory-only window (``agents.dedup``) forgot every id when a router restarted or a
partition moved, so a record the ingest reported failed (its delivery unknown at the
answer deadline) and the client's retry could both be routed. Here the ids a batch
accepted travel in the *same Kafka transaction* as the batch's output and source offsets:
one message per batch on the topic ``firelake-router-<name>-dedup``, keyed by source
``topic:partition``, valued ``{"ids": [...]}`` and stamped with the batch's commit time.
Either the batch's output and its ids are both committed, or neither is.

A worker that is assigned a partition reads that partition's log back (``read_committed``,
from ``now - window`` to the last stable offset) into its window before it routes, so a
repeat is dropped across restarts, SIGKILLs and rebalances.

Layout: the log has one partition per source partition of the router (sorted
``(topic, partition)`` pairs), so each log partition has exactly one writer — the source
partition's transactional id. A dead owner's open transaction therefore holds back only
its own partition's last stable offset, and every committed id of that partition lies
before it. The log's retention is the window plus an hour (``cleanup.policy=delete``): the
window is time-based, so old batches simply age out; compaction by key would keep only the
last batch of a partition.

The guarantee: within ``dedup_window_seconds`` of the first copy being routed, a repeat of
an event id (the producer's ``event_id`` field, or the hash of the event's bytes the router
assigns when it has none) read from the same source partition is routed at most once —
whatever crashed or moved in between. Repeats must share the partition key (they do when a
client retries a record as it was).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from agents.dedup import DedupWindow
from agents.edge import app_id
from firelake.config import FirelakeConfig
from streams.admin import TopicSpec, admin_client, ensure_topic

__all__ = ["DedupLog", "dedup_topic"]

log = logging.getLogger("firelake.router")

#: Kept beyond the window, so a slow restart still finds the ids of the window's start.
RETENTION_MARGIN_MS = 3_600_000
#: Longest a read-back may take; past it the worker fails (transiently) and rejoins.
LOAD_TIMEOUT_S = 30.0


def dedup_topic(router_name: str) -> str:
    """The topic holding a router's logged event ids."""
    return f"{app_id(router_name)}-dedup"


class DedupLog:
    """One router's dedup log: written inside its transactions, read back on assignment."""

    def __init__(
        self, config: FirelakeConfig, router_name: str, window: DedupWindow, bootstrap: str
    ) -> None:
        spec = config.routers[router_name]
        self.config = config
        self.topic = dedup_topic(router_name)
        self.window = window
        self.bootstrap = bootstrap
        self.client_id = f"{config.kafka.client_id}-router-{router_name}-dedup"
        pairs = sorted((s, p) for s in spec.sources for p in range(config.streams[s].partitions))
        #: (source topic, partition) -> the log partition that holds its ids
        self.slots = {pair: index for index, pair in enumerate(pairs)}
        window.track_unsaved = True
        self._ready = False

    def _ensure_topic(self) -> None:
        retention_ms = int(self.window.window_s * 1000) + RETENTION_MARGIN_MS
        spec = TopicSpec(
            partitions=len(self.slots),
            configs={"cleanup.policy": "delete", "retention.ms": str(retention_ms)},
        )
        with admin_client(self.bootstrap, f"{self.client_id}-admin") as admin:
            ensure_topic(admin, self.topic, spec, self.config.kafka.replication_factor)

    async def start(self) -> None:
        """Create the log topic unless it exists."""
        if not self._ready:
            await asyncio.to_thread(self._ensure_topic)
            self._ready = True

    async def record(self, producer: AIOKafkaProducer, tp: TopicPartition) -> int:
        """Send the partition's unsaved ids in the producer's open transaction; their count.

        Call inside the batch's transaction, then :meth:`committed` once it committed.
        """
        ids = self.window.unsaved(tp.topic, tp.partition)
        if ids:
            await producer.send(
                self.topic,
                orjson.dumps({"ids": ids}),
                key=f"{tp.topic}:{tp.partition}".encode(),
                partition=self.slots[(tp.topic, tp.partition)],
            )
        return len(ids)

    def committed(self, tp: TopicPartition, count: int) -> None:
        """The batch's transaction committed: its ``count`` ids are durable."""
        self.window.saved(tp.topic, tp.partition, count)

    async def load(self, assigned: Iterable[TopicPartition]) -> int:
        """Read the logged ids of the window for newly assigned partitions; how many."""
        wanted = {
            self.slots[(tp.topic, tp.partition)]: tp
            for tp in assigned
            if (tp.topic, tp.partition) in self.slots
        }
        if not wanted:
            return 0
        await self.start()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            # A log partition without a leader (the broker just restarted) fails the
            # take-over soon; the worker rejoins and tries again.
            request_timeout_ms=15_000,
        )
        await consumer.start()
        loaded = 0
        try:
            log_tps = [TopicPartition(self.topic, slot) for slot in wanted]
            consumer.assign(log_tps)
            since_ms = int((self.window.clock() - self.window.window_s) * 1000)
            found = await consumer.offsets_for_times({tp: since_ms for tp in log_tps})
            ends = await consumer.end_offsets(log_tps)  # the last stable offsets
            for tp in log_tps:
                meta = found.get(tp)
                consumer.seek(tp, meta.offset if meta is not None else ends[tp])
            todo = {tp for tp in log_tps if await consumer.position(tp) < ends[tp]}
            deadline = asyncio.get_running_loop().time() + LOAD_TIMEOUT_S
            while todo:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"{self.topic}: not read back within {LOAD_TIMEOUT_S} s")
                batches = await consumer.getmany(*todo, timeout_ms=1000)
                for log_tp, messages in batches.items():
                    source = wanted[log_tp.partition]
                    for message in messages:
                        seen_at = message.timestamp / 1000
                        for event_id in orjson.loads(message.value)["ids"]:
                            self.window.remember(source.topic, source.partition, event_id, seen_at)
                            loaded += 1
                todo = {tp for tp in todo if await consumer.position(tp) < ends[tp]}
        finally:
            await consumer.stop()
        log.info(
            "router dedup: %d event ids of the last %gs read back for %s",
            loaded,
            self.window.window_s,
            sorted(map(tuple, wanted.values())),
        )
        return loaded

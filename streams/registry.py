"""The registry topic: streams, delivery streams and tables created through the AWS APIs.

Every Firelake process — ingest instances, routers, sinks, a restarted ingest, on any host
— must see what CreateStream / CreateDeliveryStream / glue CreateTable made, so the
registry lives in Kafka itself: a compacted single-partition topic
(:data:`REGISTRY_TOPIC`), key ``stream/<name>``, ``delivery/<name>`` or
``table/<database>/<name>``, value the entry as JSON (:mod:`streams.resources`), a
tombstone on delete. Compaction keeps the latest entry per key forever, and one partition
keeps all changes in one order.

:class:`RegistryStore` is the long-lived reader-writer the ingest uses; a write is followed
by reading the topic up to its end, so the writer sees its own change (and any other
process' earlier ones) before it answers. :func:`load_registry` reads it once, for
tooling and for ``firelake up`` / the sinks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.admin import AUTO_REPLICATION, TopicSpec, admin_client, ensure_topic
from streams.resources import Registry
from streams.topics import MAX_MESSAGE_BYTES

__all__ = [
    "REGISTRY_TOPIC",
    "RegistryStore",
    "aload_registry",
    "ensure_registry_topic",
    "load_registry",
]

log = logging.getLogger(__name__)

#: The compacted topic that holds the registry.
REGISTRY_TOPIC = "_firelake_registry"


def ensure_registry_topic(
    bootstrap: str,
    topic: str = REGISTRY_TOPIC,
    timeout_s: float = 30,
    replication: int = AUTO_REPLICATION,
) -> None:
    """Create the compacted registry topic if it does not exist (administration, blocking).

    ``replication`` is ``kafka.replication_factor`` (0: chosen by the cluster's size).
    """
    spec = TopicSpec(1, {"cleanup.policy": "compact", "max.message.bytes": str(MAX_MESSAGE_BYTES)})
    with admin_client(bootstrap, "firelake-registry-admin", timeout_s) as admin:
        ensure_topic(admin, topic, spec, replication, timeout_s)


class RegistryStore:
    """The registry kept in memory and in sync with its topic.

    ``start()`` creates the topic if needed and reads it whole; ``refresh()`` reads what
    other processes added since; ``put()`` writes an entry (``None`` deletes it) and
    returns once this store has read it back.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = REGISTRY_TOPIC,
        client_id: str = "firelake",
        replication: int = AUTO_REPLICATION,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_id = client_id
        self.replication = replication
        self.registry = Registry()
        self._tp = TopicPartition(topic, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await asyncio.to_thread(
            ensure_registry_topic, self.bootstrap, self.topic, replication=self.replication
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.client_id}-registry",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.client_id}-registry",
            acks="all",
            enable_idempotence=True,
            max_request_size=MAX_MESSAGE_BYTES,
        )
        await consumer.start()
        try:
            await producer.start()
        except BaseException:
            await consumer.stop()
            raise
        consumer.assign([self._tp])
        await consumer.seek_to_beginning(self._tp)
        self._consumer, self._producer = consumer, producer
        await self.refresh()

    async def stop(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        if producer is not None:
            await producer.stop()
        if consumer is not None:
            await consumer.stop()

    async def refresh(self, timeout_s: float = 10.0) -> Registry:
        """Read the topic up to its current end; returns the registry."""
        if self._consumer is None:
            raise RuntimeError("the registry store is not started")
        async with self._lock:
            consumer = self._consumer
            end = (await consumer.end_offsets([self._tp]))[self._tp]
            async with asyncio.timeout(timeout_s):
                while await consumer.position(self._tp) < end:
                    batches = await consumer.getmany(self._tp, timeout_ms=500)
                    for message in batches.get(self._tp, ()):
                        if message.key is not None:
                            key = message.key.decode("utf-8", "replace")
                            self.registry.apply(key, message.value)
                            reason = self.registry.skipped.get(key)
                            if reason is not None:
                                log.warning("registry: entry %s skipped: %s", key, reason)
        return self.registry

    async def put(self, key: str, entry: dict[str, Any] | None) -> Registry:
        """Write an entry (``None``: a tombstone) and read the registry up to it."""
        if self._producer is None:
            raise RuntimeError("the registry store is not started")
        value = orjson.dumps(entry) if entry is not None else None
        await self._producer.send_and_wait(self.topic, value, key=key.encode("utf-8"), partition=0)
        return await self.refresh()

    async def __aenter__(self) -> RegistryStore:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def aload_registry(bootstrap: str, topic: str = REGISTRY_TOPIC) -> Registry:
    """Read the registry once (creating its topic if it is missing)."""
    async with RegistryStore(bootstrap, topic) as store:
        return store.registry


def load_registry(bootstrap: str, topic: str = REGISTRY_TOPIC) -> Registry:
    """:func:`aload_registry` for synchronous callers (``firelake up``, tooling)."""
    return asyncio.run(aload_registry(bootstrap, topic))

"""The router as a Faust agent (``routers.<name>.engine = "faust"``): at-least-once output.

The design card's stand-in for the Router Lambda: one Faust agent (faust-streaming) over the
router's source streams, in consumer group ``firelake-router-<name>`` (the same group as the
transactional worker, so the engines can replace each other on one router). For each raw
message the agent asks the same pure :class:`~agents.routing.Router` as the transactional
engine for the outgoing envelopes, sends each to its explicit partition with its headers,
and **acks the message only after Kafka confirmed every delivery** (it awaits the delivery
futures: a producer flush would not report a failed send). Faust commits acked offsets
every ``broker_commit_interval``, so a crash — even SIGKILL — loses nothing: what was not
acked is read again. It may duplicate: messages delivered but not yet committed are routed
again after a restart (at-least-once). For exactly-once output use the default
``"transactional"`` engine (``agents/router.py``).

Failures follow the same policy, through the same code (``agents/edge.py``): a message whose
delivery fails is retried with exponential backoff and full jitter until
``max_retry_attempts`` or ``max_record_age_seconds`` runs out (envelopes Kafka already
confirmed are not sent again), then the events of the refused envelopes go to the DLQ as
``delivery_failed`` records; if even that is refused the agent crashes the worker (exit 1)
with the message unacked. The counters and the ``/metrics`` endpoint are the other engine's
(:mod:`agents.metrics`); a "batch" here is one raw message.

Why the agent routes one raw message at a time: one raw message is an envelope of up to
hundreds of events (the design's "pay per-message costs per batch"), and handling messages
in order keeps each key's order across retries. Faust's ``take_events`` batching was not
used: it acks a batch in a ``finally`` even when the body raised, which would ack
undelivered input on the crash path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.types import TP
from mode import CrashingSupervisor

from agents.edge import (
    DeliveryError,
    SendFailed,
    SourceMessage,
    app_id,
    deliver,
    refused_at_send,
    route_records_off_loop,
)
from agents.metrics import EdgeStats, RouterCollector, metrics_ports, serve_metrics
from agents.routing import DEFAULT_MAX_ENVELOPE_BYTES, Outgoing, Router
from firelake.config import FirelakeConfig

__all__ = [
    "STATS_INTERVAL_SECONDS",
    "FaustRouterEdge",
    "RouterApp",
    "Send",
    "agent_name",
    "build_app",
    "faust_settings",
    "record_of",
    "run_faust_router",
    "run_worker",
]

log = logging.getLogger("firelake.router")

#: How often the agent logs its counters.
STATS_INTERVAL_SECONDS = 60.0

#: Hands one envelope to Kafka; the awaitable it returns resolves when Kafka confirmed it.
Send = Callable[[Outgoing], Awaitable[Awaitable[Any]]]


def agent_name(router_name: str) -> str:
    """The Faust agent's name within the router's app."""
    return f"router-{router_name}"


def record_of(message: Any) -> SourceMessage:
    """The edge's record of a ``faust.types.Message`` (raw serializers; timestamp in ms)."""
    headers = message.headers
    if isinstance(headers, Mapping):
        headers = list(headers.items())
    stamp = message.timestamp
    return SourceMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        # Faust turns the record's epoch ms into float seconds; round it back.
        timestamp=round(stamp * 1000) if stamp is not None else -1,
        key=message.key,
        value=message.value,
        headers=list(headers) if headers is not None else None,
    )


class FaustRouterEdge:
    """What the agent does with one event: route, deliver with retries, then ack.

    Kept apart from the Faust app so the agent body is one call and Faust's ``test_context``
    can drive it with any :data:`Send`.
    """

    def __init__(
        self,
        router: Router,
        *,
        rng: random.Random | None = None,
        highwater: Callable[[str, int], int | None] | None = None,
    ) -> None:
        self.router = router
        self.rng = rng or random.Random()
        self.edge = EdgeStats()
        self.collector = RouterCollector(router.name, router.stats, self.edge)
        self.highwater = highwater

    async def handle(self, event: Any, send: Send) -> None:
        """Route ``event``'s message, deliver its envelopes, ack it once all are confirmed.

        Raises :class:`~agents.edge.DeliveryError` (the event stays unacked) when Kafka
        refused even the DLQ fallback.
        """
        record = record_of(event.message)
        routed = await route_records_off_loop(self.router, self.edge, [record])
        # Envelopes Kafka confirmed (by identity): a retry resends only the others, so a
        # partial failure adds no duplicates of its own.
        delivered: set[int] = set()

        async def attempt(out: list[Outgoing]) -> None:
            errors: list[BaseException | None] = [None] * len(out)
            inflight: list[tuple[int, Outgoing, Awaitable[Any]]] = []
            for index, o in enumerate(out):
                if id(o) in delivered:
                    continue
                try:
                    inflight.append((index, o, await send(o)))
                except (KafkaError, OSError) as exc:  # refused before it left (e.g. too big)
                    errors[index] = refused_at_send(exc)
            results = await asyncio.gather(*(f for _, _, f in inflight), return_exceptions=True)
            for (index, o, _), result in zip(inflight, results, strict=True):
                if isinstance(result, BaseException):
                    errors[index] = result
                else:
                    delivered.add(id(o))
            if any(e is not None for e in errors):
                raise SendFailed(errors)

        await deliver(self.router, self.edge, routed, attempt, rng=self.rng)
        event.ack()
        if self.highwater is not None:
            high = self.highwater(record.topic, record.partition)
            if high is not None:
                key = (record.topic, record.partition)
                self.edge.lag[key] = max(0, high - record.offset - 1)

    def revoked(self, partitions: set[tuple[str, int]]) -> None:
        """Forget the dedup memory of partitions another worker now owns."""
        dedup = self.router.dedup
        if dedup is not None:
            for topic, partition in partitions:
                dedup.drop_partition(topic, partition)


class RouterApp(faust.App):
    """The Faust app of one router; ``router_edge`` holds its edge (counters, handler)."""

    router_edge: FaustRouterEdge


def faust_settings(bootstrap: str, datadir: str | Path) -> dict[str, Any]:
    """The Faust app settings every Firelake agent shares (router and window): each adds
    its own offset reset and producer sizes."""
    return {
        "broker": [f"kafka://{a.strip()}" for a in bootstrap.split(",") if a.strip()],
        "store": "memory://",
        "datadir": str(datadir),
        "web_enabled": False,
        # Topics are created by streams/topics with their configured partitions and
        # retention: Faust must never declare topics, nor make its leader-election topic.
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "producer_acks": -1,
        # One raw message holds hundreds of events: a small buffer bounds memory, and
        # bounds how long a rebalance waits for buffered messages (stream_wait_empty).
        "stream_buffer_maxsize": 256,
        "broker_commit_interval": 1.0,
        # aiokafka's defaults, as the transactional worker has them: Faust's own 60 s session
        # timeout kept a crashed worker's partitions unread for a minute after a SIGKILL.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 3.0,
        "agent_supervisor": CrashingSupervisor,
    }


def run_worker(app: faust.App, loglevel: str = "info") -> int | None:
    """Run ``app``'s Faust worker in this process until SIGTERM/SIGINT: the exit code its
    ``SystemExit`` carried, None if it returned without one."""
    # faust.Worker installs SIGTERM/SIGINT handlers that stop the app cleanly (acked
    # offsets are committed on the way out).
    worker = faust.Worker(
        app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=False
    )
    # The terminal spinner writes cursor escapes into log files; firelake logs instead.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return None


def build_app(
    config: FirelakeConfig,
    router_name: str,
    bootstrap: str | None = None,
    *,
    datadir: str | Path | None = None,
    router: Router | None = None,
    send: Send | None = None,
) -> RouterApp:
    """A Faust app running router ``router_name`` of ``config`` against ``bootstrap``.

    ``bootstrap`` defaults to ``config.kafka.bootstrap`` (comma-separated host:port list).
    ``datadir`` is Faust's scratch folder (nothing is kept there: the store is in memory);
    by default a fresh temporary folder the caller removes. ``router`` lets tests inject a
    prepared Router; ``send`` replaces the app's producer (for Faust's ``test_context``).
    """
    router = router or Router(config, router_name)
    spec = router.spec
    bootstrap = config.require_bootstrap(bootstrap)
    if datadir is None:
        datadir = tempfile.mkdtemp(prefix=f"{app_id(router_name)}-")
    app = RouterApp(
        app_id(router_name),
        **faust_settings(bootstrap, datadir),
        consumer_auto_offset_reset="latest" if spec.starting_position == "LATEST" else "earliest",
        producer_linger=0.005,
        # Envelopes are up to DEFAULT_MAX_ENVELOPE_BYTES plus headers; Kafka's default
        # message.max.bytes (1 MiB) is the real ceiling.
        producer_max_request_size=1024 * 1024,
        producer_max_batch_size=DEFAULT_MAX_ENVELOPE_BYTES + 64 * 1024,
    )
    consumer_highwater: Callable[[str, int], int | None] | None = None
    if send is None:

        async def send_with_producer(o: Outgoing) -> Awaitable[Any]:
            producer = await app.maybe_start_producer()
            return await producer.send(o.stream, o.key, o.value, o.partition, None, o.headers)

        def consumer_highwater(topic: str, partition: int) -> int | None:
            try:
                return app.consumer.highwater(TP(topic, partition))
            except Exception:  # not fetched yet, or revoked meanwhile: no lag to report
                return None

        send = send_with_producer
    edge = FaustRouterEdge(router, highwater=consumer_highwater)
    app.router_edge = edge
    source = app.topic(
        *spec.sources,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,  # a tombstone is bad data for the DLQ, not a reason to crash
    )
    deliver_with: Send = send  # non-None from here on, for the agent closure

    async def route(stream: faust.StreamT) -> None:
        log.info(
            "router %s (faust): reading %s as group %s; routes %s; rules %d; filters %d; DLQ %s",
            router_name,
            ", ".join(spec.sources),
            app_id(router_name),
            dict(spec.routes),
            len(spec.rules),
            len(spec.filters),
            spec.dlq,
        )
        try:
            # noack: the agent acks each message itself, after its deliveries.
            async for event in stream.noack().events():
                await edge.handle(event, deliver_with)
        finally:
            log.info("router %s stopping: %s %s", router_name, router.stats, edge.edge)

    app.agent(source, name=agent_name(router_name), supervisor_strategy=CrashingSupervisor)(route)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        edge.revoked({(tp.topic, tp.partition) for tp in revoked})

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
        # Same log line as the transactional worker: operators and tests key off it.
        log.info("router %s: assigned %s", router_name, sorted(map(tuple, assigned)))

    @app.timer(STATS_INTERVAL_SECONDS)
    async def report() -> None:
        log.info("router %s: %s %s", router_name, router.stats, edge.edge)

    return app


def run_faust_router(
    config: FirelakeConfig,
    router_name: str,
    bootstrap: str | None = None,
    *,
    loglevel: str = "info",
) -> int:
    """Run the router's Faust worker in this process until SIGTERM/SIGINT; its exit code.

    0 after a clean stop; 1 when the agent crashed (a :class:`~agents.edge.DeliveryError`:
    its input stays unacked and is routed again after a restart).
    """
    datadir = Path(tempfile.mkdtemp(prefix=f"{app_id(router_name)}-"))
    app: RouterApp | None = None
    try:
        app = build_app(config, router_name, bootstrap, datadir=datadir)
        spec = app.router_edge.router.spec
        if spec.metrics_port:
            ports = metrics_ports(spec)
            serve_metrics(app.router_edge.collector, ports.start, tries=len(ports))
        code = run_worker(app, loglevel)
        if code is None:
            return 0
        crash = app.crash_reason
        if isinstance(crash, DeliveryError):
            log.error("%s", crash)
            return code or 1
        return code
    finally:
        if app is not None and app.router_edge.router.transform is not None:
            app.router_edge.router.transform.close()
        shutil.rmtree(datadir, ignore_errors=True)

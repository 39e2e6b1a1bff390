"""The router as a Faust agent: the thin Kafka edge around :class:`agents.routing.Router`.

Yle's Router Lambda with its event source mapping becomes one Faust agent on the router's
source stream, in consumer group ``firelake-router-<name>``. For each raw message (an
envelope of events) the agent asks the pure :class:`~agents.routing.Router` for the outgoing
envelopes and sends each to its explicit partition with its headers.

Delivery before acknowledgement: the agent iterates a ``noack`` stream, and a raw message is
acked (made committable) only when Kafka has acknowledged every envelope made from it, so a
crash never loses events (at-least-once; the lake sink deduplicates). Messages are routed
while earlier ones are still in flight, bounded by ``max_inflight`` raw messages, so the
agent pays one broker round trip per window, not per message. Faust does flush its producer
before committing offsets, but a flush does not report failed sends; the delivery futures
do. A failed delivery crashes the worker (its input stays uncommitted and is routed again
after a restart); bad *data* never does: it becomes DLQ records.

Run it as ``python -m agents.router --config FILE --router NAME``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
from mode import CrashingSupervisor

from agents.routing import DEFAULT_MAX_ENVELOPE_BYTES, Outgoing, Router
from firelake.config import ConfigError, FirelakeConfig, load_config
from firelake.log import setup_logging

__all__ = [
    "DEFAULT_MAX_INFLIGHT",
    "DRAIN_TIMEOUT_SECONDS",
    "STATS_INTERVAL_SECONDS",
    "DeliveryError",
    "app_id",
    "build_app",
    "main",
    "run_router",
]

log = logging.getLogger("firelake.router")

#: Most raw messages whose outgoing envelopes may await Kafka's acknowledgement at once.
DEFAULT_MAX_INFLIGHT = 64
#: How long a stopping agent waits for in-flight deliveries before giving up on them
#: (their inputs stay uncommitted and are routed again by the next worker).
DRAIN_TIMEOUT_SECONDS = 10.0
#: How often the agent logs its counters.
STATS_INTERVAL_SECONDS = 60.0


class DeliveryError(RuntimeError):
    """Kafka did not accept an outgoing envelope; names the source message and the cause."""

    def __init__(self, topic: str, partition: int, offset: int, cause: BaseException) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.cause = cause
        super().__init__(
            f"could not deliver the envelopes routed from {topic}[{partition}]@{offset}: {cause!r}"
        )


def app_id(router_name: str) -> str:
    """The Faust app id of a router, which is also its Kafka consumer group."""
    return f"firelake-router-{router_name}"


class _DeliveryWindow:
    """Outgoing envelopes awaiting Kafka, per raw message; acks the message when all land.

    Bounded by a semaphore of ``max_inflight`` raw messages: the agent stops reading when
    the window is full, which is the back pressure Faust's stream buffer passes upstream.
    """

    def __init__(self, app: faust.App, max_inflight: int) -> None:
        self.app = app
        self.slots = asyncio.Semaphore(max_inflight)
        self.pending: set[asyncio.Future[Any]] = set()
        self.failure: DeliveryError | None = None
        self.crashing: asyncio.Future[Any] | None = None

    async def send(self, event: Any, outgoing: Sequence[Outgoing]) -> None:
        """Send one raw message's envelopes; its ack follows their delivery."""
        if self.failure is not None:
            raise self.failure
        message = event.message
        if not outgoing:  # cannot happen for a routed message, but an empty one needs an ack
            event.ack()
            return
        await self.slots.acquire()
        try:
            producer = self.app.producer
            futures = [
                await producer.send(
                    o.stream,
                    key=o.key,
                    value=o.value,
                    partition=o.partition,
                    timestamp=None,
                    headers=o.headers,
                )
                for o in outgoing
            ]
        except BaseException as exc:
            self.slots.release()
            if isinstance(exc, Exception):
                raise DeliveryError(message.topic, message.partition, message.offset, exc) from exc
            raise
        together = asyncio.gather(*futures)
        self.pending.add(together)
        together.add_done_callback(lambda done: self._delivered(event, done))

    def _delivered(self, event: Any, done: asyncio.Future[Any]) -> None:
        self.pending.discard(done)
        self.slots.release()
        if done.cancelled():
            return  # shutting down: the input stays unacked and is routed again later
        exc = done.exception()
        if exc is None:
            event.ack()
            return
        message = event.message
        failure = DeliveryError(message.topic, message.partition, message.offset, exc)
        log.error("%s", failure)
        if self.failure is None:
            self.failure = failure
            # The agent may be idle, waiting for input: crash the worker from here so it
            # does not sit on an unacked message (Faust would wait for it forever).
            # (Kept apart from ``pending``: drain() must not wait for the crash itself.)
            self.crashing = asyncio.ensure_future(self.app.crash(failure))

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for in-flight deliveries so their inputs get acked before commit."""
        waiting = [f for f in self.pending if not f.done()]
        if waiting:
            _done, late = await asyncio.wait(waiting, timeout=timeout)
            if late:
                log.warning(
                    "%d raw messages still awaiting delivery after %.0fs; they will be "
                    "routed again",
                    len(late),
                    timeout,
                )


def build_app(
    config: FirelakeConfig,
    router_name: str,
    bootstrap: str | None = None,
    *,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    datadir: str | os.PathLike[str] | None = None,
    router: Router | None = None,
) -> faust.App:
    """A Faust app running router ``router_name`` of ``config`` against ``bootstrap``.

    ``bootstrap`` defaults to ``config.kafka.bootstrap`` (comma-separated host:port list).
    ``datadir`` is Faust's scratch folder (nothing is stored there: tables are in memory);
    by default a fresh temporary folder. ``router`` lets tests inject a prepared Router.
    """
    router = router or Router(config, router_name)
    spec = router.spec
    bootstrap = bootstrap or config.kafka.bootstrap
    if not bootstrap:
        raise ValueError(
            f"{config.source}: kafka.bootstrap is empty; start the broker first or set "
            "FIRELAKE_KAFKA_BOOTSTRAP"
        )
    if max_inflight < 1:
        raise ValueError(f"max_inflight must be >= 1, got {max_inflight}")
    brokers = [f"kafka://{address.strip()}" for address in bootstrap.split(",") if address.strip()]
    if datadir is None:
        datadir = tempfile.mkdtemp(prefix=f"{app_id(router_name)}-")
    app = faust.App(
        app_id(router_name),
        broker=brokers,
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        # Our topics are created by streams/topics with their configured partitions and
        # retention: Faust must never declare topics, nor make its leader-election topic.
        topic_allow_declare=False,
        topic_disable_leader=True,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.005,
        # Envelopes are up to DEFAULT_MAX_ENVELOPE_BYTES plus headers; Kafka's default
        # message.max.bytes (1 MiB) is the real ceiling.
        producer_max_request_size=1024 * 1024,
        producer_max_batch_size=DEFAULT_MAX_ENVELOPE_BYTES + 64 * 1024,
        # One raw message holds hundreds of events: a small buffer bounds memory.
        stream_buffer_maxsize=256,
        broker_commit_interval=1.0,
        agent_supervisor=CrashingSupervisor,
    )
    source = app.topic(
        spec.source,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,  # a tombstone is bad data for the DLQ, not a reason to crash
    )

    async def route(stream: faust.StreamT) -> None:
        window = _DeliveryWindow(app, max_inflight)
        log.info(
            "router %s: reading %s as group %s; routes %s; dead letters to %s",
            router_name,
            spec.source,
            app_id(router_name),
            dict(spec.routes),
            spec.dlq,
        )
        try:
            async for event in stream.noack().events():
                message = event.message
                stamp = message.timestamp
                outgoing = router.route(
                    message.value,
                    message.headers,
                    message.key,
                    message.topic,
                    message.partition,
                    message.offset,
                    # Faust turns the record's epoch ms into float seconds; round it back.
                    round(stamp * 1000) if stamp is not None else None,
                )
                await window.send(event, outgoing)
        finally:
            await window.drain(DRAIN_TIMEOUT_SECONDS)
            log.info("router %s stopping: %s", router_name, router.stats)

    app.agent(source, name=f"router-{router_name}", supervisor_strategy=CrashingSupervisor)(route)

    @app.timer(STATS_INTERVAL_SECONDS)
    async def report() -> None:
        log.info("router %s: %s", router_name, router.stats)

    return app


def run_router(
    config: FirelakeConfig,
    router_name: str,
    bootstrap: str | None = None,
    *,
    loglevel: str = "info",
) -> int:
    """Run the router's Faust worker in this process until SIGTERM/SIGINT; its exit code."""
    datadir = Path(tempfile.mkdtemp(prefix=f"{app_id(router_name)}-"))
    try:
        app = build_app(config, router_name, bootstrap, datadir=datadir)
        worker = faust.Worker(
            app,
            loglevel=loglevel,
            quiet=True,
            redirect_stdouts=False,
            override_logging=False,
        )
        # The terminal spinner writes cursor escapes into log files; firelake logs instead.
        worker.spinner = None
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return 0
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.router --config FILE --router NAME``."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.router", description="Run one Firelake router agent."
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

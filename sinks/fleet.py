"""Every sink a process should run, kept in step with the registry.

Sinks declared in ``firelake.toml`` run from the start. Firehose delivery streams created
through the AWS API (``CreateDeliveryStream``) live in the registry topic
(:mod:`streams.registry`); the fleet re-reads it every few seconds and starts a sink for each
new delivery stream and stops (flushing first) the sink of a deleted one — the way Firehose
starts delivering as soon as a delivery stream is ACTIVE, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from firelake.config import FirelakeConfig
from sinks.metrics import SinkCollector, serve_sink_metrics
from sinks.sink import ParquetSink
from streams.registry import REGISTRY_TOPIC, RegistryStore
from streams.rejoin import is_rejoinable
from streams.resources import registry_config

__all__ = ["run_sink_fleet", "sink_inputs"]

log = logging.getLogger("sinks.fleet")


#: Tries to reach the registry at start (the broker may be restarting), a few seconds apart.
REGISTRY_START_TRIES = 30


@contextlib.asynccontextmanager
async def _registry(
    config: FirelakeConfig, topic: str, stop: asyncio.Event
) -> AsyncIterator[RegistryStore]:
    """The started registry store; a broker that is away at start is waited for."""
    for attempt in range(1, REGISTRY_START_TRIES + 1):
        store = RegistryStore(config.bootstrap, topic, replication=config.kafka.replication_factor)
        try:
            await store.start()
            break
        except Exception as exc:
            with contextlib.suppress(Exception):
                await store.stop()
            if attempt == REGISTRY_START_TRIES or stop.is_set():
                raise
            log.warning("sinks: registry not reachable (%r); try %d again soon", exc, attempt)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
    try:
        yield store
    finally:
        await store.stop()


def sink_inputs(config: FirelakeConfig, name: str) -> tuple[object, ...]:
    """What sink ``name`` is built from: its settings, its stream's and its schema."""
    spec = config.sinks[name]
    stream = config.streams.get(spec.stream)
    schema = config.schemas.get(stream.schema) if stream is not None and stream.schema else None
    return (spec, stream, schema)


async def _stop_sink(
    name: str,
    running: dict[str, tuple[asyncio.Task[None], asyncio.Event]],
    sinks: dict[str, ParquetSink],
) -> None:
    task, sink_stop = running.pop(name)
    sinks.pop(name, None)
    sink_stop.set()
    await task


async def run_sink_fleet(
    config: FirelakeConfig,
    stop: asyncio.Event | None = None,
    registry_topic: str = REGISTRY_TOPIC,
    interval_seconds: float = 5.0,
    metrics_port: int = 0,
) -> None:
    """Run every configured and registered sink until ``stop``; one failing stops them all.

    ``metrics_port`` (non-zero) serves the sinks' Prometheus metrics (``sinks.metrics``).
    """
    stop = stop or asyncio.Event()
    running: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
    sinks: dict[str, ParquetSink] = {}
    #: What each running sink was built from (sink_inputs), to see it change.
    inputs: dict[str, tuple[object, ...]] = {}
    if metrics_port:
        serve_sink_metrics(SinkCollector(lambda: sinks), metrics_port)
    async with _registry(config, registry_topic, stop) as store:
        try:
            merged = config
            while not stop.is_set():
                try:
                    merged = registry_config(config, await store.refresh())
                except Exception as exc:
                    # The broker is away: the running sinks ride it out themselves.
                    if not is_rejoinable(exc):
                        raise
                    log.warning("sinks: registry not readable (%r); retrying", exc)
                for name in running.keys() - merged.sinks.keys():
                    await _stop_sink(name, running, sinks)
                    inputs.pop(name, None)
                    log.info("sink %s stopped: its delivery stream was deleted", name)
                for name in running.keys() & merged.sinks.keys():
                    if sink_inputs(merged, name) != inputs.get(name):
                        # e.g. a Glue table created after its raw JSON delivery stream: the
                        # sink stops (flushing what it holds) and starts again with it.
                        await _stop_sink(name, running, sinks)
                        log.info("sink %s restarts: its configuration changed", name)
                for name in merged.sinks.keys() - running.keys():
                    sink_stop = asyncio.Event()
                    sinks[name] = ParquetSink(merged, name)
                    inputs[name] = sink_inputs(merged, name)
                    task = asyncio.create_task(sinks[name].run(sink_stop), name=name)
                    running[name] = (task, sink_stop)
                    log.info("sink %s started (stream %s)", name, merged.sinks[name].stream)
                for name, (task, _) in running.items():
                    if task.done():
                        # A sink that died takes the process down; the supervisor restarts it.
                        task.result()
                        raise RuntimeError(f"sink {name} stopped on its own")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_seconds)
        finally:
            for _, sink_stop in running.values():
                sink_stop.set()
            results = await asyncio.gather(
                *(t for t, _ in running.values()), return_exceptions=True
            )
            for name, result in zip(running, results, strict=True):
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    log.error("sink %s failed: %r", name, result)

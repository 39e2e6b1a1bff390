"""Router metrics: Prometheus exposition of a router's counters and its consumer lag.

Counters live where they are counted (:class:`agents.routing.RouterStats` in the pure core,
:class:`EdgeStats` in the Kafka edge); a custom collector reads them at scrape time, so the
hot path pays no Prometheus calls. Lag per partition (end offset minus the next offset the
router reads) and the age of the last routed record are the book's "iterator age", the
number to alarm on. Each router process serves ``/metrics`` on 127.0.0.1 (``metrics_port``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agents.routing import RouterStats
from firelake.config import RouterConfig

__all__ = ["EdgeStats", "RouterCollector", "metrics_ports", "serve_metrics"]

log = logging.getLogger("firelake.router")


@dataclass
class EdgeStats:
    """What the Kafka edge of either engine counts: batches, retries, partition position."""

    batches: int = 0
    retries: int = 0
    delivery_failures: int = 0
    #: Times the worker rebuilt its consumer after a broker error (``streams.rejoin``).
    rejoins: int = 0
    #: (topic, partition) -> events between the router's position and the end of the log
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    #: (topic, partition) -> age in seconds of the newest record routed (iterator age)
    age_s: dict[tuple[str, int], float] = field(default_factory=dict)


class RouterCollector(Collector):
    """Yields a router's counters and gauges for Prometheus at scrape time."""

    def __init__(self, router: str, stats: RouterStats, edge: EdgeStats) -> None:
        self.router = router
        self.stats = stats
        self.edge = edge

    def collect(self) -> Iterator[Any]:
        r = [self.router]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(f"firelake_router_{name}", doc, labels=["router"])
            family.add_metric(r, value)
            return family

        stats, edge = self.stats, self.edge
        yield counter("messages", "Raw Kafka messages read.", stats.messages)
        yield counter("events_in", "Events read from the source streams.", stats.events_in)
        yield counter("routed", "(event, destination) deliveries.", stats.routed)
        yield counter("filtered", "Events matching no filter pattern.", stats.filtered)
        yield counter("duplicates", "Repeated event ids skipped.", stats.duplicates)
        yield counter("dropped", "Events a transform dropped.", stats.dropped)
        # Transactional engine: Kafka transactions; Faust engine: raw messages delivered.
        yield counter("batches", "Batches delivered and committed or acked.", edge.batches)
        yield counter("retried", "Batch delivery retries.", edge.retries)
        yield counter("rejoins", "Consumer rebuilt after a broker error.", edge.rejoins)
        dead = CounterMetricFamily(
            "firelake_router_dead_lettered",
            "DLQ records by error type.",
            labels=["router", "error_type"],
        )
        for error_type, count in sorted(stats.dead_lettered.items()):
            dead.add_metric([self.router, error_type], count)
        yield dead
        lag = GaugeMetricFamily(
            "firelake_router_lag",
            "Messages behind the end of the log.",
            labels=["router", "topic", "partition"],
        )
        for (topic, partition), value in sorted(edge.lag.items()):
            lag.add_metric([self.router, topic, str(partition)], value)
        yield lag
        age = GaugeMetricFamily(
            "firelake_router_iterator_age_seconds",
            "Age of the newest routed record.",
            labels=["router", "topic", "partition"],
        )
        for (topic, partition), value in sorted(edge.age_s.items()):
            age.add_metric([self.router, topic, str(partition)], value)
        yield age


def metrics_ports(spec: RouterConfig) -> range:
    """The ports a router's workers serve ``/metrics`` on: each takes the first free one."""
    return spec.metrics_ports


def serve_metrics(collector: Collector, port: int, tries: int = 1, label: str = "") -> int | None:
    """Serve ``/metrics`` on 127.0.0.1 at ``port`` or the next free of ``tries`` ports.

    Workers of one router (or window) share a configuration, so each takes the first free
    port of ``port .. port+tries-1``. Returns the port, or None when all are busy (logged
    as ``label``, by default the router's name).
    """
    label = label or f"router {getattr(collector, 'router', '?')}"
    registry = CollectorRegistry()
    registry.register(collector)
    for candidate in range(port, port + max(1, tries)):
        try:
            start_http_server(candidate, addr="127.0.0.1", registry=registry)
        except OSError:
            continue
        log.info("%s: metrics on http://127.0.0.1:%d/metrics", label, candidate)
        return candidate
    log.warning("%s: ports %d-%d busy; no metrics endpoint", label, port, port + tries - 1)
    return None

"""Sink metrics: Prometheus exposition of the sinks a process runs.

Like the routers' (``agents.metrics``), counters live where they are counted
(:class:`sinks.sink.SinkStats`) and a collector reads them at scrape time, so the write path
pays no Prometheus calls. Lag per partition (the end of the log minus what was read),
freshness (seconds since the last committed flush), what is buffered, rows and files
written, conversion failures, offset-commit failures and rejoins after broker errors.
``firelake sink --all --metrics-port N`` serves ``/metrics`` on 127.0.0.1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sinks.sink import ParquetSink

__all__ = ["SinkCollector", "serve_sink_metrics"]

log = logging.getLogger("sinks.metrics")


class SinkCollector(Collector):
    """Yields every running sink's counters and gauges at scrape time."""

    def __init__(self, sinks: Callable[[], Mapping[str, ParquetSink]]) -> None:
        self.sinks = sinks

    def collect(self) -> Iterator[Any]:
        sinks = dict(self.sinks())
        now = time.time()

        def counter(name: str, doc: str, value: Callable[[ParquetSink], float]) -> Any:
            family = CounterMetricFamily(f"firelake_sink_{name}", doc, labels=["sink"])
            for sink_name, sink in sorted(sinks.items()):
                family.add_metric([sink_name], value(sink))
            return family

        def gauge(name: str, doc: str, value: Callable[[ParquetSink], float]) -> Any:
            family = GaugeMetricFamily(f"firelake_sink_{name}", doc, labels=["sink"])
            for sink_name, sink in sorted(sinks.items()):
                family.add_metric([sink_name], value(sink))
            return family

        yield counter("messages", "Kafka messages (envelopes) read.", lambda s: s.stats.messages)
        yield counter("rows", "Rows written to the lake.", lambda s: s.stats.rows)
        yield counter("files", "Files written to the lake.", lambda s: s.stats.files)
        yield counter("flushes", "Flushes committed.", lambda s: s.stats.flushes)
        yield counter(
            "conversion_errors",
            "Events that failed conversion (sent to the error prefix).",
            lambda s: s.stats.bad_lines,
        )
        yield counter(
            "commit_failures",
            "Advisory offset commits that failed.",
            lambda s: s.stats.commit_failures,
        )
        yield counter(
            "rejoins",
            "Consumer rebuilt after a broker error or fencing.",
            lambda s: s.stats.rejoins,
        )
        yield gauge(
            "freshness_seconds",
            "Seconds since the last committed flush (-1: none yet).",
            lambda s: now - s.stats.last_flush_at if s.stats.last_flush_at else -1.0,
        )
        yield gauge(
            "buffered_bytes",
            "Memory held by buffers not yet flushed.",
            lambda s: sum(b.memory for b in s.buffers),
        )
        yield gauge(
            "buffer_age_seconds",
            "Age of the oldest unflushed buffer.",
            lambda s: max(
                (s.buffers.clock() - b.started_at for b in s.buffers if b.started_at), default=0.0
            ),
        )
        lag = GaugeMetricFamily(
            "firelake_sink_lag",
            "Messages between what the sink read and the end of the log.",
            labels=["sink", "partition"],
        )
        last = GaugeMetricFamily(
            "firelake_sink_last_flush_rows",
            "Rows of the last flush of each partition.",
            labels=["sink", "partition"],
        )
        for sink_name, sink in sorted(sinks.items()):
            for partition, value in sorted(sink.stats.lag.items()):
                lag.add_metric([sink_name, str(partition)], value)
            for partition, rows in sorted(sink.stats.last_flush_rows.items()):
                last.add_metric([sink_name, str(partition)], rows)
        yield lag
        yield last


def serve_sink_metrics(collector: SinkCollector, port: int) -> int | None:
    """Serve ``/metrics`` on 127.0.0.1:``port``; the port, or None when it is busy."""
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        log.warning("sinks: no metrics endpoint on port %d: %s", port, exc)
        return None
    log.info("sinks: metrics on http://127.0.0.1:%d/metrics", port)
    return port

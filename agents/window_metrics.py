"""Window metrics: Prometheus exposition of a window worker's counters.

Like the routers' (:mod:`agents.metrics`), the counters live where they are counted
(:class:`agents.windows.processor.WindowStats`) and a collector
reads them at scrape time, so the batch path pays no Prometheus calls. ``active`` tells the
worker holding the window (1) from a standby (0); the counters start over when a worker
takes the window (Prometheus reads that as a counter reset). Each worker serves
``/metrics`` on 127.0.0.1, on the first free port of the window's ``metrics_ports``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agents.windows.processor import WindowProcessor

__all__ = ["WindowCollector"]

_COUNTERS = (
    ("batches", "Batches committed (one Kafka transaction each)."),
    ("events", "Source events aggregated."),
    ("late", "Events that arrived after their window closed (sent to the late stream)."),
    ("unreadable", "Source events that could not be read."),
    ("results", "Result rows emitted (updates and finals)."),
    ("finals", "Final results of closed windows emitted."),
)


class WindowCollector(Collector):
    """Yields one window worker's counters and gauges for Prometheus at scrape time."""

    def __init__(self, window: str, processor: Callable[[], WindowProcessor | None]) -> None:
        self.window = window
        self.processor = processor

    def collect(self) -> Iterator[Any]:
        processor = self.processor()
        labels = [self.window]
        active = GaugeMetricFamily(
            "firelake_window_active",
            "1 on the worker holding the window, 0 on a standby.",
            labels=["window"],
        )
        active.add_metric(labels, 0 if processor is None else 1)
        yield active
        if processor is None:
            return
        for name, doc in _COUNTERS:
            family = CounterMetricFamily(f"firelake_window_{name}", doc, labels=["window"])
            family.add_metric(labels, getattr(processor.stats, name))
            yield family

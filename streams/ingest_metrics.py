"""The ingest's Prometheus metrics: requests, records, throttles and latency.

Served as ``GET /metrics`` on the ingest port (both APIs are counted: requests labelled
``native`` or ``aws``, records by the API that took them — ``native``, ``kinesis``
(PutRecord, PutRecords) or ``firehose`` (PutRecord, PutRecordBatch) — and their result).
Each app has its own registry, so several ingest servers in one process (tests)
do not mix; with ``ingest.workers > 1`` each process counts its own requests and a scrape
reaches one of them (the kernel picks), so scrape each worker or sum over time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Gauge

from firelake.http_metrics import RequestMetrics

__all__ = ["IngestMetrics"]

#: Answer times worth telling apart, up to past the default 10 s answer deadline.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)
#: Paths that are not requests for records.
_UNCOUNTED = frozenset(("/metrics", "/health"))


def _api(request: web.Request) -> str:
    return "aws" if request.path == "/" else "native"


class IngestMetrics(RequestMetrics):
    """One ingest app's counters; :meth:`middleware` and :meth:`handle` serve them."""

    def __init__(self, in_flight: Callable[[], float]) -> None:
        super().__init__(
            "firelake_ingest", "api", "API (native, aws)", _api, LATENCY_BUCKETS, _UNCOUNTED
        )
        self.records = Counter(
            "firelake_ingest_records",
            "Records answered, by API (native, kinesis, firehose) and result: ok or the "
            "error code (ProvisionedThroughputExceededException: throttled).",
            ["api", "result"],
            registry=self.registry,
        )
        self.throttled = Counter(
            "firelake_ingest_throttled_requests",
            "Requests refused (503) for want of an in-flight slot.",
            registry=self.registry,
        )
        gauge = Gauge(
            "firelake_ingest_in_flight_requests",
            "Requests holding an in-flight slot now.",
            registry=self.registry,
        )
        gauge.set_function(in_flight)

    def count_results(self, answer: Mapping[str, Any]) -> None:
        """Count a native PutRecords answer's records by result."""
        self.count_records("native", (result.get("error_code") for result in answer["records"]))

    def count_records(self, api: str, codes: Iterable[str | None]) -> None:
        """Count answered records of ``api``: each its error code, None when accepted."""
        counts: dict[str, int] = {}
        for code in codes:
            result = "ok" if code is None else code
            counts[result] = counts.get(result, 0) + 1
        for result, count in counts.items():
            self.records.labels(api, result).inc(count)

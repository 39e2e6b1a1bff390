"""The query service's Prometheus metrics: requests, answer time, what the queries read.

Served as ``GET /metrics`` on the query service's own port (like the ingest's), without an
API key (scrape it on 127.0.0.1). Requests are counted by route — the route's pattern,
``/v1/tables/{name}``, so table names do not multiply the series — and HTTP status
(:class:`firelake.http_metrics.RequestMetrics`); the SQL the service ran by rows
returned, bytes scanned and DuckDB time.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import Counter, Histogram

from firelake.http_metrics import RequestMetrics

__all__ = ["QueryMetrics"]

#: Query times worth telling apart, up to past the default 30 s query time limit.
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


class QueryMetrics(RequestMetrics):
    """One query service app's counters; :meth:`middleware` and :meth:`handle` serve them."""

    def __init__(self) -> None:
        super().__init__("firelake_query", "route", "route", _route, SECONDS_BUCKETS)
        self.engine_seconds = Histogram(
            "firelake_query_engine_seconds",
            "DuckDB time of each SQL query that answered.",
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter(
            "firelake_query_rows", "Rows the queries returned.", registry=self.registry
        )
        self.bytes_scanned = Counter(
            "firelake_query_bytes_scanned",
            "Bytes of lake files the queries scanned (where DuckDB tells).",
            registry=self.registry,
        )

    def count_result(self, rows: int, elapsed: float, bytes_scanned: int | None) -> None:
        """Count one SQL query that answered."""
        self.rows.inc(rows)
        self.engine_seconds.observe(elapsed)
        if bytes_scanned:
            self.bytes_scanned.inc(bytes_scanned)

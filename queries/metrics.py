"""The query service's Prometheus metrics: requests, answer time, what the queries read.

Served as ``GET /metrics`` on the query service's own port (like the ingest's), without an
API key (scrape it on 127.0.0.1). Requests are counted by route — the route's pattern,
``/v1/tables/{name}``, so table names do not multiply the series — and HTTP status; the
SQL the service ran by rows returned, bytes scanned and engine time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

__all__ = ["QueryMetrics"]

#: Query times worth telling apart, up to past the default 30 s query time limit.
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class QueryMetrics:
    """One query service app's counters, and the middleware and handler that use them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "firelake_query_requests",
            "Requests answered, by route and HTTP status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "firelake_query_request_seconds",
            "Time from a request's arrival to its answer, by route.",
            ["route"],
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
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

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Count and time every request but ``/metrics`` (outside the error middleware,
        so the status counted is the one answered)."""
        if request.path == "/metrics":
            return await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.requests.labels(route, str(status)).inc()
            self.latency.labels(route).observe(time.perf_counter() - started)

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the Prometheus text exposition."""
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

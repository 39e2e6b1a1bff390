"""Request metrics of an aiohttp service: requests by one label and HTTP status, their
answer time, and the ``GET /metrics`` page.

The ingest (``streams.ingest_metrics``, labelled by API) and the query service
(``queries.metrics``, labelled by route) build on it and add their own counters to its
registry. Each app has its own registry, so several servers in one process (tests) do not
mix their counts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

__all__ = ["RequestMetrics"]


class RequestMetrics:
    """``<prefix>_requests{<label>, status}`` and ``<prefix>_request_seconds{<label>}``,
    counted by :meth:`middleware` for every request but the ``uncounted`` paths."""

    def __init__(
        self,
        prefix: str,
        label: str,
        label_doc: str,
        label_of: Callable[[web.Request], str],
        buckets: Sequence[float],
        uncounted: frozenset[str] = frozenset(("/metrics",)),
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            f"{prefix}_requests",
            f"Requests answered, by {label_doc} and HTTP status.",
            [label, "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{prefix}_request_seconds",
            "Time from a request's handler starting to its answer.",
            [label],
            buckets=buckets,
            registry=self.registry,
        )
        self._label_of = label_of
        self._uncounted = uncounted

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Count and time a request (put it outside error middlewares, so the status
        counted is the one answered)."""
        if request.path in self._uncounted:
            return await handler(request)
        label = self._label_of(request)
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
            self.requests.labels(label, str(status)).inc()
            self.latency.labels(label).observe(time.perf_counter() - started)

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the Prometheus text exposition."""
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

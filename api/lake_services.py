"""What the Athena and Glue operations of the AWS endpoint share: one query service over
the lake, created on first use (it scans the lake, so a Kinesis-only user never pays for
it) and closed with the endpoint.

The query service (:class:`queries.service.QueryService`) holds the sandboxed engines, the
saved queries and the catalog; it blocks, so callers use it from worker threads.
"""

from __future__ import annotations

import asyncio
import threading

from firelake.config import FirelakeConfig
from queries.service import QueryService
from sinks.destinations import Destination, lake_destination

__all__ = ["DATABASE", "LakeServices"]

#: The one Glue/Athena database the lake is (what Athena calls ``AwsDataCatalog.default``).
DATABASE = "default"


class LakeServices:
    """A lazily started :class:`QueryService` and the lake's destination."""

    def __init__(self, config: FirelakeConfig, engines: int = 2) -> None:
        self.config = config
        self.engines = engines
        self._service: QueryService | None = None
        self._lock = threading.Lock()
        self._destination: Destination | None = None

    def service(self) -> QueryService:
        """The query service (blocking on first use: call from a worker thread)."""
        with self._lock:
            if self._service is None:
                self._service = QueryService(self.config, engines=self.engines)
            return self._service

    async def service_async(self) -> QueryService:
        return await asyncio.to_thread(self.service)

    def destination(self) -> Destination:
        """Where query history and results are kept (the lake root): made once, so an S3
        lake's boto3 client is set up once, not on every Athena call."""
        if self._destination is None:
            self._destination = lake_destination(self.config)
        return self._destination

    def close(self) -> None:
        with self._lock:
            if self._service is not None:
                self._service.close()
                self._service = None

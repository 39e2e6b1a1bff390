"""The AWS JSON 1.1 endpoint (``POST /``) of the ingest service, and what it shares.

:class:`AwsBackend` holds what Kinesis, Firehose and Glue operations need: the ingest's
producer and in-flight slots, the registry (:mod:`streams.registry`) of what the APIs
created, a small pool of consumers for GetRecords, the optional shard write quota and the
credentials policy. It starts lazily, on the first AWS request, so the plain HTTP ingest
pays nothing for it.

:func:`handle` is the aiohttp handler: it reads the body within its bound, checks the
content type, the target and the signature, parses the JSON and dispatches to the
service's operation; every refusal is an AWS-shaped ``{"__type", "message"}`` answer with
a 4xx (503 when Kafka itself fails, which boto3 retries), never a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiokafka.errors as aiokafka_errors
import kafka.errors as kafka_errors
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from api.protocol import (
    CONTENT_TYPE,
    AwsError,
    check_content_type,
    parse_body,
    parse_target,
)
from api.records import AwsLimits, ShardQuota
from api.sigv4 import Credentials
from firelake.config import FirelakeConfig, StreamConfig
from streams.deadline import remaining
from streams.ingest_metrics import IngestMetrics
from streams.records import READ_TIMEOUT_S, RequestError
from streams.registry import REGISTRY_TOPIC, RegistryStore
from streams.resources import DELIVERY_TOPIC_PREFIX, Registry
from streams.topics import TopicError

__all__ = [
    "ACCOUNT_ID",
    "DEFAULT_REGION",
    "DRAIN_LIMIT_BYTES",
    "GET_RECORDS_CONSUMERS",
    "REFRESH_INTERVAL_S",
    "AwsBackend",
    "AwsOptions",
    "ConsumerPool",
    "Operation",
    "RequestContext",
    "handle",
    "max_body_bytes",
]

log = logging.getLogger(__name__)

#: The account every ARN names (LocalStack's, which AWS tooling accepts).
ACCOUNT_ID = "000000000000"
#: Region of ARNs when the request is unsigned.
DEFAULT_REGION = "us-east-1"
#: Consumers GetRecords / GetShardIterator share (each serves one request at a time).
GET_RECORDS_CONSUMERS = 4
#: A body over the bound is still read and dropped up to this size, so that the client,
#: still sending, gets the 400 instead of a reset connection; beyond it the socket closes.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
#: How often a lookup re-reads the registry to see other processes' changes.
REFRESH_INTERVAL_S = 2.0


def max_body_bytes(limits: AwsLimits) -> int:
    """Largest body read: the data bound in base64 plus JSON framing per record."""
    return (limits.max_request_bytes * 4) // 3 + 4 + limits.max_records * 1024 + 64 * 1024


@dataclass(frozen=True)
class AwsOptions:
    """How the AWS endpoint runs: credentials, quota, registry topic, consumer pool size."""

    credentials: Credentials = Credentials()
    quota: ShardQuota | None = None
    registry_topic: str = REGISTRY_TOPIC
    consumers: int = GET_RECORDS_CONSUMERS


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Per-request facts operations need: the region (from the signature) for ARNs."""

    region: str = DEFAULT_REGION

    def stream_arn(self, name: str) -> str:
        return f"arn:aws:kinesis:{self.region}:{ACCOUNT_ID}:stream/{name}"

    def delivery_arn(self, name: str) -> str:
        return f"arn:aws:firehose:{self.region}:{ACCOUNT_ID}:deliverystream/{name}"


Operation = Callable[[dict[str, Any], RequestContext], Awaitable[dict[str, Any]]]


class ConsumerPool:
    """A few consumers with manual assignment, lent out one request at a time."""

    def __init__(self, bootstrap: str, size: int, client_id: str) -> None:
        self.bootstrap = bootstrap
        self.size = max(1, size)
        self.client_id = client_id
        self._idle: asyncio.Queue[AIOKafkaConsumer] = asyncio.Queue()
        self._all: list[AIOKafkaConsumer] = []
        self._creating = 0

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[AIOKafkaConsumer]:
        if self._idle.empty() and len(self._all) + self._creating < self.size:
            self._creating += 1
            try:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap,
                    client_id=f"{self.client_id}-get-records",
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    # One GetRecords returns at most 10 MiB; fetch about that per call.
                    max_partition_fetch_bytes=4 * 1024 * 1024,
                    fetch_max_bytes=16 * 1024 * 1024,
                )
                await consumer.start()
                self._all.append(consumer)
            finally:
                self._creating -= 1
        else:
            consumer = await self._idle.get()
        try:
            yield consumer
        finally:
            # Unassigned while idle: no prefetching, and no metadata requests for a topic
            # that may be deleted meanwhile.
            consumer.unsubscribe()
            self._idle.put_nowait(consumer)

    async def close(self) -> None:
        consumers, self._all = self._all, []
        for consumer in consumers:
            await consumer.stop()


class AwsBackend:
    """Shared state of the AWS operations over one ingest's producer."""

    def __init__(
        self,
        config: FirelakeConfig,
        producer: AIOKafkaProducer,
        slot: Callable[[], contextlib.AbstractAsyncContextManager[None]],
        limits: AwsLimits,
        options: AwsOptions | None = None,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.config = config
        self.producer = producer
        self.slot = slot
        #: The ingest's Prometheus metrics, which count the records the Kinesis and
        #: Firehose puts answer (None: not counted).
        self.metrics = metrics
        self.limits = limits
        self.options = options or AwsOptions()
        self.bootstrap = config.bootstrap
        self.store = RegistryStore(
            self.bootstrap,
            self.options.registry_topic,
            client_id=config.kafka.client_id,
            replication=config.kafka.replication_factor,
        )
        self.pool = ConsumerPool(self.bootstrap, self.options.consumers, config.kafka.client_id)
        self.started_ms = time.time_ns() // 1_000_000
        self._started = False
        self._start_lock = asyncio.Lock()
        self._refreshed = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self.services: dict[str, Mapping[str, Operation]] = {}

    @property
    def registry(self) -> Registry:
        return self.store.registry

    def count_records(self, api: str, results: list[dict[str, str]]) -> None:
        """Count a put's answered records (AWS result entries) in the ingest's metrics."""
        if self.metrics is not None:
            self.metrics.count_records(api, (result.get("ErrorCode") for result in results))

    @property
    def started(self) -> bool:
        return self._started

    async def ensure_started(self) -> None:
        """Start the registry reader once (the first AWS request pays for it)."""
        if self._started:
            return
        async with self._start_lock:
            if not self._started:
                await self.store.start()
                self._refreshed = time.monotonic()
                self._started = True

    async def close(self) -> None:
        await self.pool.close()
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError, *_KAFKA_ERRORS):
                await self._refreshing
        if self._started:
            self._started = False
            await self.store.stop()

    async def refresh(self, force: bool = False) -> Registry:
        """Re-read the registry if it is older than :data:`REFRESH_INTERVAL_S` (or forced)."""
        await self.ensure_started()
        if force:
            # Its own read, not a shared one: a shared read may have taken the end offset
            # before the entry a forced caller looks for was written.
            await self.store.refresh()
            self._refreshed = time.monotonic()
        elif self._refresh_due():
            await asyncio.shield(self._periodic_refresh())
        return self.registry

    def _refresh_due(self) -> bool:
        return time.monotonic() - self._refreshed > REFRESH_INTERVAL_S

    def _periodic_refresh(self) -> asyncio.Task[None]:
        """The periodic re-read in flight, started if none is.

        Concurrent requests share one read: one each, queued on the store's lock, held
        every request of a busy endpoint for seconds every two seconds (a read waits for
        the registry topic's end, up to a fetch timeout).
        """
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh_now())
            self._refreshing.add_done_callback(_log_refresh_failure)
        return self._refreshing

    async def _refresh_now(self) -> None:
        await self.store.refresh()
        self._refreshed = time.monotonic()

    def streams(self) -> dict[str, StreamConfig]:
        """Every Kinesis-visible stream: declared ones, then API-created ones."""
        streams = {
            name: spec
            for name, spec in self.config.streams.items()
            if not name.startswith(DELIVERY_TOPIC_PREFIX)
        }
        if self._started:
            for name, entry in self.registry.streams.items():
                streams.setdefault(name, entry.stream_config())
        return streams

    async def stream(self, name: str) -> StreamConfig:
        """A stream by name; refreshes the registry once before answering 404."""
        spec = self.streams().get(name)
        if spec is None:
            await self.refresh(force=True)
            spec = self.streams().get(name)
        else:
            # A known stream is answered from the registry at hand (as it always was: the
            # answer never waited for the re-read's result); the periodic re-read, for
            # other processes' changes, runs beside the request instead of before it.
            await self.ensure_started()
            if self._refresh_due():
                self._periodic_refresh()
        if spec is None:
            raise AwsError(
                400,
                "ResourceNotFoundException",
                f"Stream {name} under account {ACCOUNT_ID} not found.",
            )
        return spec


# Kafka failures are the server's problem, not the request's: 503, which SDKs retry.
_KAFKA_ERRORS: tuple[type[BaseException], ...] = (
    aiokafka_errors.KafkaError,
    kafka_errors.KafkaError,
    TopicError,
    TimeoutError,
)


def _log_refresh_failure(task: asyncio.Task[None]) -> None:
    """Retrieve a background re-read's failure (the next one retries it)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("aws: registry re-read failed: %r", task.exception())


def _answer(status: int, payload: Any) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(payload),
        content_type=CONTENT_TYPE,
        headers={"x-amzn-RequestId": str(uuid.uuid4())},
    )


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, or a 400 once it is known to pass ``limit`` (drained up to a bound)."""
    declared = request.content_length
    if declared is not None and declared <= limit:
        return await request.content.readexactly(declared) if declared else b""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(256 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > DRAIN_LIMIT_BYTES:
            break
        else:
            chunks.clear()
    if size > limit:
        raise AwsError(
            400,
            "InvalidArgumentException",
            f"request body is {'over ' if size > DRAIN_LIMIT_BYTES else ''}{declared or size} "
            f"bytes; no valid request is larger than {limit} bytes (5 MiB of records in "
            "base64 plus framing)",
        )
    return b"".join(chunks)


async def handle(request: web.Request, backend: AwsBackend) -> web.Response:
    """Serve one AWS JSON 1.1 request."""
    try:
        async with backend.slot():
            read_s = remaining(READ_TIMEOUT_S)  # the answer deadline the slot started
            try:
                async with asyncio.timeout(read_s):
                    body = await _read_body(request, max_body_bytes(backend.limits))
            except TimeoutError:
                raise AwsError(
                    400,
                    "RequestTimeoutException",
                    f"request body not received within {read_s:.0f} s",
                ) from None
            except asyncio.IncompleteReadError as exc:
                raise AwsError(
                    400,
                    "SerializationException",
                    f"request body ended after {len(exc.partial)} of "
                    f"{request.content_length} bytes",
                ) from None
            check_content_type(request.headers.get("Content-Type"))
            prefix, operation = parse_target(request.headers.get("X-Amz-Target"), backend.services)
            headers = {k.lower(): v for k, v in request.headers.items()}
            if len(headers) != len(request.headers):
                for name in set(request.headers):
                    headers[name.lower()] = ",".join(request.headers.getall(name))
            auth = backend.options.credentials.check(
                request.method,
                request.raw_path.split("?", 1)[0],
                request.query_string,
                headers,
                body,
            )
            payload = parse_body(body)
            del body
            handler = backend.services[prefix].get(operation)
            if handler is None:
                raise AwsError(
                    400,
                    "UnknownOperationException",
                    f"operation {operation!r} of {prefix} is not supported (supported: "
                    f"{', '.join(sorted(backend.services[prefix]))})",
                )
            await backend.ensure_started()
            context = RequestContext(region=auth.region if auth else DEFAULT_REGION)
            return _answer(200, await handler(payload, context))
    except AwsError as exc:
        return _answer(exc.status, exc.body())
    except RequestError as exc:
        # The ingest's in-flight bound: Kinesis' throttling error, which SDKs retry.
        return _answer(
            400, {"__type": "ProvisionedThroughputExceededException", "message": exc.message}
        )
    except _KAFKA_ERRORS as exc:
        log.warning("aws: Kafka failure on %s: %r", request.headers.get("X-Amz-Target"), exc)
        return _answer(
            503,
            {
                "__type": "ServiceUnavailableException",
                "message": f"Kafka is unavailable or failed: {type(exc).__name__}: {exc}"[:1000],
            },
        )
    except Exception:
        log.exception("aws: unexpected error on %s", request.headers.get("X-Amz-Target"))
        return _answer(
            500,
            {"__type": "InternalFailure", "message": "unexpected error; see the ingest log"},
        )

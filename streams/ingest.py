"""The HTTP ingest service: Kinesis PutRecords semantics onto Kafka streams (the Yle collector).

``POST /v1/streams/{stream}/records`` takes up to 500 records (5 MiB) and writes them as
*one Kafka message per target partition*: an NDJSON envelope (:mod:`streams.envelope`)
holding the records' ``data`` as compact JSON lines, the partition keys in a header and the
arrival time as the time range and the message timestamp. ``envelope = "single"`` streams
get one message per record instead. The answer lists a result per record in request order
(partition, offset and a sequence number from :mod:`streams.sequence`, or an error code);
a Kafka failure fails only the records of its partition and the answer is still HTTP 200
with ``failed_record_count`` — like Kinesis partial failure. Malformed or oversized requests
are refused whole with the 4xx of :mod:`streams.records`.

Only streams without a schema accept records: typed streams and DLQs carry validated events
written by routers, which sinks trust.

The AWS JSON 1.1 endpoint (``POST /``, package ``api``) is mounted on the same app by
``api.server``; it shares this service's producer and in-flight bound, and the streams
created through it (a :class:`StreamDirectory`) are accepted by the route above too.

Bounds: a body is never read past :attr:`Limits.max_body_bytes`; at most ``max_inflight``
requests are parsed and produced at once, later ones wait up to ``slot_wait_s`` for a slot
and are then refused with 503, so memory stays below ``max_inflight`` times 5 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from firelake.config import FirelakeConfig, StreamConfig
from streams import envelope
from streams.deadline import answer_by, remaining, unknown
from streams.ingest_metrics import IngestMetrics
from streams.kafka_errors import INTERNAL, THROTTLED, record_failure, settle
from streams.records import (
    READ_TIMEOUT_S,
    Limits,
    PutRequest,
    RequestError,
    check_body_size,
    check_content_type,
    parse_put_records,
)
from streams.registry import Registry
from streams.sequence import encode_sequence

__all__ = [
    "DEFAULT_MAX_INFLIGHT",
    "DEFAULT_SLOT_WAIT_S",
    "INGEST_KEY",
    "PRODUCER_BATCH_BYTES",
    "PRODUCE_TIMEOUT_MS",
    "RETRY_AFTER_SECONDS",
    "Ingest",
    "StreamDirectory",
    "create_ingest_app",
]

log = logging.getLogger(__name__)

#: Requests parsed and produced at once; each holds at most one 5 MiB body.
DEFAULT_MAX_INFLIGHT = 16
#: How long a request waits for an in-flight slot before it is refused with 503.
DEFAULT_SLOT_WAIT_S = 5.0
#: How long a send may take before its records fail (the producer's request_timeout_ms).
PRODUCE_TIMEOUT_MS = 30_000
#: Producer batch bound per partition. aiokafka keeps one produce request in flight per
#: broker and puts one batch per partition in it, so with its 16 KiB default every
#: envelope (~25 KiB for a 500-record call over 4 shards) is a batch of its own and the
#: ingest writes one request's envelopes per broker round trip. 1 MiB lets the envelopes
#: of many concurrent requests travel in one produce request.
PRODUCER_BATCH_BYTES = 1024 * 1024


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json(status, {"error": {"code": code, "message": message}})


def _accepted(streams: Mapping[str, StreamConfig]) -> str:
    """The names of the streams that accept records, for a refusal's message."""
    return ", ".join(sorted(name for name, s in streams.items() if not s.schema)) or "(none)"


def _record_error(exc: BaseException) -> dict[str, str]:
    code, message = record_failure(exc)
    return {"error_code": code, "error_message": message}


class StreamDirectory(Protocol):
    """Streams known beyond the config: the registry of streams created through an API.

    The AWS front door (``api.backend.AwsBackend``) is one; the native route accepts the
    streams it created as well.
    """

    @property
    def started(self) -> bool: ...

    @property
    def registry(self) -> Registry: ...

    async def refresh(self, force: bool = False) -> Registry: ...


class Ingest:
    """The ingest's state and its PutRecords logic, shared by the HTTP handlers.

    ``producer`` must be started; the ingest never starts or stops it.
    """

    def __init__(
        self,
        config: FirelakeConfig,
        producer: AIOKafkaProducer,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        slot_wait_s: float = DEFAULT_SLOT_WAIT_S,
        deadline_s: float | None = None,
    ) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {max_inflight}")
        self.config = config
        self.producer = producer
        self.limits = Limits.from_config(config.ingest)
        self.max_inflight = max_inflight
        self.slot_wait_s = slot_wait_s
        #: Every request is answered within this many seconds (``streams.deadline``).
        self.deadline_s = (
            config.ingest.answer_deadline_seconds if deadline_s is None else deadline_s
        )
        self.ready = True
        self._slots = asyncio.Semaphore(max_inflight)
        self._in_flight = 0
        self.metrics = IngestMetrics(lambda: self._in_flight)
        #: Streams created through an API (the AWS front door's registry), which this
        #: route accepts too; None when the ingest serves the declared streams only.
        self.directory: StreamDirectory | None = None

    @property
    def in_flight(self) -> int:
        """PutRecords requests holding a slot now (reading, parsing or producing)."""
        return self._in_flight

    @property
    def streams(self) -> Mapping[str, StreamConfig]:
        """Declared streams, and those created through the Kinesis API (once it started)."""
        if self.directory is None or not self.directory.started:
            return self.config.streams
        return {
            **{n: e.stream_config() for n, e in self.directory.registry.streams.items()},
            **self.config.streams,
        }

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``max_inflight`` slots; 503 after ``slot_wait_s`` without one.

        Starts the request's answer deadline (``deadline_s``), which the wait for a slot,
        the body read and Kafka's acknowledgements all count against.
        """
        with answer_by(self.deadline_s):
            wait_s = remaining(self.slot_wait_s)
            try:
                async with asyncio.timeout(wait_s):
                    await self._slots.acquire()
            except TimeoutError:
                self.metrics.throttled.inc()
                raise RequestError(
                    503,
                    THROTTLED,
                    f"the ingest is busy: {self.max_inflight} requests in flight for over "
                    f"{wait_s:g} s; retry with backoff",
                ) from None
            self._in_flight += 1
            try:
                yield
            finally:
                self._in_flight -= 1
                self._slots.release()

    async def lookup(self, name: str) -> StreamConfig:
        """:meth:`stream`, re-reading the registry first for a name not known yet."""
        if name not in self.streams and self.directory is not None:
            await self.directory.refresh(force=True)
        return self.stream(name)

    def stream(self, name: str) -> StreamConfig:
        """The stream a request names; 404 if unknown, 403 if it only takes router output."""
        streams = self.streams
        spec = streams.get(name)
        if spec is None:
            accepted = _accepted(streams)
            raise RequestError(
                404,
                "ResourceNotFoundException",
                f"stream {name!r} is not configured; streams that accept records: {accepted}",
            )
        if spec.schema:
            accepted = _accepted(streams)
            raise RequestError(
                403,
                "StreamNotWritable",
                f"stream {name!r} carries {spec.schema!r} events written by routers; "
                f"streams that accept records: {accepted}",
            )
        return spec

    async def put_records(self, request: web.Request) -> dict[str, Any]:
        """Handle one PutRecords request end to end; raises :class:`RequestError` on refusal."""
        stream = await self.lookup(request.match_info["stream"])
        check_content_type(request.content_type)
        # Refuse a declared oversized body before reading a byte of it.
        check_body_size(request.content_length, self.limits)
        async with self.slot():
            read_s = remaining(READ_TIMEOUT_S)
            try:
                async with asyncio.timeout(read_s):
                    body = await request.read()
            except TimeoutError:
                raise RequestError(
                    408,
                    "RequestTimeout",
                    f"the request body was not received within {read_s:g} s",
                ) from None
            except web.HTTPRequestEntityTooLarge as exc:
                # A chunked body (no Content-Length) that grew past the limit while read.
                raise RequestError(
                    413,
                    "RequestTooLarge",
                    f"request body exceeds the limit of {self.limits.max_body_bytes} bytes",
                ) from exc
            arrival_ms = time.time_ns() // 1_000_000
            parsed = parse_put_records(body, stream.partitions, self.limits)
            del body
            if stream.envelope == "single":
                answer = await self._send_single(stream.name, parsed, arrival_ms)
            else:
                answer = await self._send_envelopes(stream.name, parsed, arrival_ms)
            self.metrics.count_results(answer)
            return answer

    async def _send_envelopes(
        self, topic: str, request: PutRequest, arrival_ms: int
    ) -> dict[str, Any]:
        """One envelope per partition, all in flight at once; results in request order."""
        pending: list[Any] = []
        # send() only queues a message, but waits for metadata or buffer space while the
        # broker is away: bounded by the answer deadline like the acknowledgements.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining()):
                for batch in request.batches:
                    value, headers = envelope.encode(
                        batch.lines, batch.keys, arrival_ms, arrival_ms
                    )
                    try:
                        pending.append(
                            await self.producer.send(
                                topic,
                                value,
                                key=batch.keys[0].encode("utf-8"),
                                partition=batch.partition,
                                timestamp_ms=arrival_ms,
                                headers=headers,
                            )
                        )
                    except Exception as exc:
                        pending.append(exc)
        pending += [unknown() for _ in range(len(request.batches) - len(pending))]
        outcomes = await settle(pending)
        results: list[dict[str, Any]] = [{}] * request.record_count
        failed = 0
        for batch, outcome in zip(request.batches, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning(
                    "ingest: %d records for %s[%d] failed: %r",
                    len(batch),
                    topic,
                    batch.partition,
                    outcome,
                )
                error = _record_error(outcome)
                for index in batch.indexes:
                    results[index] = error
                failed += len(batch)
                continue
            partition, offset = outcome.partition, outcome.offset
            for position, index in enumerate(batch.indexes):
                results[index] = {
                    "partition": partition,
                    "sequence_number": encode_sequence(partition, offset, position),
                    "offset": offset,
                }
        return {"failed_record_count": failed, "records": results}

    async def _send_single(
        self, topic: str, request: PutRequest, arrival_ms: int
    ) -> dict[str, Any]:
        """One message per record (``envelope = "single"``); results in request order."""
        pending: list[Any] = []
        indexes = [index for batch in request.batches for index in batch.indexes]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining()):  # see _send_envelopes
                for batch in request.batches:
                    broken: BaseException | None = None
                    for line, key in zip(batch.lines, batch.keys, strict=True):
                        if broken is not None:
                            # Keep per-key order: after a failed send, later records of
                            # this partition fail too instead of overtaking it.
                            pending.append(broken)
                            continue
                        try:
                            pending.append(
                                await self.producer.send(
                                    topic,
                                    line,
                                    key=key.encode("utf-8"),
                                    partition=batch.partition,
                                    timestamp_ms=arrival_ms,
                                )
                            )
                        except Exception as exc:
                            broken = exc
                            pending.append(exc)
        pending += [unknown() for _ in range(len(indexes) - len(pending))]
        outcomes = await settle(pending)
        results: list[dict[str, Any]] = [{}] * request.record_count
        failed = 0
        for index, outcome in zip(indexes, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                results[index] = _record_error(outcome)
                failed += 1
            else:
                results[index] = {
                    "partition": outcome.partition,
                    "sequence_number": encode_sequence(outcome.partition, outcome.offset, 0),
                    "offset": outcome.offset,
                }
        if failed:
            log.warning("ingest: %d of %d records for %s failed", failed, len(indexes), topic)
        return {"failed_record_count": failed, "records": results}


#: The ``Retry-After`` of a 503 answer (busy or throttled), in seconds; ``firelake send``
#: and boto3-style clients back off at least this long.
RETRY_AFTER_SECONDS = "1"

#: Where the app keeps its :class:`Ingest`.
INGEST_KEY = web.AppKey("firelake_ingest", Ingest)


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error answer is ``{"error": {"code", "message"}}``; never an HTML page."""
    try:
        return await handler(request)
    except RequestError as exc:
        response = _error(exc.status, exc.code, exc.message)
        if exc.status == 503:
            # Throttled (Kinesis: ProvisionedThroughputExceeded): when to try again.
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            message = f"no route for {request.method} {request.path}; routes: " + _routes(request)
        else:
            message = f"{exc.reason} for {request.method} {request.path}"
        return _error(exc.status, exc.reason.replace(" ", ""), message)
    except Exception as exc:
        # Last resort: a bug, not a client error. Log it whole, answer without internals.
        log.exception("ingest: unexpected error on %s %s", request.method, request.path)
        return _error(500, INTERNAL, f"unexpected {type(exc).__name__}; see the ingest log")


async def _put_records(request: web.Request) -> web.Response:
    return _json(200, await request.app[INGEST_KEY].put_records(request))


async def _health(request: web.Request) -> web.Response:
    if request.app[INGEST_KEY].ready:
        return _json(200, {"status": "ok"})
    return _error(503, "NotReady", "the ingest is starting or stopping")


async def _list_streams(request: web.Request) -> web.Response:
    streams = [
        {
            "name": spec.name,
            "partitions": spec.partitions,
            "envelope": spec.envelope,
            "schema": spec.schema or None,
            "writable": not spec.schema,
        }
        for spec in request.app[INGEST_KEY].streams.values()
    ]
    return _json(200, {"streams": streams})


def _routes(request: web.Request) -> str:
    """The routes this app serves, for a 404's message."""
    seen: list[str] = []
    for route in request.app.router.routes():
        info = route.resource.canonical if route.resource is not None else "?"
        described = f"{route.method} {info}"
        if described not in seen:
            seen.append(described)
    return ", ".join(seen)


def create_ingest_app(
    config: FirelakeConfig,
    producer: AIOKafkaProducer,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    slot_wait_s: float = DEFAULT_SLOT_WAIT_S,
) -> web.Application:
    """The native ingest's aiohttp application over a started producer.

    Routes: ``POST /v1/streams/{stream}/records``, ``GET /v1/streams``, ``GET /health``,
    ``GET /metrics`` (Prometheus, :mod:`streams.ingest_metrics`);
    the app keeps its :class:`Ingest` under :data:`INGEST_KEY`. ``api.server`` mounts the
    AWS front door on the same app.
    """
    ingest = Ingest(config, producer, max_inflight=max_inflight, slot_wait_s=slot_wait_s)
    app = web.Application(
        middlewares=[ingest.metrics.middleware, _json_errors],
        client_max_size=ingest.limits.max_body_bytes,
    )
    app[INGEST_KEY] = ingest
    app.router.add_post("/v1/streams/{stream}/records", _put_records)
    app.router.add_get("/v1/streams", _list_streams)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", ingest.metrics.handle)
    return app

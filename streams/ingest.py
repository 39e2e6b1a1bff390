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

``POST /`` is the AWS JSON 1.1 endpoint (:mod:`streams.aws_api`): the Kinesis, Firehose
and Glue operations existing AWS producers call, so they move here by changing only their
``endpoint_url``. It shares this service's producer and in-flight bound; streams created
through it are accepted by the HTTP route above too.

Bounds: a body is never read past :attr:`Limits.max_body_bytes`; at most ``max_inflight``
requests are parsed and produced at once, later ones wait up to ``slot_wait_s`` for a slot
and are then refused with 503, so memory stays below ``max_inflight`` times 5 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiokafka.errors as aiokafka_errors
import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from firelake.config import FirelakeConfig, StreamConfig
from streams import envelope
from streams.aws_api import READ_TIMEOUT_S, AwsBackend, AwsOptions, handle
from streams.aws_records import AwsLimits, ShardQuota
from streams.kafka_errors import INTERNAL, THROTTLED, record_failure, settle
from streams.records import Limits, PutRequest, RequestError, check_body_size, parse_put_records
from streams.sequence import encode_sequence
from streams.sigv4 import Credentials
from streams.topics import MAX_MESSAGE_BYTES, TopicError, TopicMismatchError, ensure_topics

__all__ = [
    "AWS_KEY",
    "DEFAULT_MAX_INFLIGHT",
    "DEFAULT_SLOT_WAIT_S",
    "INGEST_KEY",
    "INTERNAL",
    "PRODUCE_TIMEOUT_MS",
    "READ_TIMEOUT_S",
    "THROTTLED",
    "AwsOptions",
    "Ingest",
    "IngestServer",
    "IngestThread",
    "aws_options",
    "create_app",
    "serve",
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

#: Per-record error codes, as Kinesis names them: retry later, and a fault on our side.


def aws_options(config: FirelakeConfig) -> AwsOptions:
    """The AWS endpoint's options from ``[ingest]``: accepted keys and the shard quota."""
    return AwsOptions(
        credentials=Credentials.parse(config.ingest.aws_access_keys),
        quota=ShardQuota() if config.ingest.shard_write_quota else None,
    )


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
    ) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {max_inflight}")
        self.config = config
        self.producer = producer
        self.limits = Limits.from_config(config.ingest)
        self.max_inflight = max_inflight
        self.slot_wait_s = slot_wait_s
        self.ready = True
        self._slots = asyncio.Semaphore(max_inflight)
        self._in_flight = 0
        #: The AWS endpoint's backend, once create_app made one: its registry holds the
        #: streams created through the Kinesis API, which this route accepts too.
        self.aws: AwsBackend | None = None

    @property
    def in_flight(self) -> int:
        """PutRecords requests holding a slot now (reading, parsing or producing)."""
        return self._in_flight

    @property
    def streams(self) -> Mapping[str, StreamConfig]:
        """Declared streams, and those created through the Kinesis API (once it started)."""
        if self.aws is None or not self.aws.started:
            return self.config.streams
        return {
            **{n: e.stream_config() for n, e in self.aws.registry.streams.items()},
            **self.config.streams,
        }

    @property
    def writable(self) -> Mapping[str, StreamConfig]:
        """Streams that accept records: those without a schema."""
        return {name: s for name, s in self.streams.items() if not s.schema}

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``max_inflight`` slots; 503 after ``slot_wait_s`` without one."""
        try:
            async with asyncio.timeout(self.slot_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise RequestError(
                503,
                THROTTLED,
                f"the ingest is busy: {self.max_inflight} requests in flight for over "
                f"{self.slot_wait_s:g} s; retry with backoff",
            ) from None
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._slots.release()

    async def lookup(self, name: str) -> StreamConfig:
        """:meth:`stream`, re-reading the registry first for a name not known yet."""
        if name not in self.streams and self.aws is not None:
            await self.aws.refresh(force=True)
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
        # Refuse a declared oversized body before reading a byte of it.
        check_body_size(request.content_length, self.limits)
        async with self.slot():
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    body = await request.read()
            except TimeoutError:
                raise RequestError(
                    408,
                    "RequestTimeout",
                    f"the request body was not received within {READ_TIMEOUT_S:g} s",
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
                return await self._send_single(stream.name, parsed, arrival_ms)
            return await self._send_envelopes(stream.name, parsed, arrival_ms)

    async def _send_envelopes(
        self, topic: str, request: PutRequest, arrival_ms: int
    ) -> dict[str, Any]:
        """One envelope per partition, all in flight at once; results in request order."""
        pending: list[Any] = []
        for batch in request.batches:
            value, headers = envelope.encode(batch.lines, batch.keys, arrival_ms, arrival_ms)
            try:
                # send() only queues the message; awaiting the futures below waits for acks.
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
        indexes: list[int] = []
        for batch in request.batches:
            broken: BaseException | None = None
            for line, key, index in zip(batch.lines, batch.keys, batch.indexes, strict=True):
                indexes.append(index)
                if broken is not None:
                    # Keep per-key order: after a failed send, later records of this
                    # partition fail too instead of overtaking it.
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


#: Where the app keeps its :class:`Ingest`.
INGEST_KEY = web.AppKey("firelake_ingest", Ingest)
#: Where the app keeps the AWS endpoint's :class:`streams.aws_api.AwsBackend`.
AWS_KEY = web.AppKey("firelake_aws", AwsBackend)


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error answer is ``{"error": {"code", "message"}}``; never an HTML page."""
    try:
        return await handler(request)
    except RequestError as exc:
        return _error(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            message = (
                f"no route for {request.method} {request.path}; routes: "
                "POST /v1/streams/{stream}/records, GET /v1/streams, GET /health, "
                "POST / (AWS JSON 1.1: Kinesis, Firehose)"
            )
        else:
            message = f"{exc.reason} for {request.method} {request.path}"
        return _error(exc.status, exc.reason.replace(" ", ""), message)
    except Exception as exc:
        # Last resort: a bug, not a client error. Log it whole, answer without internals.
        log.exception("ingest: unexpected error on %s %s", request.method, request.path)
        return _error(500, INTERNAL, f"unexpected {type(exc).__name__}; see the ingest log")


async def _put_records(request: web.Request) -> web.Response:
    return _json(200, await request.app[INGEST_KEY].put_records(request))


async def _aws(request: web.Request) -> web.Response:
    return await handle(request, request.app[AWS_KEY])


async def _close_aws(app: web.Application) -> None:
    await app[AWS_KEY].close()


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


def create_app(
    config: FirelakeConfig,
    producer: AIOKafkaProducer,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    slot_wait_s: float = DEFAULT_SLOT_WAIT_S,
    aws: AwsOptions | None = None,
) -> web.Application:
    """The ingest's aiohttp application over a started producer.

    ``aws`` configures the AWS endpoint ``POST /`` (credentials, shard quota, registry
    topic); its Kafka clients start on its first request and stop with the app.
    """
    from streams.firehose_api import FirehoseApi, GlueApi
    from streams.kinesis_api import KinesisApi

    ingest = Ingest(config, producer, max_inflight=max_inflight, slot_wait_s=slot_wait_s)
    app = web.Application(middlewares=[_json_errors], client_max_size=ingest.limits.max_body_bytes)
    app[INGEST_KEY] = ingest
    limits = AwsLimits(
        max_records=ingest.limits.max_records,
        max_record_bytes=ingest.limits.max_record_bytes,
        max_request_bytes=ingest.limits.max_request_bytes,
    )
    backend = AwsBackend(config, producer, ingest.slot, limits, aws)
    backend.services = {
        "Kinesis_20131202": KinesisApi(backend).operations,
        "Firehose_20150804": FirehoseApi(backend).operations,
        "AWSGlue": GlueApi(backend).operations,
    }
    ingest.aws = backend
    app[AWS_KEY] = backend
    app.on_cleanup.append(_close_aws)
    app.router.add_post("/", _aws)
    app.router.add_post("/v1/streams/{stream}/records", _put_records)
    app.router.add_get("/v1/streams", _list_streams)
    app.router.add_get("/health", _health)
    return app


def _producer(config: FirelakeConfig) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=config.bootstrap,
        client_id=f"{config.kafka.client_id}-ingest",
        acks="all",
        # Retries after a lost ack must not duplicate an envelope.
        enable_idempotence=True,
        linger_ms=config.ingest.linger_ms,
        max_batch_size=PRODUCER_BATCH_BYTES,
        max_request_size=MAX_MESSAGE_BYTES,
        request_timeout_ms=PRODUCE_TIMEOUT_MS,
    )


class IngestServer:
    """The ingest running on a real socket: producer, topics check, HTTP listener.

    Use ``async with IngestServer(config, port=0) as server:`` and ``server.url``.
    """

    def __init__(
        self,
        config: FirelakeConfig,
        port: int | None = None,
        create_topics: bool = True,
        max_inflight: int | None = None,
        slot_wait_s: float | None = None,
        aws: AwsOptions | None = None,
    ) -> None:
        self.config = config
        self.aws = aws if aws is not None else aws_options(config)
        self.host = config.ingest.host
        self.requested_port = config.ingest.port if port is None else port
        self.create_topics = create_topics
        self.max_inflight = max_inflight or config.ingest.max_inflight_requests
        self.slot_wait_s = config.ingest.slot_wait_seconds if slot_wait_s is None else slot_wait_s
        self.app: web.Application | None = None
        self._producer: AIOKafkaProducer | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._port is None:
            raise RuntimeError("the ingest server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the running service."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Create or check the topics, start the producer and listen."""
        bootstrap = self.config.bootstrap
        if self.create_topics:
            await asyncio.to_thread(ensure_topics, self.config, bootstrap)
        producer = _producer(self.config)
        await producer.start()
        try:
            await self._check_topics(producer)
            app = create_app(
                self.config, producer, self.max_inflight, self.slot_wait_s, aws=self.aws
            )
            # No access log: a log line per request costs more than a whole PutRecords.
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
            await runner.setup()
            try:
                # With several workers, each process binds the one port (SO_REUSEPORT)
                # and the kernel spreads connections over them.
                site = web.TCPSite(
                    runner,
                    self.host,
                    self.requested_port,
                    reuse_port=True if self.config.ingest.workers > 1 else None,
                )
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
        except BaseException:
            await producer.stop()
            raise
        self.app, self._producer, self._runner = app, producer, runner
        self._port = int(runner.addresses[0][1])
        log.info("ingest listening on %s", self.url)

    async def _check_topics(self, producer: AIOKafkaProducer) -> None:
        """Load the writable topics' metadata now, and refuse a partition-count mismatch."""
        for name, spec in self.config.streams.items():
            if spec.schema:
                continue
            try:
                partitions = await producer.partitions_for(name)
            except aiokafka_errors.KafkaError as exc:
                raise TopicError(
                    name, f"topic of stream {name!r} is not available: {exc!r}"
                ) from exc
            if len(partitions) != spec.partitions:
                raise TopicMismatchError(name, spec.partitions, len(partitions))

    async def stop(self) -> None:
        """Stop listening (finishing in-flight requests), then flush and close the producer."""
        if self.app is not None:
            self.app[INGEST_KEY].ready = False
        try:
            if self._runner is not None:
                await self._runner.cleanup()
        finally:
            self._runner = None
            if self._producer is not None:
                producer, self._producer = self._producer, None
                await producer.stop()

    async def __aenter__(self) -> IngestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class IngestThread:
    """An :class:`IngestServer` on its own event loop in a background thread.

    For synchronous callers — boto3 and the AWS CLI in tests, benchmarks — that block
    their own thread: ``with IngestThread(config, port=0) as server: server.url``.
    """

    def __init__(
        self, config: FirelakeConfig, start_timeout_s: float = 60.0, **kwargs: Any
    ) -> None:
        self.server = IngestServer(config, **kwargs)
        self.start_timeout_s = start_timeout_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                await self.server.start()
            except BaseException as exc:
                self._error = exc
                self._started.set()
                return
            self._started.set()
            try:
                await self._stop.wait()
            finally:
                await self.server.stop()

        asyncio.run(main())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()
        if not self._started.wait(self.start_timeout_s):
            raise TimeoutError(f"the ingest did not start within {self.start_timeout_s} s")
        if self._error is not None:
            self._thread.join()
            raise self._error

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> IngestThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def serve(
    config: FirelakeConfig,
    ready: asyncio.Event | None = None,
    port: int | None = None,
    create_topics: bool = True,
    aws: AwsOptions | None = None,
) -> None:
    """Run the ingest until cancelled; ``ready`` is set once it accepts requests.

    ``port`` overrides ``ingest.port`` (0 picks a free port; the log line
    ``ingest listening on http://HOST:PORT`` names it).
    """
    server = IngestServer(config, port=port, create_topics=create_topics, aws=aws)
    await server.start()
    try:
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await server.stop()

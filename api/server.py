"""The ingest port: the native ingest API and the AWS front door, served together.

One aiohttp app on ``[ingest] host:port`` carries the native PutRecords route
(:mod:`streams.ingest`) and the AWS JSON 1.1 endpoint ``POST /`` (:mod:`api.backend`:
Kinesis, Firehose, Glue), over one idempotent Kafka producer and one in-flight bound.
:class:`IngestServer` runs it on a socket, :class:`IngestThread` on a background loop for
synchronous callers, :func:`serve` until cancelled (``firelake ingest``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiokafka.errors as aiokafka_errors
from aiohttp import web
from aiokafka import AIOKafkaProducer

from api.backend import AwsBackend, AwsOptions, handle
from api.records import AwsLimits, ShardQuota
from api.sigv4 import Credentials
from firelake.aio import ServerThread
from firelake.config import FirelakeConfig
from streams.ingest import (
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_SLOT_WAIT_S,
    INGEST_KEY,
    PRODUCE_TIMEOUT_MS,
    PRODUCER_BATCH_BYTES,
    create_ingest_app,
)
from streams.topics import MAX_MESSAGE_BYTES, TopicError, TopicMismatchError, ensure_topics

__all__ = [
    "AWS_KEY",
    "AwsOptions",
    "IngestServer",
    "IngestThread",
    "aws_options",
    "create_app",
    "serve",
]

log = logging.getLogger(__name__)

MiB = 1024 * 1024

#: Where the app keeps the AWS endpoint's :class:`api.backend.AwsBackend`.
AWS_KEY = web.AppKey("firelake_aws", AwsBackend)


def aws_options(config: FirelakeConfig) -> AwsOptions:
    """The AWS endpoint's options from ``[ingest]``: accepted keys and the shard quota."""
    # With several ingest workers each holds an equal share of every shard's quota, so
    # together they never admit more than Kinesis would (a worker the kernel sends more
    # than its share of connections may throttle a little early).
    workers = config.ingest.workers
    quota = ShardQuota(MiB // workers, max(1, 1000 // workers))
    return AwsOptions(
        credentials=Credentials.parse(config.ingest.aws_access_keys),
        quota=quota if config.ingest.shard_write_quota else None,
    )


async def _aws(request: web.Request) -> web.Response:
    return await handle(request, request.app[AWS_KEY])


async def _close_aws(app: web.Application) -> None:
    await app[AWS_KEY].close()


def create_app(
    config: FirelakeConfig,
    producer: AIOKafkaProducer,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    slot_wait_s: float = DEFAULT_SLOT_WAIT_S,
    aws: AwsOptions | None = None,
) -> web.Application:
    """The ingest port's aiohttp application over a started producer.

    ``aws`` configures the AWS endpoint ``POST /`` (credentials, shard quota, registry
    topic); its Kafka clients start on its first request and stop with the app.
    """
    from api.athena import AthenaApi
    from api.firehose import FirehoseApi, GlueApi
    from api.glue_lake import LakeGlueApi
    from api.kinesis import KinesisApi
    from api.lake_services import LakeServices

    app = create_ingest_app(config, producer, max_inflight=max_inflight, slot_wait_s=slot_wait_s)
    ingest = app[INGEST_KEY]
    limits = AwsLimits(
        max_records=ingest.limits.max_records,
        max_record_bytes=ingest.limits.max_record_bytes,
        max_request_bytes=ingest.limits.max_request_bytes,
    )
    backend = AwsBackend(config, producer, ingest.slot, limits, aws, ingest.metrics)
    glue = GlueApi(backend).operations
    # Athena and Glue's catalog reads share one query service over the lake, started on
    # first use (it scans the lake; a Kinesis-only user never pays for it).
    lake = LakeServices(config)
    athena = AthenaApi(lake)
    backend.services = {
        "Kinesis_20131202": KinesisApi(backend).operations,
        "Firehose_20150804": FirehoseApi(backend).operations,
        "AWSGlue": {**glue, **LakeGlueApi(lake, glue).operations},
        "AmazonAthena": athena.operations,
    }

    async def close_lake(app: web.Application) -> None:
        athena.close()
        await asyncio.to_thread(lake.close)

    app.on_cleanup.append(close_lake)
    ingest.directory = backend
    app[AWS_KEY] = backend
    app.on_cleanup.append(_close_aws)
    app.router.add_post("/", _aws)
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
            # aiohttp's keep-alive timer also runs while a connection has not sent whole
            # request headers, so it closes slow-header (slowloris) connections too.
            runner = web.AppRunner(
                app,
                access_log=None,
                shutdown_timeout=10.0,
                keepalive_timeout=self.config.ingest.header_timeout_seconds,
            )
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


class IngestThread(ServerThread[IngestServer]):
    """An :class:`IngestServer` on its own event loop in a background thread.

    For synchronous callers — boto3 and the AWS CLI in tests, benchmarks — that block
    their own thread: ``with IngestThread(config, port=0) as server: server.url``.
    """

    def __init__(
        self, config: FirelakeConfig, start_timeout_s: float = 60.0, **kwargs: Any
    ) -> None:
        super().__init__(IngestServer(config, **kwargs), "ingest", start_timeout_s)


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

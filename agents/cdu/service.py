"""Code Developer University's HTTP API and its Student Profile agent, in one service.

``firelake up`` runs it as the ``app:<name>`` child (``[apps.<name>] module =
"agents.cdu.service"``), on its own port (default 8090), beside the ingest:

- ``GET  /v1/cdu/challenges[/{id}]`` — the challenges (statement, difficulty, XP, tests);
- ``POST /v1/cdu/submissions`` — a submission becomes a command message on the submissions
  stream (keyed by student, so one student's submissions keep their order); 202 with its
  ``submission_id``; 4xx naming the problem (413 over the size limit);
- ``GET  /v1/cdu/submissions/{id}`` — ``queued`` or ``scored`` with the result;
- ``GET  /v1/cdu/students/{id}`` — the profile (XP, challenges solved, XP per language);
- ``GET  /v1/cdu/leaderboard[?language=…]`` — top 10 overall or per language.

The profile agent is a read_committed consumer of the results stream (one of its
fan-out's readers, beside the results sink and the hourly window) folding every result
into :class:`agents.cdu.profiles.Profiles`; it also reads the submissions stream to know
what is queued. It owns no consumer group: on start it reads both streams from the
beginning, so a restart or a replay rebuilds the same profiles (the fold is idempotent and
order-free). Settings (``[apps.<name>.settings]``): ``submissions_stream``,
``results_stream``, ``challenges_dir`` (relative to the configuration file),
``max_results_kept`` (results held for ``GET /v1/cdu/submissions/{id}``; the oldest go).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.cdu.challenges import Challenge, load_challenges
from agents.cdu.profiles import LEADERBOARD_SIZE, Profiles
from agents.cdu.submissions import MAX_SOURCE_BYTES, SubmissionError, build_command
from firelake.aio import run as run_loop
from firelake.config import AppConfig, ConfigError, FirelakeConfig
from streams.envelope import decode, encode
from streams.partitioning import partition_for_key

__all__ = ["CduService", "challenges_dir", "create_app", "run_app", "running_service"]

log = logging.getLogger("firelake.cdu")
DEFAULT_PORT = 8090


def challenges_dir(config: FirelakeConfig, app: AppConfig) -> Path:
    """The app's challenges folder (relative: from the configuration file's folder)."""
    folder = Path(str(app.settings.get("challenges_dir", "challenges"))).expanduser()
    if folder.is_absolute():
        return folder
    source = Path(config.source)
    return (source.parent if source.is_file() else Path(config.base_dir)) / folder


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json(status, {"error": message})


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error answer is JSON in the API's own shape, never aiohttp's text page: an
    unknown route, a wrong method, a bug (logged whole, answered without internals)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return _error(404, f"no route for {request.method} {request.path}")
        return _error(exc.status, f"{exc.reason} for {request.method} {request.path}")
    except Exception as exc:
        log.exception("cdu: unexpected error on %s %s", request.method, request.path)
        return _error(500, f"unexpected {type(exc).__name__}; see the service log")


class CduService:
    """The API's state: challenges, the producer, the profile agent's fold."""

    def __init__(self, config: FirelakeConfig, app: AppConfig) -> None:
        self.config = config
        self.app = app
        settings = app.settings
        self.submissions_stream = str(settings.get("submissions_stream", "cdu-submissions"))
        self.results_stream = str(settings.get("results_stream", "cdu-results"))
        self.max_results = int(settings.get("max_results_kept", 200_000))
        self.challenges: dict[str, Challenge] = load_challenges(challenges_dir(config, app))
        for stream in (self.submissions_stream, self.results_stream):
            if stream not in config.streams:
                raise ConfigError(
                    config.source, f"apps.{app.name}.settings", f"unknown stream {stream!r}"
                )
        self.partitions = config.streams[self.submissions_stream].partitions
        self.profiles = Profiles()
        self.queued: OrderedDict[str, str] = OrderedDict()  # submission id -> student
        self.results: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.producer: AIOKafkaProducer | None = None
        self._reader: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.config.bootstrap,
            client_id=f"{self.config.kafka.client_id}-app-{self.app.name}",
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_request_size=4 * MAX_SOURCE_BYTES,
        )
        await self.producer.start()
        self._reader = asyncio.create_task(self._read(), name="cdu-profile-agent")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.producer is not None:
            await self.producer.stop()

    async def submit(self, body: Any) -> dict[str, Any]:
        command = build_command(body, self.challenges)
        line = orjson.dumps(command)
        student = command["student_id"]
        value, headers = encode([line], keys=[student])
        assert self.producer is not None
        await self.producer.send_and_wait(
            self.submissions_stream,
            value,
            key=student.encode(),
            partition=partition_for_key(student, self.partitions),
            headers=headers,
        )
        self._remember_queued(command["submission_id"], student)
        return {
            "submission_id": command["submission_id"],
            "status": "queued",
            "priority": command["priority"],
            "submitted_at": command["submitted_at"],
        }

    def _remember_queued(self, submission_id: str, student: str) -> None:
        if submission_id not in self.results:
            self.queued[submission_id] = student
            while len(self.queued) > self.max_results:
                self.queued.popitem(last=False)

    def status(self, submission_id: str) -> dict[str, Any] | None:
        result = self.results.get(submission_id)
        if result is not None:
            return {"submission_id": submission_id, "status": "scored", "result": result}
        if submission_id in self.queued:
            return {"submission_id": submission_id, "status": "queued"}
        return None

    def fold(self, stream: str, event: Mapping[str, Any]) -> None:
        """One event of the submissions or results stream into the service's state."""
        submission = str(event.get("submission_id", ""))
        if stream == self.results_stream:
            self.profiles.apply(event)
            self.queued.pop(submission, None)
            self.results[submission] = dict(event)
            while len(self.results) > self.max_results:
                self.results.popitem(last=False)
        elif submission:
            self._remember_queued(submission, str(event.get("student_id", "")))

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.config.bootstrap,
            client_id=f"{self.config.kafka.client_id}-app-{self.app.name}-reader",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            parts = [
                TopicPartition(topic, p)
                for topic in (self.submissions_stream, self.results_stream)
                for p in range(self.config.streams[topic].partitions)
            ]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, messages in batches.items():
                    for message in messages:
                        try:
                            envelope = decode(message.value, message.headers, message.key)
                            for line in envelope.lines:
                                event = orjson.loads(line)
                                if isinstance(event, dict):
                                    self.fold(tp.topic, event)
                        except (ValueError, KeyError) as exc:
                            log.warning("skipping an unreadable message in %s: %s", tp, exc)
                if not self.caught_up.is_set() and all(
                    await asyncio.gather(*(self._position(consumer, tp, ends[tp]) for tp in parts))
                ):
                    self.caught_up.set()
                    log.info("profile agent caught up: %d results", self.profiles.results)
        finally:
            await consumer.stop()

    @staticmethod
    async def _position(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
        return await consumer.position(tp) >= end


def create_app(service: CduService) -> web.Application:
    """The aiohttp application of the API (bodies over the source limit get 413)."""
    app = web.Application(client_max_size=2 * MAX_SOURCE_BYTES, middlewares=[_json_errors])

    async def challenges(_request: web.Request) -> web.Response:
        return _json(200, {"challenges": [c.public() for c in service.challenges.values()]})

    async def challenge(request: web.Request) -> web.Response:
        found = service.challenges.get(request.match_info["id"])
        if found is None:
            return _error(404, f"unknown challenge {request.match_info['id']!r}")
        return _json(200, found.public())

    async def submit(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > 2 * MAX_SOURCE_BYTES:
            return _error(413, f"request body over {2 * MAX_SOURCE_BYTES} bytes")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body over {2 * MAX_SOURCE_BYTES} bytes")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"the body is not JSON: {exc}")
        try:
            answer = await service.submit(body)
        except SubmissionError as exc:
            return _error(exc.status, str(exc))
        return _json(202, answer)

    async def submission(request: web.Request) -> web.Response:
        found = service.status(request.match_info["id"])
        if found is None:
            return _error(404, f"unknown submission {request.match_info['id']!r}")
        return _json(200, found)

    async def student(request: web.Request) -> web.Response:
        profile = service.profiles.profile(request.match_info["id"])
        if profile is None:
            return _error(404, f"no results yet for student {request.match_info['id']!r}")
        return _json(200, profile.as_dict())

    async def leaderboard(request: web.Request) -> web.Response:
        language = request.query.get("language") or None
        try:
            size = int(request.query.get("size", LEADERBOARD_SIZE))
        except ValueError:
            return _error(400, "size must be an integer")
        if not 1 <= size <= 100:
            return _error(400, "size must be 1-100")
        leaders = service.profiles.leaderboard(language, size)
        return _json(200, {"language": language, "leaders": leaders})

    async def health(_request: web.Request) -> web.Response:
        return _json(
            200,
            {
                "status": "ok",
                "caught_up": service.caught_up.is_set(),
                "results": service.profiles.results,
                "students": len(service.profiles.students),
                "queued": len(service.queued),
            },
        )

    app.router.add_get("/v1/cdu/challenges", challenges)
    app.router.add_get("/v1/cdu/challenges/{id}", challenge)
    app.router.add_post("/v1/cdu/submissions", submit)
    app.router.add_get("/v1/cdu/submissions/{id}", submission)
    app.router.add_get("/v1/cdu/students/{id}", student)
    app.router.add_get("/v1/cdu/leaderboard", leaderboard)
    app.router.add_get("/health", health)
    return app


@contextlib.asynccontextmanager
async def running_service(
    config: FirelakeConfig, app_config: AppConfig, port: int | None = None
) -> AsyncIterator[tuple[CduService, int]]:
    """The service listening (``port`` 0: any free one); yields it and its port."""
    service = CduService(config, app_config)
    await service.start()
    runner = web.AppRunner(create_app(service), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        wanted = (app_config.port or DEFAULT_PORT) if port is None else port
        site = web.TCPSite(runner, app_config.host, wanted)
        await site.start()
        bound = int(runner.addresses[0][1])
        log.info("Code Developer University API on http://%s:%d/v1/cdu", app_config.host, bound)
        yield service, bound
    finally:
        await runner.cleanup()
        await service.stop()


def run_app(config: FirelakeConfig, app_config: AppConfig, port: int | None = None) -> None:
    """Run the service until SIGTERM or Ctrl-C (``firelake app --name N``)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with running_service(config, app_config, port):
            await stop.wait()

    run_loop(main())

"""The HTTP query service (Athena's API, in Firelake's own JSON): SQL, saved queries, catalog.

Routes (default ``http://127.0.0.1:8080``, ``[query] host/port``):

- ``POST /v1/query`` ``{"sql": …, "params": {…}, "max_rows": n}`` → the rows and what the
  query cost: ``columns`` (name and DuckDB type), ``rows`` (arrays), ``row_count``,
  ``truncated``, ``elapsed_seconds``, ``files_read``, ``bytes_scanned``, ``cost_usd``
  ($5/TB) and ``billed_usd`` (Athena's 10 MB minimum). ``Accept: text/csv`` answers CSV
  and ``Accept: application/vnd.apache.arrow.stream`` an Arrow IPC stream (exact types),
  both with the figures in ``X-Firelake-*`` headers. ``"into_table": NAME`` (admin) writes
  the result into the lake as a new table (CTAS).
- ``GET /v1/queries`` lists the saved queries and views; ``GET /v1/queries/{name}`` shows
  one; ``POST /v1/queries/{name}`` ``{"params": {…}}`` runs it (same answers as above).
- ``GET /v1/tables``, ``GET /v1/tables/{name}`` the catalog: columns and types, partitions,
  files, rows, bytes, last update, files left out and why, schema versions
  (:mod:`queries.versions`; every re-scan records them, as Glue's crawler would).
- ``POST /v1/refresh`` (admin) re-scans the lake now; otherwise every engine re-scans it
  when its catalog is older than ``REFRESH_SECONDS``.
- ``GET /health``; ``GET /`` the dashboard (:mod:`queries.dashboard`) and
  ``GET /v1/pipeline`` its pipeline-health figures.

Errors are ``{"error": {"code", "message", "reason", "line", "column"}}``: bad SQL is 400
with DuckDB's message and position; a sandbox refusal 403 with its named reason; a limit
(time, memory, bytes scanned) 400 with its reason; an unknown saved query or table 404.

``GET /metrics`` is its Prometheus page (:mod:`queries.metrics`). With ``[query] api_keys
= "KEY:read,KEY2:admin"`` every route but ``/health`` and ``/metrics`` needs
``Authorization: Bearer KEY`` (or ``X-Api-Key: KEY``): ``read`` may query and read the
catalog, ``admin`` also refresh and write tables. Queries run on a small pool of sandboxed
engines in worker threads, so the event loop keeps answering while DuckDB works.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
from aiohttp import web

from firelake.aio import ServerThread
from firelake.config import FirelakeConfig
from queries.catalog import TableInfo
from queries.dashboard import add_dashboard, pipeline_health
from queries.engine import (
    QueryEngine,
    QueryError,
    QueryResult,
    format_csv,
    json_rows,
)
from queries.export import ExportError, export_table
from queries.metrics import QueryMetrics
from queries.sandbox import identifier
from queries.saved import SavedQuery, SavedQueryError, bind_parameters, load_saved, saved_dir
from queries.versions import TableVersion, last_update, record_versions, table_columns
from sinks.destinations import lake_destination

__all__ = [
    "ACCESS_REASONS",
    "ARROW_STREAM",
    "REFRESH_SECONDS",
    "ApiKeys",
    "QueryServer",
    "QueryServerThread",
    "QueryService",
    "create_app",
    "result_json",
    "serve_queries",
    "table_json",
]

log = logging.getLogger(__name__)

#: Media type of an Arrow IPC stream answer.
ARROW_STREAM = "application/vnd.apache.arrow.stream"
#: A catalog older than this is re-scanned before the next query on that engine.
REFRESH_SECONDS = 5.0
#: Sandbox reasons that are access refusals (403) rather than a query's fault (400).
ACCESS_REASONS = frozenset(
    {
        "writes_files",
        "reads_outside_lake",
        "file_path_not_literal",
        "attach",
        "extensions",
        "create_outside_temp",
        "not_read_only",
        "settings",
        "environment",
        "dynamic_sql",
        "secrets",
    }
)
SCOPES = ("read", "admin")


class ApiError(Exception):
    """An error answer: HTTP status, code and message (and a query error's details)."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra
        super().__init__(message)


@dataclass(frozen=True)
class ApiKeys:
    """The configured API keys and their scope; empty means no key is needed."""

    keys: Mapping[str, str]

    @classmethod
    def parse(cls, text: str) -> ApiKeys:
        """``"KEY:read,KEY2:admin"`` (a key without a scope is ``read``)."""
        keys: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, _, scope = item.partition(":")
            scope = scope or "read"
            if scope not in SCOPES or not key:
                raise ValueError(f"api key {item!r}: write KEY:read or KEY:admin")
            keys[key] = scope
        return cls(keys)

    def scope(self, request: web.Request) -> str:
        """The scope of the request's key ('admin' when no keys are configured)."""
        if not self.keys:
            return "admin"
        given = request.headers.get("X-Api-Key", "")
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        for key, scope in self.keys.items():
            if given and hmac.compare_digest(given.encode(), key.encode()):
                return scope
        raise ApiError(
            401,
            "Unauthorized",
            "an API key is required: Authorization: Bearer KEY" if not given else "unknown API key",
        )


def result_json(result: QueryResult) -> dict[str, Any]:
    """A query result as the API answers it."""
    return {
        "columns": [
            {"name": name, "type": kind}
            for name, kind in zip(result.columns, result.types, strict=True)
        ],
        "rows": json_rows(result),
        "row_count": result.row_count,
        "truncated": result.truncated,
        "elapsed_seconds": round(result.elapsed, 6),
        "files_read": result.files_read,
        "bytes_scanned": result.bytes_scanned,
        "cost_usd": result.cost_usd,
        "billed_usd": result.billed_usd,
        "scan_note": None,  # kept in the answer's shape; the engine always counts bytes
    }


def _stats_headers(result: QueryResult) -> dict[str, str]:
    return {
        "X-Firelake-Row-Count": str(result.row_count),
        "X-Firelake-Truncated": str(result.truncated).lower(),
        "X-Firelake-Elapsed-Seconds": f"{result.elapsed:.6f}",
        "X-Firelake-Files-Read": "" if result.files_read is None else str(result.files_read),
        "X-Firelake-Bytes-Scanned": ""
        if result.bytes_scanned is None
        else str(result.bytes_scanned),
        "X-Firelake-Cost-USD": f"{result.cost_usd:.12f}",
        "X-Firelake-Billed-USD": f"{result.billed_usd:.12f}",
    }


def table_json(
    info: TableInfo,
    columns: list[tuple[str, str]] | None = None,
    versions: list[TableVersion] | None = None,
) -> dict[str, Any]:
    """A catalog entry as the API answers it (columns and versions when asked for)."""
    last = max((f.dt or "", f.hour or 0) for f in info.data_files) if info.data_files else None
    updated = last_update(info)
    return {
        "name": info.name,
        "location": str(info.path),
        "rows": info.rows,
        "files": info.files,
        "bytes": info.bytes,
        "layout": list(info.layout),
        "partitions": [
            {"dt": p.dt, "hour": p.hour, "files": p.files, "rows": p.rows, "bytes": p.bytes}
            for p in info.partitions
        ],
        "latest_partition": None if last is None else {"dt": last[0], "hour": last[1]},
        "last_update": None
        if updated is None
        else datetime.fromtimestamp(updated, UTC).isoformat().replace("+00:00", "Z"),
        "columns": None if columns is None else [{"name": n, "type": t} for n, t in columns],
        "glue_columns": [c.to_dict() for c in table_columns(info)],
        "version": versions[-1].version if versions else None,
        "versions": None if versions is None else [v.to_dict() for v in versions],
        "problems": [{"path": str(p.path), "reason": p.reason} for p in info.problems],
    }


class QueryService:
    """What the routes use: a pool of sandboxed engines, the saved queries, the keys.

    ``engines`` engines answer queries side by side, each in a worker thread; each holds
    the saved views. A background thread re-scans the lake on each engine in turn every
    ``refresh_s`` seconds, so requests do not wait for listings and footers.
    """

    def __init__(
        self,
        config: FirelakeConfig,
        engines: int = 2,
        refresh_s: float = REFRESH_SECONDS,
    ) -> None:
        self.config = config
        self.keys = ApiKeys.parse(config.query.api_keys)
        self.refresh_s = refresh_s
        #: Saved-query files left out, with why (GET /v1/queries shows them).
        self.saved_errors: dict[str, str] = {}
        self.saved = load_saved([saved_dir(config)], self.saved_errors)
        for path, reason in self.saved_errors.items():
            log.error("saved query left out: %s", reason or path)
        views = {q.name: q.sql for q in self.saved.values() if q.view}
        # Each engine runs with the configured threads ([query] threads).
        self._all = [QueryEngine.for_config(config, views) for _ in range(max(1, engines))]
        self._idle: queue.SimpleQueue[QueryEngine] = queue.SimpleQueue()
        self._refreshed: dict[int, float] = {}
        now = time.monotonic()
        for engine in self._all:
            self._idle.put(engine)
            self._refreshed[id(engine)] = now
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._refresher = threading.Thread(
            target=self._refresh_loop, name="catalog-refresh", daemon=True
        )
        self._refresher.start()

    @contextlib.contextmanager
    def engine(self) -> Iterator[QueryEngine]:
        """An idle engine, with a catalog no older than ``refresh_s`` (blocks: call in a
        worker thread)."""
        engine = self._idle.get()
        try:
            # The background refresher keeps catalogs fresh; a request refreshes only when
            # it has fallen far behind (say, the refresher waits on a long query).
            if time.monotonic() - self._refreshed[id(engine)] > 3 * self.refresh_s:
                engine.refresh()
                self._refreshed[id(engine)] = time.monotonic()
            yield engine
        finally:
            self._idle.put(engine)

    def _refresh_loop(self) -> None:
        """Re-scan the lake on each engine in turn, off the request path."""
        while not self._closed.wait(self.refresh_s / len(self._all)):
            try:
                self._refresh_stale()
            except Exception:  # a refresh failure must not end the refresher
                log.exception("query service: catalog refresh failed")

    def _refresh_stale(self) -> bool:
        """Re-scan the lake on the next idle engine if its catalog is older than
        ``refresh_s`` (a fresh one is left alone: the stale one comes round when its query
        ends); the first engine also records schema versions (the crawler). True if a
        refresh ran."""
        if all(time.monotonic() - at < self.refresh_s for at in self._refreshed.values()):
            return False  # nothing stale: do not wait for an engine at all
        with self.engine() as idle:
            if time.monotonic() - self._refreshed[id(idle)] < self.refresh_s:
                return False
            tables = idle.refresh()
            self._refreshed[id(idle)] = time.monotonic()
            if idle is self._all[0]:
                self._crawl(tables)
            return True

    def run(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        max_rows: int | None = None,
        arrow: bool = False,
    ) -> QueryResult:
        """Run SQL on an idle engine (blocking)."""
        with self.engine() as engine:
            return engine.query(sql, max_rows=max_rows, params=params, arrow=arrow)

    def into_table(self, result: QueryResult, name: str) -> dict[str, Any]:
        """Write a result into the lake as a new table (blocking), then re-scan."""
        if result.arrow is None or result.truncated:
            raise ApiError(
                400,
                "ResultTooLarge",
                f"the result has more than {self.config.query.max_rows} rows; nothing written",
            )
        with self.engine() as engine:
            existing = set(engine.tables)
        report = export_table(result.arrow, lake_destination(self.config), name, existing)
        self.refresh()
        return {"table": name, "rows": report.rows, "files": report.files, "bytes": report.bytes}

    def refresh(self) -> list[TableInfo]:
        """Re-scan the lake on every engine now (blocking)."""
        tables: list[TableInfo] = []
        pending = {id(engine) for engine in self._all}
        while pending:
            with self.engine() as engine:
                done = id(engine) in pending
                if done:
                    tables = engine.refresh()
                    self._refreshed[id(engine)] = time.monotonic()
                    pending.discard(id(engine))
            if not done:
                time.sleep(0.01)  # the other engine is busy with a query: wait for it
        self._crawl(tables)
        return tables

    def _crawl(self, tables: list[TableInfo]) -> None:
        """Record each table's schema versions (the Glue crawler's job); a lake that
        cannot be written to keeps the versions the files show."""
        for info in tables:
            try:
                record_versions(info.destination, info)
            except OSError as exc:
                log.warning("cannot record schema versions of %s: %s", info.name, exc)

    def versions(self, info: TableInfo) -> list[TableVersion]:
        """A table's schema versions (blocking)."""
        return record_versions(info.destination, info)

    def tables(self) -> dict[str, TableInfo]:
        with self.engine() as engine:
            return engine.tables

    def describe(self, name: str) -> tuple[TableInfo, list[tuple[str, str]], list[TableVersion]]:
        """A table's catalog entry, its columns as queries see them, and its schema
        versions (blocking)."""
        with self.engine() as engine:
            info = engine.tables.get(name)
            if info is None:
                raise ApiError(
                    404,
                    "TableNotFound",
                    f"no table {name!r} (tables: {', '.join(engine.tables) or 'none'})",
                )
            described = engine.query(f"DESCRIBE {identifier(name)}", max_rows=100_000)
        return info, [(row[0], row[1]) for row in described.rows], self.versions(info)

    def saved_query(self, name: str) -> SavedQuery:
        if name not in self.saved:
            raise ApiError(
                404,
                "SavedQueryNotFound",
                f"no saved query {name!r} (saved: {', '.join(self.saved) or 'none'})",
            )
        return self.saved[name]

    def close(self) -> None:
        self._closed.set()
        self._refresher.join(timeout=30)
        for engine in self._all:
            engine.close()


SERVICE_KEY = web.AppKey("firelake_queries", QueryService)
METRICS_KEY = web.AppKey("firelake_query_metrics", QueryMetrics)


def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(payload),
        content_type="application/json",
        headers=headers,
    )


def _query_error(exc: QueryError) -> ApiError:
    status = 403 if exc.reason in ACCESS_REASONS else 400
    details = exc.to_dict()
    return ApiError(
        status,
        exc.kind,
        exc.message,
        reason=details["reason"],
        line=details["line"],
        column=details["column"],
    )


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error answer is ``{"error": {...}}`` with a status that says whose fault."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _json(exc.status, {"error": {"code": exc.code, "message": exc.message, **exc.extra}})
    except QueryError as exc:
        error = _query_error(exc)
        return _json(
            error.status, {"error": {"code": error.code, "message": error.message, **error.extra}}
        )
    except (SavedQueryError, ExportError) as exc:
        return _json(400, {"error": {"code": type(exc).__name__, "message": str(exc)}})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = f"{exc.reason} for {request.method} {request.path}"
        if exc.status == 404:
            message = (
                f"no route for {request.method} {request.path}; routes: POST /v1/query, "
                "GET /v1/queries, GET|POST /v1/queries/{name}, GET /v1/tables, "
                "GET /v1/tables/{name}, POST /v1/refresh, GET /v1/pipeline, GET /health, "
                "GET /metrics, "
                "GET / (the dashboard)"
            )
        return _json(
            exc.status, {"error": {"code": exc.reason.replace(" ", ""), "message": message}}
        )
    except Exception as exc:
        log.exception("query service: unexpected error on %s %s", request.method, request.path)
        return _json(
            500,
            {"error": {"code": "InternalError", "message": f"unexpected {type(exc).__name__}"}},
        )


def _scope(request: web.Request, needed: str = "read") -> str:
    scope = request.app[SERVICE_KEY].keys.scope(request)
    if needed == "admin" and scope != "admin":
        raise ApiError(403, "Forbidden", "this needs an API key with the admin scope")
    return scope


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "InvalidJSON", f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "InvalidJSON", "the body must be a JSON object")
    return data


def _wants(request: web.Request) -> str:
    accept = request.headers.get("Accept", "")
    if ARROW_STREAM in accept:
        return "arrow"
    if "text/csv" in accept:
        return "csv"
    return "json"


async def _answer(
    request: web.Request,
    sql: str,
    params: Mapping[str, Any] | None,
    max_rows: Any,
    into: Any = None,
) -> web.Response:
    service = request.app[SERVICE_KEY]
    if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 1):
        raise ApiError(
            400, "InvalidParameter", f"max_rows must be a positive integer, got {max_rows!r}"
        )
    if into is not None:
        _scope(request, "admin")
        if not isinstance(into, str):
            raise ApiError(400, "InvalidParameter", "into_table must be a table name")
    wants = _wants(request)
    result = await asyncio.to_thread(
        service.run, sql, params, max_rows, wants == "arrow" or into is not None
    )
    request.app[METRICS_KEY].count_result(result.row_count, result.elapsed, result.bytes_scanned)
    if into is not None:
        written = await asyncio.to_thread(service.into_table, result, into)
        payload = result_json(result)
        payload["rows"] = []
        payload["into_table"] = written
        return _json(200, payload)
    if wants == "arrow":
        assert result.arrow is not None
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, result.arrow.schema) as writer:
            writer.write_table(result.arrow)
        return web.Response(
            body=sink.getvalue().to_pybytes(),
            content_type=ARROW_STREAM,
            headers=_stats_headers(result),
        )
    if wants == "csv":
        return web.Response(
            text=format_csv(result), content_type="text/csv", headers=_stats_headers(result)
        )
    return _json(200, result_json(result))


async def _query(request: web.Request) -> web.Response:
    _scope(request)
    body = await _body(request)
    sql = body.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise ApiError(400, "MissingSQL", 'the body needs "sql": a SQL string')
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise ApiError(400, "InvalidParameter", '"params" must be an object of name: value')
    return await _answer(request, sql, params, body.get("max_rows"), body.get("into_table"))


async def _list_saved(request: web.Request) -> web.Response:
    _scope(request)
    service = request.app[SERVICE_KEY]
    return _json(
        200,
        {
            "queries": [q.to_dict() for q in service.saved.values()],
            "errors": [{"path": p, "reason": r} for p, r in service.saved_errors.items()],
        },
    )


async def _get_saved(request: web.Request) -> web.Response:
    _scope(request)
    return _json(200, request.app[SERVICE_KEY].saved_query(request.match_info["name"]).to_dict())


async def _run_saved(request: web.Request) -> web.Response:
    _scope(request)
    query = request.app[SERVICE_KEY].saved_query(request.match_info["name"])
    body = await _body(request)
    given = body.get("params") or dict(request.query)
    if not isinstance(given, dict):
        raise ApiError(400, "InvalidParameter", '"params" must be an object of name: value')
    if query.view:
        sql, params = f'SELECT * FROM "{query.name}"', {}
    else:
        sql, params = query.sql, bind_parameters(query, given)
    return await _answer(request, sql, params, body.get("max_rows"), body.get("into_table"))


async def _tables(request: web.Request) -> web.Response:
    _scope(request)
    tables = await asyncio.to_thread(request.app[SERVICE_KEY].tables)
    return _json(200, {"tables": [table_json(info) for info in tables.values()]})


async def _table(request: web.Request) -> web.Response:
    _scope(request)
    info, columns, versions = await asyncio.to_thread(
        request.app[SERVICE_KEY].describe, request.match_info["name"]
    )
    return _json(200, table_json(info, columns, versions))


async def _refresh(request: web.Request) -> web.Response:
    _scope(request, "admin")
    tables = await asyncio.to_thread(request.app[SERVICE_KEY].refresh)
    return _json(200, {"tables": [info.name for info in tables]})


async def _health(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def _pipeline(request: web.Request) -> web.Response:
    _scope(request)
    service = request.app[SERVICE_KEY]

    def health() -> dict[str, Any]:
        return pipeline_health(
            service.config, service.tables(), lambda sql: result_json(service.run(sql))
        )

    return _json(200, await asyncio.to_thread(health))


def create_app(service: QueryService) -> web.Application:
    """The query service's aiohttp application over a service (closed with the app)."""
    metrics = QueryMetrics()
    app = web.Application(middlewares=[metrics.middleware, _errors], client_max_size=1024 * 1024)
    app[SERVICE_KEY] = service
    app[METRICS_KEY] = metrics

    async def close(app: web.Application) -> None:
        await asyncio.to_thread(app[SERVICE_KEY].close)

    app.on_cleanup.append(close)
    app.router.add_post("/v1/query", _query)
    app.router.add_get("/v1/queries", _list_saved)
    app.router.add_get("/v1/queries/{name}", _get_saved)
    app.router.add_post("/v1/queries/{name}", _run_saved)
    app.router.add_get("/v1/tables", _tables)
    app.router.add_get("/v1/tables/{name}", _table)
    app.router.add_post("/v1/refresh", _refresh)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", metrics.handle)
    add_dashboard(app, _pipeline)
    return app


class QueryServer:
    """The query service on a real socket: ``async with QueryServer(config, port=0) as s``."""

    def __init__(self, config: FirelakeConfig, port: int | None = None, engines: int = 2) -> None:
        self.config = config
        self.host = config.query.host
        self.requested_port = config.query.port if port is None else port
        self.engines = engines
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the query server is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        service = await asyncio.to_thread(QueryService, self.config, self.engines)
        app = create_app(service)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.app, self._runner = app, runner
        self._port = int(runner.addresses[0][1])
        log.info("query service listening on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> QueryServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve_queries(
    config: FirelakeConfig, port: int | None = None, ready: asyncio.Event | None = None
) -> None:
    """Run the query service until cancelled (``firelake serve-queries``)."""
    async with QueryServer(config, port=port):
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()


class QueryServerThread(ServerThread[QueryServer]):
    """A :class:`QueryServer` on its own event loop in a background thread, for
    synchronous callers (tests with boto3 or a browser, benchmarks):
    ``with QueryServerThread(config, port=0) as server: server.url``."""

    def __init__(self, config: FirelakeConfig, port: int | None = None, engines: int = 2) -> None:
        super().__init__(QueryServer(config, port=port, engines=engines), "query service")

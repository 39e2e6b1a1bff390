"""Athena's API on the AWS endpoint (``X-Amz-Target: AmazonAthena.*``), over the lake.

Unchanged boto3 ``athena`` clients and PyAthena run SQL against Firelake:

- ``StartQueryExecution`` starts the query in a worker thread on the sandboxed query
  service (:mod:`queries.service`) and answers its id at once; ``GetQueryExecution``
  shows its state (``QUEUED``, ``RUNNING``, ``SUCCEEDED``, ``FAILED``, ``CANCELLED``),
  the bytes scanned and times; a refused or failing query is ``FAILED`` with the
  sandbox's or DuckDB's message as ``StateChangeReason`` (Athena fails bad SQL the same
  way, after the start). ``StopQueryExecution`` interrupts it.
- ``GetQueryResults`` pages the result (``MaxResults`` ≤ 1000, ``NextToken``) in
  Athena's shape: a first row of column labels, every value as ``VarCharValue`` text
  (timestamps ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, NULL as an empty datum) and Athena's
  type names in ``ResultSetMetadata``, which PyAthena converts back.
- ``ExecutionParameters`` fill the query's ``?`` placeholders in order, as Athena's do:
  each is a SQL literal (``'text'`` quoted, a number, ``true``/``false``, ``NULL``,
  ``DATE '…'``, ``TIMESTAMP '…'``), bound as a value (never spliced into the SQL); one
  that is no literal is refused with its position.
- ``ListQueryExecutions`` / ``BatchGetQueryExecution``: the history, newest first.
- ``ListNamedQueries`` / ``GetNamedQuery`` / ``BatchGetNamedQuery``: the saved queries
  (:mod:`queries.saved`), their names as ids.

Query history is kept in the lake: every finished execution's record goes to
``_firelake/athena/executions/<id>.json`` and its result to
``_firelake/athena/results/<id>.parquet`` (the lake's bookkeeping folder, local or S3), so
history and results outlive the process, like Athena's S3 output location. A result is
at most :data:`MAX_RESULT_ROWS` rows (held in memory while it is written); a larger one
fails and says to export it into the lake instead.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from api.backend import Operation, RequestContext
from api.lake_services import DATABASE, LakeServices
from api.protocol import AwsError, opt_int, opt_string, page, page_token, req_string
from queries.engine import QueryEngine, QueryError, json_value
from sinks.paths import STATE_DIR

__all__ = ["MAX_RESULT_ROWS", "AthenaApi", "athena_type", "execution_parameter", "varchar"]

log = logging.getLogger(__name__)

#: Most rows an Athena query result holds.
MAX_RESULT_ROWS = 1_000_000
#: Queries run at once; more wait (QUEUED).
WORKERS = 2
#: Finished executions held in memory with their results; the lake keeps them all.
MAX_KEPT_EXECUTIONS = 100
HISTORY_PREFIX = f"{STATE_DIR}/athena/executions/"
RESULTS_PREFIX = f"{STATE_DIR}/athena/results/"
WORK_GROUP = "primary"
_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_TYPED = re.compile(r"(?is)(date|timestamp|decimal)\s*('.*')")
#: Longest execution parameter Athena takes.
MAX_PARAMETER_CHARS = 1024


def _quoted(text: str) -> str | None:
    """The value of a single-quoted SQL string (``''`` is one quote), None if it is none."""
    if len(text) < 2 or text[0] != "'" or text[-1] != "'":
        return None
    inner = text[1:-1]
    if "'" in inner.replace("''", ""):
        return None  # a lone quote inside: not one literal
    return inner.replace("''", "'")


def execution_parameter(text: str, position: int) -> Any:
    """The value of one of Athena's ``ExecutionParameters`` (a SQL literal), for binding.

    Raises ValueError naming the parameter's position (1-based) and what it should be.
    """
    literal = text.strip()
    word = literal.lower()
    if word == "null":
        return None
    if word in ("true", "false"):
        return word == "true"
    quoted = _quoted(literal)
    if quoted is not None:
        return quoted
    if _INTEGER.fullmatch(literal):
        return int(literal)
    if _NUMBER.fullmatch(literal):
        return float(literal)
    typed = _TYPED.fullmatch(literal)
    inner = _quoted(typed.group(2)) if typed else None
    if typed and inner is not None:
        kind = typed.group(1).lower()
        try:
            if kind == "date":
                return date.fromisoformat(inner.strip())
            if kind == "decimal":
                return Decimal(inner.strip())
            moment = datetime.fromisoformat(inner.strip())
            # Athena's timestamps have no zone; the lake's are UTC.
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        except (ValueError, InvalidOperation):
            raise ValueError(
                f"ExecutionParameters[{position}] {text!r}: not a valid {kind.upper()}"
            ) from None
    raise ValueError(
        f"ExecutionParameters[{position}] {text!r} is not a SQL literal: quote text "
        "('like this'), or give a number, true, false, NULL, DATE '2026-11-29' or "
        "TIMESTAMP '2026-11-29 08:00:00'"
    )


def athena_type(duckdb_type: str) -> tuple[str, int, int]:
    """Athena's type name, precision and scale for a DuckDB type."""
    kind = duckdb_type.upper()
    if kind.endswith("[]") or kind.startswith("LIST") or kind.startswith("ARRAY"):
        return "array", 0, 0
    if kind.startswith("STRUCT"):
        return "row", 0, 0
    if kind.startswith("MAP"):
        return "map", 0, 0
    if kind.startswith("DECIMAL"):
        inside = kind[kind.find("(") + 1 : kind.find(")")] if "(" in kind else "18,3"
        precision, _, scale = inside.partition(",")
        return "decimal", int(precision), int(scale or 0)
    simple = {
        "VARCHAR": ("varchar", 2147483647),
        "BIGINT": ("bigint", 19),
        "HUGEINT": ("decimal", 38),
        "UBIGINT": ("decimal", 20),
        "INTEGER": ("integer", 10),
        "UINTEGER": ("bigint", 10),
        "SMALLINT": ("smallint", 5),
        "USMALLINT": ("integer", 5),
        "TINYINT": ("tinyint", 3),
        "UTINYINT": ("smallint", 3),
        "DOUBLE": ("double", 17),
        "FLOAT": ("float", 17),
        "BOOLEAN": ("boolean", 0),
        "DATE": ("date", 0),
        "TIMESTAMP": ("timestamp", 3),
        "TIMESTAMP WITH TIME ZONE": ("timestamp", 3),
        "TIMESTAMP_NS": ("timestamp", 9),
        "TIMESTAMP_MS": ("timestamp", 3),
        "TIMESTAMP_S": ("timestamp", 0),
        "TIME": ("time", 3),
        "BLOB": ("varbinary", 0),
        "UUID": ("varchar", 36),
    }
    name, precision = simple.get(kind, ("varchar", 2147483647))
    return name, precision, 0


def varchar(value: Any) -> str | None:
    """One value as Athena's text (None stays None: an empty datum)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            # Athena's timestamp has no zone: the lake's times are UTC.
            offset = value.utcoffset() or timedelta(0)
            value = (value - offset).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value.total_seconds())
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(json_value(value), ensure_ascii=False)
    return str(value)


@dataclass
class Execution:
    """One query execution: request, state, statistics, and its result once done."""

    id: str
    query: str
    database: str
    submitted: float
    #: ExecutionParameters as given (SQL literals), bound to the ``?`` placeholders.
    parameters: list[str] = field(default_factory=list)
    state: str = "QUEUED"
    reason: str = ""
    error_type: str = ""
    completed: float | None = None
    engine_ms: int = 0
    scanned: int = 0
    columns: list[tuple[str, str]] = field(default_factory=list)
    result: pa.Table | None = None
    engine: QueryEngine | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    #: Its record (and result) are in the lake: memory may let it go.
    kept: bool = False

    def to_aws(self, output: str) -> dict[str, Any]:
        status: dict[str, Any] = {"State": self.state, "SubmissionDateTime": self.submitted}
        if self.completed is not None:
            status["CompletionDateTime"] = self.completed
        if self.reason:
            status["StateChangeReason"] = self.reason
        if self.state == "FAILED":
            status["AthenaError"] = {
                "ErrorCategory": 2,  # USER: the query's fault, not the service's
                "ErrorType": 1000,
                "Retryable": False,
                "ErrorMessage": self.reason,
            }
        total = int(((self.completed or time.time()) - self.submitted) * 1000)
        answer: dict[str, Any] = {
            "QueryExecutionId": self.id,
            "Query": self.query,
            "StatementType": "DML",
            "ResultConfiguration": {"OutputLocation": f"{output}{self.id}.parquet"},
            "QueryExecutionContext": {"Database": self.database, "Catalog": "AwsDataCatalog"},
            "Status": status,
            "Statistics": {
                "EngineExecutionTimeInMillis": self.engine_ms,
                "DataScannedInBytes": self.scanned,
                "TotalExecutionTimeInMillis": total,
                "QueryQueueTimeInMillis": max(0, total - self.engine_ms),
            },
            "WorkGroup": WORK_GROUP,
            "EngineVersion": {
                "SelectedEngineVersion": "Firelake DuckDB",
                "EffectiveEngineVersion": "Firelake DuckDB",
            },
        }
        if self.parameters:
            answer["ExecutionParameters"] = list(self.parameters)
        return answer

    def bound(self) -> dict[str, Any]:
        """The parameters as DuckDB binds ``?`` placeholders: by position, ``"1"`` first."""
        return {str(n): execution_parameter(text, n) for n, text in enumerate(self.parameters, 1)}

    def record(self) -> dict[str, Any]:
        """What the history keeps (the result goes to its own Parquet file)."""
        return {
            "id": self.id,
            "query": self.query,
            "database": self.database,
            "parameters": self.parameters,
            "submitted": self.submitted,
            "state": self.state,
            "reason": self.reason,
            "completed": self.completed,
            "engine_ms": self.engine_ms,
            "scanned": self.scanned,
            "columns": self.columns,
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Execution:
        return cls(
            id=data["id"],
            query=data["query"],
            database=data.get("database", DATABASE),
            parameters=[str(p) for p in data.get("parameters", [])],
            submitted=float(data["submitted"]),
            state=data["state"],
            reason=data.get("reason", ""),
            completed=data.get("completed"),
            engine_ms=int(data.get("engine_ms", 0)),
            scanned=int(data.get("scanned", 0)),
            columns=[tuple(c) for c in data.get("columns", [])],  # type: ignore[misc]
        )


def _token(payload: dict[str, Any]) -> int:
    return page_token(payload, "InvalidRequestException")


def _page(payload: dict[str, Any], items: list[Any], key: str) -> dict[str, Any]:
    """A listing's page: at most 50 entries (``MaxResults`` 0: 50), as Athena's."""
    return page(payload, items, key, limit=50, low=0, code="InvalidRequestException")


class AthenaApi:
    """The Athena operations, over the lake's query service."""

    def __init__(self, lake: LakeServices) -> None:
        self.lake = lake
        self._executions: dict[str, Execution] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="athena")

    @property
    def operations(self) -> dict[str, Operation]:
        return {
            "StartQueryExecution": self.start_query_execution,
            "GetQueryExecution": self.get_query_execution,
            "BatchGetQueryExecution": self.batch_get_query_execution,
            "GetQueryResults": self.get_query_results,
            "StopQueryExecution": self.stop_query_execution,
            "ListQueryExecutions": self.list_query_executions,
            "ListNamedQueries": self.list_named_queries,
            "GetNamedQuery": self.get_named_query,
            "BatchGetNamedQuery": self.batch_get_named_query,
            "GetWorkGroup": self.get_work_group,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for execution in list(self._executions.values()):
            execution.stop.set()
            if execution.engine is not None:
                execution.engine.interrupt()

    @property
    def _output(self) -> str:
        return self.lake.destination().uri(RESULTS_PREFIX.rstrip("/")) + "/"

    # ------------------------------------------------------------------ running

    def _run(self, execution: Execution) -> None:
        """Run one execution to its end (worker thread), then keep it in the lake."""
        if execution.stop.is_set():
            return
        service = self.lake.service()
        started = time.monotonic()
        try:
            with service.engine() as engine:
                execution.engine = engine
                if execution.stop.is_set():
                    return
                execution.state = "RUNNING"
                result = engine.query(
                    execution.query,
                    max_rows=MAX_RESULT_ROWS,
                    params=execution.bound(),
                    arrow=True,
                )
            if result.truncated:
                raise QueryError(
                    f"the result has more than {MAX_RESULT_ROWS} rows; write it into the lake "
                    "with firelake query --into-table (or POST /v1/query into_table) instead",
                    execution.query,
                    "ResultTooLarge",
                )
            execution.columns = list(zip(result.columns, result.types, strict=True))
            execution.result = result.arrow
            execution.scanned = result.bytes_scanned or 0
            execution.state = "SUCCEEDED"
        except QueryError as exc:
            if execution.stop.is_set():
                execution.state, execution.reason = "CANCELLED", "stopped by StopQueryExecution"
            elif exc.kind == "ParameterError":
                # DuckDB names the n-th ``?`` ``$n``: say it in Athena's terms.
                execution.state, execution.reason = (
                    "FAILED",
                    f"{exc.kind}: the query's ? placeholders and the "
                    f"{len(execution.parameters)} ExecutionParameters do not match "
                    f"({exc.message}; $n is the n-th ?)",
                )
            else:
                execution.state, execution.reason = "FAILED", f"{exc.kind}: {exc.message}"
        except Exception as exc:  # a bug: the query fails, the endpoint goes on
            log.exception("athena: query %s failed unexpectedly", execution.id)
            execution.state, execution.reason = "FAILED", f"internal error: {type(exc).__name__}"
        finally:
            execution.engine = None
            execution.engine_ms = int((time.monotonic() - started) * 1000)
            execution.completed = time.time()
        self._keep(execution)

    def _keep(self, execution: Execution) -> None:
        """Write the execution's record and result into the lake (best effort, logged)."""
        destination = self.lake.destination()
        try:
            if execution.result is not None:
                out = io.BytesIO()
                pq.write_table(execution.result, out, compression="zstd")
                destination.put(f"{RESULTS_PREFIX}{execution.id}.parquet", out.getvalue())
            body = json.dumps(execution.record()).encode()
            destination.put(f"{HISTORY_PREFIX}{execution.id}.json", body)
        except OSError as exc:
            log.warning("athena: cannot keep query %s in the lake: %s", execution.id, exc)
            return
        execution.kept = True
        self._bound()

    def _bound(self) -> None:
        """Hold at most MAX_KEPT_EXECUTIONS finished executions kept in the lake (results
        up to a million rows each); older ones are read back from the lake when asked."""
        with self._lock:
            kept = [e for e in self._executions.values() if e.kept]
            kept.sort(key=lambda e: e.completed or e.submitted)
            for execution in kept[: max(0, len(kept) - MAX_KEPT_EXECUTIONS)]:
                del self._executions[execution.id]

    def _execution(self, query_id: str) -> Execution:
        """An execution of this process, else one from the lake's history."""
        with self._lock:
            found = self._executions.get(query_id)
        if found is not None:
            return found
        try:
            uuid.UUID(query_id)
        except ValueError:
            raise AwsError(
                400, "InvalidRequestException", f"QueryExecution {query_id} was not found"
            ) from None
        raw = self.lake.destination().get(f"{HISTORY_PREFIX}{query_id}.json")
        if raw is None:
            raise AwsError(
                400, "InvalidRequestException", f"QueryExecution {query_id} was not found"
            )
        execution = Execution.from_record(json.loads(raw))
        execution.kept = True
        if execution.state == "SUCCEEDED":
            data = self.lake.destination().get(f"{RESULTS_PREFIX}{query_id}.parquet")
            if data is not None:
                execution.result = pq.read_table(io.BytesIO(data))
        with self._lock:
            self._executions.setdefault(query_id, execution)
        self._bound()
        return execution

    # ------------------------------------------------------------------ operations

    async def start_query_execution(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        query = req_string(payload, "QueryString", min_len=1, max_len=262144)
        context = payload.get("QueryExecutionContext") or {}
        database = context.get("Database") or DATABASE if isinstance(context, dict) else DATABASE
        if database != DATABASE:
            raise AwsError(
                400,
                "InvalidRequestException",
                f"database {database!r} does not exist (the lake is database {DATABASE!r})",
            )
        parameters = payload.get("ExecutionParameters") or []
        if not isinstance(parameters, list) or not all(
            isinstance(p, str) and 1 <= len(p) <= MAX_PARAMETER_CHARS for p in parameters
        ):
            raise AwsError(
                400,
                "InvalidRequestException",
                f"ExecutionParameters must be a list of SQL literals of 1 to "
                f"{MAX_PARAMETER_CHARS} characters",
            )
        for position, text in enumerate(parameters, 1):
            try:
                execution_parameter(text, position)
            except ValueError as exc:
                raise AwsError(400, "InvalidRequestException", str(exc)) from None
        execution = Execution(str(uuid.uuid4()), query, database, time.time(), parameters)
        with self._lock:
            self._executions[execution.id] = execution
        self._pool.submit(self._run, execution)
        return {"QueryExecutionId": execution.id}

    async def get_query_execution(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        query_id = req_string(payload, "QueryExecutionId", min_len=1, max_len=128)
        execution = await asyncio.to_thread(self._execution, query_id)
        return {"QueryExecution": execution.to_aws(self._output)}

    async def batch_get_query_execution(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        ids = payload.get("QueryExecutionIds") or []
        found, missing = [], []
        for query_id in ids:
            try:
                execution = await asyncio.to_thread(self._execution, str(query_id))
                found.append(execution.to_aws(self._output))
            except AwsError as exc:
                missing.append(
                    {
                        "QueryExecutionId": query_id,
                        "ErrorCode": exc.code,
                        "ErrorMessage": exc.message,
                    }
                )
        return {"QueryExecutions": found, "UnprocessedQueryExecutionIds": missing}

    async def get_query_results(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        query_id = req_string(payload, "QueryExecutionId", min_len=1, max_len=128)
        size = opt_int(payload, "MaxResults", low=1, high=1000) or 1000
        offset = _token(payload)
        execution = await asyncio.to_thread(self._execution, query_id)
        if execution.state != "SUCCEEDED":
            detail = f": {execution.reason}" if execution.reason else ""
            raise AwsError(
                400,
                "InvalidRequestException",
                f"Query has not yet finished. Current state: {execution.state}{detail}",
            )
        table = execution.result
        if table is None:
            raise AwsError(
                400, "InvalidRequestException", f"the result of {query_id} is no longer kept"
            )
        labels = [name for name, _ in execution.columns]
        rows: list[dict[str, Any]] = []
        # Athena's first page starts with a row of column labels; offsets count it.
        if offset == 0:
            rows.append({"Data": [{"VarCharValue": name} for name in labels]})
        start = max(0, offset - 1)
        take = size - len(rows)
        page = table.slice(start, take).to_pylist()
        for item in page:
            rows.append(
                {
                    "Data": [
                        {} if (text := varchar(item[name])) is None else {"VarCharValue": text}
                        for name in table.column_names
                    ]
                }
            )
        answer: dict[str, Any] = {
            "UpdateCount": 0,
            "ResultSet": {
                "Rows": rows,
                "ResultSetMetadata": {
                    "ColumnInfo": [
                        {
                            "CatalogName": "hive",
                            "SchemaName": "",
                            "TableName": "",
                            "Name": name,
                            "Label": name,
                            "Type": athena_type(kind)[0],
                            "Precision": athena_type(kind)[1],
                            "Scale": athena_type(kind)[2],
                            "Nullable": "UNKNOWN",
                            "CaseSensitive": athena_type(kind)[0] == "varchar",
                        }
                        for name, kind in execution.columns
                    ]
                },
            },
        }
        end = start + len(page)
        if end < table.num_rows:
            answer["NextToken"] = str(end + 1)
        return answer

    async def stop_query_execution(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        query_id = req_string(payload, "QueryExecutionId", min_len=1, max_len=128)
        execution = await asyncio.to_thread(self._execution, query_id)
        if execution.state not in _TERMINAL:
            execution.stop.set()
            engine = execution.engine
            if engine is not None:
                engine.interrupt()
            elif execution.state == "QUEUED":
                execution.state, execution.reason = "CANCELLED", "stopped by StopQueryExecution"
                execution.completed = time.time()
                await asyncio.to_thread(self._keep, execution)
        return {}

    def _history_ids(self) -> list[str]:
        """Ids of this process's executions and the lake's history, newest first."""
        with self._lock:
            mine = {e.id: e.submitted for e in self._executions.values()}
        kept = {
            info.key.rsplit("/", 1)[-1].removesuffix(".json"): info.mtime
            for info in self.lake.destination().list(HISTORY_PREFIX)
            if info.key.endswith(".json")
        }
        merged = {**kept, **mine}
        return sorted(merged, key=lambda i: merged[i], reverse=True)

    async def list_query_executions(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        ids = await asyncio.to_thread(self._history_ids)
        return _page(payload, ids, "QueryExecutionIds")

    async def _saved(self) -> dict[str, Any]:
        service = await self.lake.service_async()
        return dict(service.saved)

    def _named(self, query: Any) -> dict[str, Any]:
        return {
            "Name": query.name,
            "Description": query.description,
            "Database": DATABASE,
            "QueryString": query.sql,
            "NamedQueryId": query.name,
            "WorkGroup": WORK_GROUP,
        }

    async def list_named_queries(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        return _page(payload, sorted(await self._saved()), "NamedQueryIds")

    async def get_named_query(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        name = req_string(payload, "NamedQueryId", min_len=1, max_len=128)
        saved = await self._saved()
        if name not in saved:
            raise AwsError(
                400,
                "InvalidRequestException",
                f"NamedQuery {name} was not found (saved: {', '.join(sorted(saved)) or 'none'})",
            )
        return {"NamedQuery": self._named(saved[name])}

    async def batch_get_named_query(
        self, payload: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        saved = await self._saved()
        ids = payload.get("NamedQueryIds") or []
        return {
            "NamedQueries": [self._named(saved[i]) for i in ids if i in saved],
            "UnprocessedNamedQueryIds": [
                {"NamedQueryId": i, "ErrorCode": "INVALID_INPUT", "ErrorMessage": "not found"}
                for i in ids
                if i not in saved
            ],
        }

    async def get_work_group(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        name = opt_string(payload, "WorkGroup") or WORK_GROUP
        limits = self.lake.config.query
        configuration: dict[str, Any] = {
            "ResultConfiguration": {"OutputLocation": self._output},
            "EnforceWorkGroupConfiguration": True,
            "EngineVersion": {"EffectiveEngineVersion": "Firelake DuckDB"},
        }
        if limits.max_bytes_scanned:
            configuration["BytesScannedCutoffPerQuery"] = limits.max_bytes_scanned
        return {
            "WorkGroup": {
                "Name": name,
                "State": "ENABLED",
                "Configuration": configuration,
                "Description": "Firelake's sandboxed query service",
            }
        }

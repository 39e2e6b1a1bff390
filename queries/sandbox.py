"""The SQL sandbox (IAM + Athena workgroups): what a user's SQL may do, and its limits.

A query may read the lake and nothing else, and may change nothing that outlives it.
Two guards stand behind each other, because each alone has holes:

- **DuckDB's own settings** (:func:`connection_settings`): ``enable_external_access =
  false`` with ``allowed_directories`` set to the lake's local roots (file functions can
  open nothing else), no spilling folder (DuckDB silently adds its ``temp_directory`` —
  ``.tmp`` under the working folder — to the allowed directories otherwise), no Python
  replacement scans (``FROM some_name`` would otherwise read any pandas/Arrow object of
  the calling process), no extension autoloading, a ``memory_limit``, and last
  ``lock_configuration`` so SQL cannot undo any of it.
- **Statement inspection** (:func:`check_sql`), because DuckDB's file guard allows the
  lake itself: ``COPY (…) TO '<lake>/playback/x.parquet'``, ``EXPORT DATABASE
  '<lake>/…'`` and ``ATTACH '<lake>/x.db'`` all pass it, and a stray file in a table's
  folder then breaks every query over that table. Each statement of the SQL is classified
  with DuckDB's own parser (``duckdb.extract_statements``) and tokenizer
  (``duckdb.tokenize``); only reads are let through, plus ``CREATE TEMP …`` objects that
  the query itself uses (the engine runs every query in a transaction it rolls back, so
  they are a per-query temporary schema). File-reading functions must name literal paths
  inside the lake. Every refusal is a :class:`SandboxViolation` with a named reason.

At run time (:class:`Deadline`) the connection is interrupted when the time limit passes;
the engine refuses a result whose bytes scanned passed the workgroup cutoff (Athena's
``BytesScannedCutoffPerQuery`` cancels the query the same way, after the fact).

Pure: DuckDB's parser, the standard library and ``firelake.config``; no Kafka client.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import duckdb

from firelake.config import QueryConfig

__all__ = [
    "FILE_FUNCTIONS",
    "READ_ONLY_PRAGMAS",
    "REASONS",
    "CheckedStatement",
    "Deadline",
    "SandboxLimits",
    "SandboxViolation",
    "check_sql",
    "connection_settings",
    "identifier",
    "lock_settings",
    "query_limits",
    "split_sql",
    "sql_string",
    "violation_from_error",
]

GiB = 1024**3

#: Every reason a query can be refused for, and what it means.
REASONS: dict[str, str] = {
    "writes_files": "queries are read-only: nothing may be written to the lake or elsewhere",
    "reads_outside_lake": "queries read the lake only",
    "file_path_not_literal": "a file function's path must be a string literal inside the lake",
    "attach": "no other database may be attached or switched to",
    "extensions": "extensions may not be installed or loaded",
    "create_outside_temp": "CREATE is allowed only for TEMP objects used by the query itself",
    "not_read_only": "queries may not change lake tables or views",
    "settings": "settings are fixed by the sandbox",
    "environment": "the server's environment is not readable",
    "dynamic_sql": "SQL built from strings at run time cannot be inspected",
    "secrets": "secrets may not be created or read",
    "transaction": "each query runs in a transaction of its own",
    "statement_type": "this kind of statement is not allowed in a query",
    "time_limit": "the query ran past the time limit and was stopped",
    "memory_limit": "the query needed more memory than the limit",
    "bytes_scanned_limit": "the query scanned more than the per-query cutoff",
}

#: Table and scalar functions that open files: their path argument is checked.
FILE_FUNCTIONS = frozenset(
    {
        "read_csv",
        "read_csv_auto",
        "sniff_csv",
        "read_parquet",
        "parquet_scan",
        "parquet_metadata",
        "parquet_schema",
        "parquet_file_metadata",
        "parquet_kv_metadata",
        "parquet_bloom_probe",
        "read_json",
        "read_json_auto",
        "read_json_objects",
        "read_json_objects_auto",
        "read_ndjson",
        "read_ndjson_auto",
        "read_ndjson_objects",
        "read_text",
        "read_blob",
        "glob",
        "read_xlsx",
        "iceberg_scan",
        "delta_scan",
    }
)
#: Functions that reach outside the lake whatever their arguments.
_REFUSED_FUNCTIONS = {
    "getenv": "environment",
    "query": "dynamic_sql",
    "query_table": "dynamic_sql",
    "sqlite_scan": "attach",
    "sqlite_attach": "attach",
    "postgres_scan": "attach",
    "postgres_attach": "attach",
    "mysql_scan": "attach",
    "duckdb_secrets": "secrets",
    "which_secret": "secrets",
    "load_aws_credentials": "secrets",
}
#: PRAGMAs that only describe the catalog (anything else, e.g. ``PRAGMA threads = 8`` or
#: ``IMPORT DATABASE``, which DuckDB runs as a PRAGMA, is refused).
READ_ONLY_PRAGMAS = frozenset(
    {"table_info", "show", "show_tables", "show_tables_expanded", "version", "platform"}
)
_TEMP_KINDS = frozenset({"table", "view", "macro", "function", "sequence", "type"})
_ST = duckdb.StatementType
_TT = duckdb.token_type


class SandboxViolation(Exception):
    """SQL the sandbox refuses, with a named ``reason`` (a key of :data:`REASONS`).

    ``position`` is the character offset in the SQL of what was refused, when known.
    """

    def __init__(self, reason: str, detail: str, position: int | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.position = position
        super().__init__(f"refused by the sandbox ({reason}): {detail} — {REASONS[reason]}")


@dataclass(frozen=True)
class SandboxLimits:
    """A workgroup's limits; 0 means none for ``max_bytes_scanned``."""

    timeout_seconds: float = 30.0
    memory_limit_bytes: int = 1 * GiB
    max_rows: int = 10_000
    max_bytes_scanned: int = 0

    def __post_init__(self) -> None:
        if self.timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be > 0, got {self.timeout_seconds}")
        if self.memory_limit_bytes < 16 * 1024**2:
            raise ValueError(f"memory_limit_bytes must be >= 16 MiB, got {self.memory_limit_bytes}")
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}")
        if self.max_bytes_scanned < 0:
            raise ValueError(f"max_bytes_scanned must be >= 0, got {self.max_bytes_scanned}")


@dataclass(frozen=True)
class CheckedStatement:
    """One statement of the SQL as the parser split it, where it starts, its parameters."""

    sql: str
    offset: int
    type: duckdb.StatementType
    parameters: frozenset[str]

    @property
    def returns_rows(self) -> bool:
        """Whether the statement is a query (its rows are the answer when it is last)."""
        return self.type in (_ST.SELECT, _ST.EXPLAIN, _ST.PRAGMA, _ST.MULTI, _ST.CALL)


def query_limits(config: QueryConfig) -> SandboxLimits:
    """The sandbox limits of a ``[query]`` configuration section."""
    return SandboxLimits(
        timeout_seconds=config.timeout_seconds,
        memory_limit_bytes=config.memory_limit_mb * 1024**2,
        max_rows=config.max_rows,
        max_bytes_scanned=config.max_bytes_scanned,
    )


def sql_string(text: str) -> str:
    """A SQL string literal of ``text`` (quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def identifier(name: str) -> str:
    """A quoted SQL identifier (quotes doubled): any table or column name, safely."""
    return '"' + name.replace('"', '""') + '"'


def connection_settings(local_roots: Sequence[Path], limits: SandboxLimits) -> list[str]:
    """The SET statements that confine a fresh connection (run before :func:`lock_settings`).

    Order matters: ``temp_directory`` and the allowed directories must be set while
    external access is still on.
    """
    allowed = ", ".join(sql_string(str(r).rstrip("/") + "/") for r in local_roots)
    return [
        # No spilling: DuckDB would allow reading and writing its spill folder.
        "SET temp_directory = ''",
        f"SET memory_limit = '{limits.memory_limit_bytes}B'",
        f"SET allowed_directories = [{allowed}]",
        "SET python_enable_replacements = false",
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET allow_community_extensions = false",
        # Registered Arrow datasets (S3 tables) still scan: pyarrow does their I/O.
        "SET enable_external_access = false",
    ]


def lock_settings() -> str:
    """The last setting: nothing can be changed by SQL afterwards."""
    return "SET lock_configuration = true"


# ---------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Token:
    start: int
    kind: duckdb.token_type
    text: str

    @property
    def word(self) -> str:
        """The token as a lower-case word (identifiers unquoted)."""
        text = self.text
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1].replace('""', '"')
        return text.lower()


def _tokens(sql: str) -> list[_Token]:
    """DuckDB's tokens of one statement, with their text; comments dropped."""
    raw = duckdb.tokenize(sql)
    tokens = []
    for i, (start, kind) in enumerate(raw):
        end = raw[i + 1][0] if i + 1 < len(raw) else len(sql)
        text = sql[start:end].rstrip()
        if kind == _TT.comment:
            continue
        if kind == _TT.operator and len(text) > 1 and text[0] in "()[],;":
            # The tokenizer may glue punctuation together, e.g. "))" or "(["; split it.
            for j, char in enumerate(text):
                if not char.isspace():
                    tokens.append(_Token(start + j, kind, char))
            continue
        tokens.append(_Token(start, kind, text))
    return tokens


def _string_value(token: _Token) -> str | None:
    """The value of a string literal token ('…' or E'…'), else None."""
    if token.kind != _TT.string_const:
        return None
    text = token.text
    if text[:1] in "eE":
        text = text[1:]
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return None


# ---------------------------------------------------------------------------- paths


def _glob_base(path: str) -> str:
    """The part of a path before its first glob character."""
    cut = min((i for i, c in enumerate(path) if c in "*?[{"), default=len(path))
    return path[:cut]


def _inside(path: str, local_roots: Sequence[Path], remote_roots: Sequence[str]) -> bool:
    """Whether a path a function would open lies inside one of the lake's roots."""
    if "://" in path:
        return any(path.startswith(root.rstrip("/") + "/") for root in remote_roots)
    base = _glob_base(os.path.expanduser(path))
    resolved = Path(os.path.realpath(os.path.join(os.getcwd(), base)))
    if ".." in Path(path).parts:
        return False
    return any(resolved == root or resolved.is_relative_to(root) for root in local_roots)


def _paths_argument(tokens: list[_Token], open_paren: int) -> tuple[list[str], int] | None:
    """The literal path(s) of a call's first argument, or None when it is not literal."""
    first = open_paren + 1
    if first >= len(tokens):
        return None

    def ends(i: int) -> bool:
        # The argument is over: a literal followed by an expression is computed.
        return i < len(tokens) and tokens[i].text in (",", ")")

    value = _string_value(tokens[first])
    if value is not None:
        return ([value], tokens[first].start) if ends(first + 1) else None
    if tokens[first].text == "[":
        paths: list[str] = []
        i = first + 1
        while i < len(tokens) and tokens[i].text != "]":
            item = _string_value(tokens[i])
            if item is None or tokens[i + 1 : i + 2] == [] or tokens[i + 1].text not in ",]":
                return None
            paths.append(item)
            i += 2 if tokens[i + 1].text == "," else 1
        return (paths, tokens[first].start) if ends(i + 1) else None
    return None


def _check_reads(
    tokens: list[_Token],
    offset: int,
    local_roots: Sequence[Path],
    remote_roots: Sequence[str],
) -> None:
    """Refuse calls that reach outside the lake, and file reads of paths outside it."""
    for i, token in enumerate(tokens):
        if token.kind == _TT.string_const and i > 0 and tokens[i - 1].word in ("from", "join"):
            # FROM 'file.csv': DuckDB reads the file (a replacement scan).
            path = _string_value(token) or ""
            if not _inside(path, local_roots, remote_roots):
                raise SandboxViolation(
                    "reads_outside_lake",
                    f"FROM {token.text} is outside the lake",
                    offset + token.start,
                )
            continue
        if token.kind not in (_TT.identifier, _TT.keyword):
            continue
        if i + 1 >= len(tokens) or tokens[i + 1].text != "(":
            continue
        name = token.word
        if name in _REFUSED_FUNCTIONS:
            raise SandboxViolation(_REFUSED_FUNCTIONS[name], f"{name}()", offset + token.start)
        if name not in FILE_FUNCTIONS:
            continue
        found = _paths_argument(tokens, i + 1)
        if found is None:
            raise SandboxViolation(
                "file_path_not_literal", f"{name}() with a computed path", offset + token.start
            )
        paths, where = found
        for path in paths:
            if not _inside(path, local_roots, remote_roots):
                raise SandboxViolation(
                    "reads_outside_lake", f"{name}({path!r}) is outside the lake", offset + where
                )


# ---------------------------------------------------------------------------- statements


def _skip(tokens: list[_Token], i: int, *words: str) -> int:
    """The index after an optional sequence of keywords at ``i``."""
    j = i
    for word in words:
        if j < len(tokens) and tokens[j].word == word:
            j += 1
        else:
            return i
    return j


def _object_name(tokens: list[_Token], i: int) -> tuple[str, str]:
    """(schema or '', name) of a possibly qualified object name starting at ``i``."""
    parts = []
    while i < len(tokens):
        parts.append(tokens[i].word)
        if i + 2 < len(tokens) and tokens[i + 1].text == ".":
            i += 2
            continue
        break
    if len(parts) == 1:
        return "", parts[0]
    return parts[-2], parts[-1]


def _check_create(tokens: list[_Token], offset: int, created: set[str]) -> None:
    """Allow ``CREATE [OR REPLACE] TEMP <kind> name`` (or ``temp.name``) only."""
    i = _skip(tokens, 1, "or", "replace")
    temporary = i < len(tokens) and tokens[i].word in ("temp", "temporary")
    if temporary:
        i += 1
    kind = tokens[i].word if i < len(tokens) else ""
    if kind in ("secret", "persistent"):
        raise SandboxViolation("secrets", "CREATE SECRET", offset + tokens[0].start)
    if kind not in _TEMP_KINDS:
        raise SandboxViolation(
            "create_outside_temp", f"CREATE {kind.upper() or '…'}", offset + tokens[0].start
        )
    i = _skip(tokens, i + 1, "if", "not", "exists")
    schema, name = _object_name(tokens, i)
    if not (temporary or schema == "temp"):
        raise SandboxViolation(
            "create_outside_temp",
            f"CREATE {kind.upper()} {name} (write CREATE TEMP {kind.upper()})",
            offset + tokens[0].start,
        )
    created.add(name)


def _target(tokens: list[_Token], stype: duckdb.StatementType) -> str | None:
    """The object a data or schema change statement targets (unqualified name)."""
    if stype == _ST.INSERT:
        i = 1
        if i + 1 < len(tokens) and tokens[i].word == "or":
            i += 2  # INSERT OR REPLACE / OR IGNORE
        i = _skip(tokens, i, "into")
    elif stype == _ST.UPDATE:
        i = 1
    elif stype == _ST.DELETE:
        i = _skip(tokens, 1, "from")
    elif stype in (_ST.DROP, _ST.ALTER):
        i = 2  # DROP TABLE x / ALTER VIEW x
        i = _skip(tokens, i, "if", "exists")
    else:
        return None
    if i >= len(tokens):
        return None
    return _object_name(tokens, i)[1]


def _check_statement(
    statement: duckdb.Statement,
    offset: int,
    created: set[str],
    local_roots: Sequence[Path],
    remote_roots: Sequence[str],
) -> None:
    stype = statement.type
    tokens = _tokens(statement.query)
    if not tokens:
        return
    at = offset + tokens[0].start
    head = tokens[0].word
    if stype == _ST.COPY:
        if any(t.word == "to" for t in tokens):
            raise SandboxViolation("writes_files", "COPY … TO", at)
        raise SandboxViolation("reads_outside_lake", "COPY … FROM loads a file into a table", at)
    if stype == _ST.EXPORT:
        raise SandboxViolation("writes_files", "EXPORT DATABASE", at)
    if stype in (_ST.ATTACH, _ST.DETACH):
        raise SandboxViolation("attach", head.upper(), at)
    if stype == _ST.LOAD:
        raise SandboxViolation(
            "extensions", f"{head.upper()} {tokens[1].text if len(tokens) > 1 else ''}".strip(), at
        )
    if stype == _ST.SET:
        raise SandboxViolation("settings", " ".join(t.text for t in tokens[:3]), at)
    if stype == _ST.TRANSACTION:
        raise SandboxViolation("transaction", head.upper(), at)
    if stype == _ST.PRAGMA:
        name = tokens[1].word if head == "pragma" and len(tokens) > 1 else head
        if head != "pragma" or name not in READ_ONLY_PRAGMAS:
            reason = "writes_files" if head in ("import", "export") else "settings"
            if head == "import":
                reason = "reads_outside_lake"
            raise SandboxViolation(reason, " ".join(t.text for t in tokens[:3]), at)
    elif stype == _ST.CREATE:
        _check_create(tokens, offset, created)
    elif stype in (_ST.INSERT, _ST.UPDATE, _ST.DELETE, _ST.DROP, _ST.ALTER):
        target = _target(tokens, stype)
        if target is None or target not in created:
            raise SandboxViolation(
                "not_read_only",
                f"{head.upper()} on {target or 'an object'} (only TEMP objects this query "
                "created may change)",
                at,
            )
    elif stype == _ST.CALL:
        if head == "checkpoint" or head == "force":
            raise SandboxViolation("statement_type", head.upper(), at)
    elif stype == _ST.MULTI:
        if head not in ("pivot", "unpivot"):
            raise SandboxViolation("statement_type", head.upper(), at)
    elif stype not in (_ST.SELECT, _ST.EXPLAIN):
        raise SandboxViolation("statement_type", f"{stype.name} ({head.upper()})", at)
    _check_reads(tokens, offset, local_roots, remote_roots)


def split_sql(sql: str) -> list[tuple[duckdb.Statement, int]]:
    """DuckDB's statements of SQL, each with its offset in the text (nothing checked)."""
    try:
        statements = duckdb.extract_statements(sql)
    except ValueError as exc:
        # A statement type the Python enum does not know (e.g. UPDATE EXTENSIONS).
        raise SandboxViolation("statement_type", str(exc), 0) from None
    found = []
    offset = 0
    for statement in statements:
        start = sql.find(statement.query, offset)
        offset = start if start >= 0 else offset
        found.append((statement, offset))
        offset += len(statement.query)
    return found


def check_sql(
    sql: str,
    local_roots: Sequence[Path] = (),
    remote_roots: Sequence[str] = (),
    enforce: bool = True,
) -> list[CheckedStatement]:
    """Split SQL into statements and refuse any the sandbox does not allow.

    ``local_roots`` are the lake's folders, ``remote_roots`` its ``s3://`` prefixes;
    ``enforce=False`` only splits. Raises :class:`SandboxViolation`; a statement DuckDB
    cannot parse raises DuckDB's ``ParserException`` (its message names the position).
    """
    roots = [Path(os.path.realpath(r)) for r in local_roots]
    checked: list[CheckedStatement] = []
    created: set[str] = set()
    for statement, offset in split_sql(sql):
        if enforce:
            _check_statement(statement, offset, created, roots, remote_roots)
        checked.append(
            CheckedStatement(
                statement.query, offset, statement.type, frozenset(statement.named_parameters)
            )
        )
    return checked


def violation_from_error(
    exc: duckdb.Error, limits: SandboxLimits, timed_out: bool
) -> SandboxViolation | None:
    """The sandbox reason behind a DuckDB error (a limit, DuckDB's file guard), if any."""
    if timed_out or isinstance(exc, duckdb.InterruptException):
        return SandboxViolation("time_limit", f"stopped after {limits.timeout_seconds:g} s")
    if isinstance(exc, duckdb.OutOfMemoryException):
        first = str(exc).splitlines()[0]
        return SandboxViolation(
            "memory_limit", f"limit {limits.memory_limit_bytes} bytes; DuckDB: {first}"
        )
    if isinstance(exc, duckdb.PermissionException):
        first = str(exc).splitlines()[0]
        return SandboxViolation("reads_outside_lake", f"DuckDB's file guard: {first}")
    return None


class Deadline:
    """Interrupts a connection when a statement runs past the time limit.

    ``with Deadline(conn, seconds): conn.execute(...)``; :attr:`fired` says whether it
    interrupted. The timer and the end of the block share a lock, so an interrupt can
    never land on the next query.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self.conn = conn
        self.seconds = seconds
        self.fired = False
        self._lock = threading.Lock()
        self._running = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        with self._lock:
            if self._running:
                self.fired = True
                self.conn.interrupt()

    def __enter__(self) -> Deadline:
        self._running = True
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._running = False
        self._timer.cancel()

"""A real single-node Apache Kafka broker (KRaft mode) on 127.0.0.1.

The broker's jars are fetched from Maven Central with the machine's ``mvn``
(see ``firelake/kafka/pom.xml``) into a cache directory, and the broker runs
on the machine's Java 17 as a detached process.  Everything the broker writes
(its ``server.properties``, its KRaft log directory, its pid file and its
stdout/stderr log) lives under one data directory::

    broker = LocalBroker(Path("/tmp/fl-kafka"), port=free_port(), controller_port=0)
    broker.start()
    print(broker.bootstrap)        # "127.0.0.1:<port>"
    ...
    broker.stop()

:class:`LocalCluster` runs several such nodes from the same jars as one KRaft cluster
(``firelake kafka start --brokers 3``), to try replication and failover on one machine.

The cache directory is ``~/.cache/firelake/kafka-<version>/libs``; the
environment variable ``FIRELAKE_CACHE`` replaces ``~/.cache/firelake``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "DEFAULT_PORT",
    "HOST",
    "KAFKA_VERSION",
    "BrokerError",
    "LocalBroker",
    "LocalCluster",
    "cluster_properties",
    "default_cache_dir",
    "fetch_kafka",
    "free_port",
    "generate_cluster_id",
    "local_kafka",
    "port_in_use",
    "probe_broker",
    "render_server_properties",
    "tail_file",
]

KAFKA_VERSION = "4.1.1"
"""The Apache Kafka version the pom pins (``org.apache.kafka:kafka_2.13``)."""

HOST = "127.0.0.1"
"""The only interface the local broker listens on."""

DEFAULT_PORT = 9092
"""Default PLAINTEXT (client) port."""

JVM_HEAP_OPTS: tuple[str, ...] = ("-Xmx768m", "-Xms256m")
"""Heap settings of the broker JVM."""

JVM_GC_OPTS: tuple[str, ...] = ("-XX:+UseParallelGC", "-XX:ParallelGCThreads=2")
"""Garbage collector of the broker JVM."""

MVN_TIMEOUT_S = 900.0
"""Upper bound for one ``mvn dependency:copy-dependencies`` run."""

_KAFKA_RESOURCES = Path(__file__).resolve().parent / "kafka"
_POM = _KAFKA_RESOURCES / "pom.xml"
_LOG4J2_CONFIG = _KAFKA_RESOURCES / "log4j2.properties"
_MARKER = ".firelake-complete"
_TAIL_LINES = 40


class BrokerError(RuntimeError):
    """Fetching, formatting, starting or stopping the local broker failed."""


# --------------------------------------------------------------------------- helpers


def default_cache_dir() -> Path:
    """Return the directory the broker jars are cached in.

    ``$FIRELAKE_CACHE/kafka-<version>/libs`` if ``FIRELAKE_CACHE`` is set, else
    ``~/.cache/firelake/kafka-<version>/libs``.
    """
    root_env = os.environ.get("FIRELAKE_CACHE")
    root = Path(root_env).expanduser() if root_env else Path.home() / ".cache" / "firelake"
    return root / f"kafka-{KAFKA_VERSION}" / "libs"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = HOST) -> bool:
    """Return True if ``host:port`` cannot be bound because something holds it.

    ``SO_REUSEADDR`` is set (as the JVM does for server sockets), so sockets
    lingering in TIME_WAIT after a previous broker do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def tail_file(path: Path, n: int = _TAIL_LINES) -> str:
    """Return the last ``n`` lines of the text file ``path`` ("" if it does not exist)."""
    if n <= 0:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            block = 64 * 1024
            pos = end
            data = b""
            # Read backwards until we have more than n line breaks (or the whole file).
            while pos > 0 and data.count(b"\n") <= n:
                step = min(block, pos)
                pos -= step
                fh.seek(pos)
                data = fh.read(step) + data
    except FileNotFoundError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-n:])


def generate_cluster_id() -> str:
    """Return a new random Kafka cluster id (like ``kafka-storage.sh random-uuid``).

    A Kafka ``Uuid`` string is the URL-safe base64 of 16 random bytes without
    padding; Kafka never hands out ids that start with ``-`` (they look like
    command-line options), nor the all-zero id.
    """
    while True:
        raw = os.urandom(16)
        text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        if not text.startswith("-") and raw != bytes(16) and raw != bytes(15) + b"\x01":
            return text


def render_server_properties(
    *,
    port: int,
    controller_port: int,
    log_dir: Path,
    node_id: int = 1,
    host: str = HOST,
    extra: Mapping[str, str] | None = None,
) -> str:
    """Render the ``server.properties`` of a combined broker+controller KRaft node.

    ``extra`` entries are appended and override the defaults of the same name.
    """
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": f"{node_id}@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # One box, a few cores shared with the services: a thread per core rather than
        # Kafka's defaults for a dedicated server (3 network, 8 I/O threads), which only
        # add context switches here (bench/pipeline.py measures the broker's CPU per event).
        "num.network.threads": "2",
        "num.io.threads": "2",
    }
    if extra:
        props.update({str(k): str(v) for k, v in extra.items()})
    lines = ["# Generated by firelake.broker -- rewritten on every start."]
    lines += [f"{key}={_escape_property(value)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def _escape_property(value: str) -> str:
    """Escape a value for a Java ``.properties`` file (backslashes, line breaks)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def _which(tool: str) -> str:
    """Return the path of ``tool`` (``java`` honours ``JAVA_HOME``) or raise BrokerError."""
    if tool == "java":
        java_home = os.environ.get("JAVA_HOME")
        if java_home:
            candidate = Path(java_home) / "bin" / "java"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    found = shutil.which(tool)
    if found is None:
        hint = "Java 17" if tool == "java" else "Apache Maven"
        raise BrokerError(
            f"'{tool}' was not found on PATH: the local Kafka broker needs {hint} "
            f"installed (install it, or fix PATH{' / JAVA_HOME' if tool == 'java' else ''})."
        )
    return found


def _output_tail(text: str, n: int = _TAIL_LINES) -> str:
    """Return the last ``n`` lines of ``text`` (ANSI colour codes removed)."""
    cleaned = text.replace("\x1b[0m", "").replace("\x1b[1m", "")
    return "\n".join(cleaned.strip().splitlines()[-n:])


def _is_complete(libs: Path) -> bool:
    """True if ``libs`` holds a finished jar download (marker plus jars)."""
    return (libs / _MARKER).is_file() and any(libs.glob("*.jar"))


# --------------------------------------------------------------------------- fetch


def fetch_kafka(cache_dir: Path | None = None) -> Path:
    """Make sure the broker's runtime jars are cached and return their directory.

    If ``cache_dir`` (default :func:`default_cache_dir`) already holds a
    complete download it is returned at once.  Otherwise ``mvn`` copies the
    runtime dependencies of ``firelake/kafka/pom.xml`` into a temporary
    directory next to ``cache_dir``, a marker file is written, and the
    directory is renamed into place in one step, so an interrupted fetch never
    leaves a half-filled cache.  Raises :class:`BrokerError` (with the tail
    of Maven's output) if ``mvn``/``java`` is missing or Maven fails.
    """
    libs = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if _is_complete(libs):
        return libs
    _which("java")  # the jars are useless without it: fail early and clearly
    mvn = _which("mvn")
    if not _POM.is_file():
        raise BrokerError(f"package data missing: {_POM}")
    parent = libs.parent
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{libs.name}-fetch-", dir=parent))
    try:
        shutil.copyfile(_POM, work / "pom.xml")
        out_dir = work / "libs"
        cmd = [
            mvn,
            "-q",
            "-B",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={out_dir}",
            "-DincludeScope=runtime",
        ]
        try:
            proc = subprocess.run(
                cmd,
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=MVN_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.output if isinstance(exc.output, str) else ""
            raise BrokerError(
                f"mvn did not finish fetching Kafka {KAFKA_VERSION} within {MVN_TIMEOUT_S:.0f}s"
                f":\n{_output_tail(out)}"
            ) from exc
        except OSError as exc:
            raise BrokerError(f"could not run mvn ({mvn}): {exc}") from exc
        jars = sorted(out_dir.glob("*.jar")) if out_dir.is_dir() else []
        if proc.returncode != 0 or not jars:
            raise BrokerError(
                f"mvn failed to fetch Kafka {KAFKA_VERSION} jars (exit code {proc.returncode}, "
                f"{len(jars)} jars); command: {' '.join(cmd)}\n{_output_tail(proc.stdout)}"
            )
        (out_dir / _MARKER).write_text(
            f"kafka {KAFKA_VERSION}\njars {len(jars)}\n"
            f"fetched {_dt.datetime.now(_dt.UTC).isoformat()}\n",
            encoding="utf-8",
        )
        if libs.exists() and not _is_complete(libs):
            # Leftover from an older layout or a manual copy: replace it.
            shutil.rmtree(libs, ignore_errors=True)
        try:
            os.rename(out_dir, libs)
        except OSError:
            # Someone else finished the same fetch first: theirs is as good as ours.
            if not _is_complete(libs):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return libs


# --------------------------------------------------------------------------- wire probe


def _kafka_string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack(">h", len(raw)) + raw


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError("connection closed by broker")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def probe_broker(host: str, port: int, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """Send one Kafka Metadata (v4) request and return the live brokers it lists.

    Returns ``[(node_id, host, port), ...]``; fenced brokers are not listed, so
    a non-empty answer means the cluster can host partitions.  Raises
    ``OSError`` (or ``ConnectionError``/``struct.error``) when the broker does
    not answer properly.
    """
    correlation_id = 0x46_4C_4B  # "FLK"
    header = struct.pack(">hhi", 3, 4, correlation_id) + _kafka_string("firelake-probe")
    # Metadata v4 body: topics = [] (none), allow_auto_topic_creation = false.
    body = struct.pack(">i", 0) + struct.pack(">b", 0)
    payload = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        if size < 12 or size > 64 * 1024 * 1024:
            raise ConnectionError(f"implausible Metadata response size {size}")
        data = _recv_exact(sock, size)
    got_id, _throttle, count = struct.unpack_from(">iii", data, 0)
    if got_id != correlation_id:
        raise ConnectionError(f"unexpected correlation id {got_id}")
    offset = 12
    brokers: list[tuple[int, str, int]] = []
    for _ in range(max(count, 0)):
        node_id, host_len = struct.unpack_from(">ih", data, offset)
        offset += 6
        node_host = data[offset : offset + host_len].decode("utf-8", errors="replace")
        offset += host_len
        node_port, rack_len = struct.unpack_from(">ih", data, offset)
        offset += 6 + max(rack_len, 0)
        brokers.append((node_id, node_host, node_port))
    return brokers


# --------------------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True  # no /proc (or it just vanished): trust kill(0)
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state != ["Z"] and state != ["X"]


def _pid_cmdline(pid: int) -> list[str] | None:
    """Return the command line of ``pid``, or None if it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", errors="replace") for part in raw.split(b"\0") if part]


class _Runs:
    """``with X(...) as x:`` starts ``x`` and stops it however the block ends."""

    def start(self, timeout: float = 60.0) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 20.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        """Start (``with LocalBroker(...) as broker:``)."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()


@dataclass
class LocalBroker(_Runs):
    """One single-node Kafka broker (combined broker+controller) on 127.0.0.1.

    ``port`` is the client (PLAINTEXT) port; ``controller_port`` defaults to
    ``port + 1``.  Passing ``0`` for either picks a free port when the object
    is created.  All state lives in ``data_dir``: ``server.properties``, the
    KRaft log directory ``kraft-logs/``, ``broker.pid`` and ``broker.log``
    (the broker's stdout and stderr).  The broker runs detached (its own
    session), so it outlives the Python process that started it until
    :meth:`stop` is called, from this or any other process.
    """

    data_dir: Path
    port: int = DEFAULT_PORT
    controller_port: int | None = None
    cache_dir: Path | None = None
    node_id: int = 1
    extra_properties: dict[str, str] = field(default_factory=dict)
    cluster_id: str | None = None
    """The id the storage is formatted with; None: a fresh random one (a lone broker).
    The nodes of one cluster share theirs."""
    _proc: subprocess.Popen[bytes] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        """Normalise paths and resolve the ports (0 = pick a free one)."""
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if self.cache_dir is not None:
            self.cache_dir = Path(self.cache_dir).expanduser()
        if self.port == 0:
            self.port = free_port()
        if self.controller_port is None:
            self.controller_port = self.port + 1
        elif self.controller_port == 0:
            self.controller_port = free_port()
            while self.controller_port == self.port:
                self.controller_port = free_port()
        for name, value in (("port", self.port), ("controller_port", self.controller_port)):
            if not 0 < value < 65536:
                raise ValueError(f"{name} must be in 1..65535, got {value}")
        if self.port == self.controller_port:
            raise ValueError(f"port and controller_port must differ (both {self.port})")

    # ------------------------------------------------------------------ paths

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use: ``"127.0.0.1:<port>"``."""
        return f"{HOST}:{self.port}"

    @property
    def pid_file(self) -> Path:
        """``data_dir/broker.pid``: pid of the running broker JVM."""
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        """``data_dir/broker.log``: the broker's stdout and stderr."""
        return self.data_dir / "broker.log"

    @property
    def properties_file(self) -> Path:
        """``data_dir/server.properties``."""
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        """The broker's ``log.dirs`` (topic data and KRaft metadata)."""
        return self.data_dir / "kraft-logs"

    def is_formatted(self) -> bool:
        """True once the storage was formatted (``meta.properties`` exists)."""
        return (self.log_dir / "meta.properties").is_file()

    def render_properties(self) -> str:
        """The ``server.properties`` text this broker runs with."""
        assert self.controller_port is not None
        return render_server_properties(
            port=self.port,
            controller_port=self.controller_port,
            log_dir=self.log_dir,
            node_id=self.node_id,
            extra=self.extra_properties,
        )

    # ------------------------------------------------------------------ state

    def pid(self) -> int | None:
        """The pid recorded in the pid file, or None."""
        try:
            text = self.pid_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def _is_our_process(self, pid: int) -> bool:
        """True if ``pid`` is alive and is this broker's JVM (guards against pid reuse)."""
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        if not _pid_alive(pid):
            return False
        cmdline = _pid_cmdline(pid)
        if cmdline is None:
            return True  # cannot tell (no /proc): trust the pid file
        return "kafka.Kafka" in cmdline and str(self.properties_file) in cmdline

    def is_running(self) -> bool:
        """True if the broker process of this data directory is alive."""
        pid = self.pid()
        return pid is not None and self._is_our_process(pid)

    def status(self) -> dict[str, Any]:
        """Return ``running``, ``pid``, ``bootstrap``, ``data_dir`` and the other paths/ports."""
        running = self.is_running()
        return {
            "running": running,
            "pid": self.pid() if running else None,
            "bootstrap": self.bootstrap,
            "port": self.port,
            "controller_port": self.controller_port,
            "data_dir": str(self.data_dir),
            "log_file": str(self.log_file),
            "kafka_version": KAFKA_VERSION,
        }

    def log_tail(self, n: int = _TAIL_LINES) -> str:
        """The last ``n`` lines of ``broker.log`` ("" if there is none yet)."""
        return tail_file(self.log_file, n)

    def ready(self, timeout: float = 2.0) -> bool:
        """True if the broker answers a Metadata request listing itself."""
        try:
            brokers = probe_broker(HOST, self.port, timeout=timeout)
        except (OSError, ValueError, struct.error):
            return False
        return any(node_id == self.node_id for node_id, _, _ in brokers)

    # ------------------------------------------------------------------ lifecycle

    def _java_base(self, libs: Path) -> list[str]:
        return [
            _which("java"),
            *JVM_HEAP_OPTS,
            # The throughput collector: a small heap on a shared box, where G1's concurrent
            # threads and write barriers cost CPU the services need.
            *JVM_GC_OPTS,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={_LOG4J2_CONFIG}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp",
            f"{libs}{os.sep}*",
        ]

    def _check_ports_free(self) -> None:
        for port in (self.port, self.controller_port):
            assert port is not None
            if port_in_use(port):
                raise BrokerError(
                    f"port {port} on {HOST} is in use (by another process); "
                    f"cannot start the Kafka broker of {self.data_dir} -- "
                    "stop whatever holds it or choose other ports"
                )

    def _format_storage(self, libs: Path) -> None:
        """Run ``kafka.tools.StorageTool format`` with :attr:`cluster_id` (or a fresh one)."""
        cmd = [
            *self._java_base(libs),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self.cluster_id or generate_cluster_id(),
            "-c",
            str(self.properties_file),
        ]
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BrokerError(f"formatting Kafka storage in {self.log_dir} failed: {exc}") from exc
        with open(self.log_file, "a", encoding="utf-8") as log:
            log.write(f"[firelake] kafka.tools.StorageTool format:\n{proc.stdout}\n")
        if proc.returncode != 0 or not self.is_formatted():
            raise BrokerError(
                f"formatting Kafka storage in {self.log_dir} failed "
                f"(exit code {proc.returncode}):\n{_output_tail(proc.stdout)}"
            )

    def start(self, timeout: float = 60.0) -> None:
        """Fetch the jars, format storage if needed, spawn the broker and wait until ready.

        Returns once the broker answers a Metadata request that lists itself.
        If the broker is already running (pid file + live process) this only
        waits for it to be ready.  On failure -- a port in use, the process
        exiting, or ``timeout`` seconds passing -- the half-started broker is
        stopped and :class:`BrokerError` is raised with the last 40 lines of
        ``broker.log``.
        """
        self.spawn()
        try:
            self.wait_ready(timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop(timeout=10.0)
            raise

    def spawn(self) -> None:
        """Fetch the jars, format storage if needed and spawn the broker; do not wait.

        A no-op if the broker is already running. The nodes of a cluster are spawned
        together (their controller quorum needs a majority before any answers), then
        waited for with :meth:`wait_ready`.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.is_running():
            return
        self.pid_file.unlink(missing_ok=True)  # stale
        self._check_ports_free()
        libs = fetch_kafka(self.cache_dir)
        self.properties_file.write_text(self.render_properties(), encoding="utf-8")
        with open(self.log_file, "a", encoding="utf-8") as log:
            log.write(
                f"\n[firelake] ===== starting Kafka {KAFKA_VERSION} on {self.bootstrap} "
                f"(controller {HOST}:{self.controller_port}) at "
                f"{_dt.datetime.now(_dt.UTC).isoformat()} =====\n"
            )
        if not self.is_formatted():
            self._format_storage(libs)
        cmd = [*self._java_base(libs), "kafka.Kafka", str(self.properties_file)]
        with open(self.log_file, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    cwd=self.data_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise BrokerError(f"could not spawn the Kafka broker: {exc}") from exc
        tmp_pid = self.pid_file.with_suffix(".pid.tmp")
        tmp_pid.write_text(f"{self._proc.pid}\n", encoding="ascii")
        os.replace(tmp_pid, self.pid_file)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the broker answers a Metadata request listing itself.

        Raises :class:`BrokerError` with the tail of ``broker.log`` when the process exits
        or ``timeout`` seconds pass (the process is left running: the caller stops it).
        """
        deadline = time.monotonic() + timeout
        while True:
            pid = self.pid()
            if pid is None or not self._is_our_process(pid):
                code = self._proc.poll() if self._proc is not None else None
                raise BrokerError(
                    f"the Kafka broker on {self.bootstrap} exited during startup"
                    f"{f' (exit code {code})' if code is not None else ''}; "
                    f"last lines of {self.log_file}:\n{self.log_tail(_TAIL_LINES)}"
                )
            if self.ready(timeout=2.0):
                return
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"the Kafka broker on {self.bootstrap} did not become ready within "
                    f"{timeout:.0f}s; last lines of {self.log_file}:\n"
                    f"{self.log_tail(_TAIL_LINES)}"
                )
            time.sleep(0.25)

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout=max(timeout, 0.0))
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the broker: SIGTERM, wait up to ``timeout`` s, then SIGKILL.

        A no-op if it is not running.  The pid file is removed in every case.
        Raises :class:`BrokerError` if the process survives SIGKILL.
        """
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the broker at once: a crash (no controlled shutdown), for failover tests.

        A no-op if it is not running; :meth:`start` brings it back on its data.
        """
        self._end(signal.SIGKILL, 10.0)

    def _end(self, first: signal.Signals, timeout: float) -> None:
        """Send ``first``, wait up to ``timeout`` s, then SIGKILL; remove the pid file."""
        pid = self.pid()
        try:
            if pid is None or not self._is_our_process(pid):
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, first)
            if self._wait_gone(pid, timeout):
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 10.0):
                raise BrokerError(f"the Kafka broker (pid {pid}) did not exit after SIGKILL")
        finally:
            if pid is None or not self._is_our_process(pid):
                self.pid_file.unlink(missing_ok=True)
            if self._proc is not None and self._proc.poll() is not None:
                self._proc = None


# --------------------------------------------------------------------------- cluster

CLUSTER_LAYOUT = "cluster.json"
"""The file in a cluster's data directory that records its size, ports and cluster id."""

REPLICATED_BROKERS = 3
"""From this many brokers on, the cluster's internal topics get three replicas."""


def cluster_properties(voters: Mapping[int, int], host: str = HOST) -> dict[str, str]:
    """The ``server.properties`` a node of a local cluster adds to a lone broker's.

    ``voters`` maps each node id to its controller port: every node is a combined
    broker+controller and a voter of one static quorum (three JVMs on a small box rather
    than four with a dedicated controller; a majority survives the loss of any one node).
    The internal topics (consumer offsets, transactions) are replicated like the streams:
    three replicas, two in sync, from three nodes on. A SIGKILLed node is fenced, and its
    partitions led elsewhere, after ``broker.session.timeout.ms`` (6 s instead of 9 s, so
    a failover test waits less; heartbeats every second keep a busy node well inside it).
    """
    count = len(voters)
    replicas = REPLICATED_BROKERS if count >= REPLICATED_BROKERS else 1
    in_sync = 2 if replicas >= REPLICATED_BROKERS else 1
    return {
        "controller.quorum.voters": ",".join(
            f"{node_id}@{host}:{port}" for node_id, port in sorted(voters.items())
        ),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(in_sync),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(in_sync),
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(in_sync),
        "broker.session.timeout.ms": "6000",
        "broker.heartbeat.interval.ms": "1000",
    }


@dataclass
class LocalCluster(_Runs):
    """A local KRaft cluster of ``brokers`` nodes on 127.0.0.1, each a :class:`LocalBroker`.

    Node ``i`` (1-based) lives in ``data_dir/node-<i>`` with client port
    ``port + 2 * (i - 1)`` and controller port one above it (9092/9093, 9094/9095,
    9096/9097 by default); ``port=0`` picks free ports. The first :meth:`start` writes
    ``data_dir/cluster.json`` (size, ports, cluster id); afterwards that file is the
    cluster's identity -- its storage is formatted with that id and its quorum names those
    ports -- so a later ``LocalCluster`` on the same folder (another process, the CLI)
    uses it, whatever ``port`` it was given::

        cluster = LocalCluster(Path("/tmp/fl-cluster"), brokers=3, port=0)
        cluster.start()
        print(cluster.bootstrap)   # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
        cluster.node(2).kill()     # a crash; cluster.node(2).start() brings it back
        cluster.stop()
    """

    data_dir: Path
    brokers: int = REPLICATED_BROKERS
    port: int = DEFAULT_PORT
    cache_dir: Path | None = None
    extra_properties: dict[str, str] = field(default_factory=dict)
    cluster_id: str = field(default="", init=False)
    nodes: list[LocalBroker] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        """Read the recorded layout, or choose one; build the nodes."""
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        layout = self._read_layout()
        if layout is not None:
            if int(layout["brokers"]) != self.brokers:
                raise BrokerError(
                    f"{self.data_dir} holds a {layout['brokers']}-broker cluster, not "
                    f"{self.brokers}: stop it and remove the folder to change its size"
                )
            self.cluster_id = str(layout["cluster_id"])
            ports = [(int(a), int(b)) for a, b in layout["ports"]]
        else:
            if self.brokers < 1:
                raise ValueError(f"a cluster has at least one broker, got {self.brokers}")
            self.cluster_id = generate_cluster_id()
            ports = self._choose_ports()
        self.port = ports[0][0]
        voters = {i: controller for i, (_, controller) in enumerate(ports, start=1)}
        extra = {**cluster_properties(voters), **self.extra_properties}
        self.nodes = [
            LocalBroker(
                self.data_dir / f"node-{i}",
                port=client,
                controller_port=controller,
                cache_dir=self.cache_dir,
                node_id=i,
                extra_properties=extra,
                cluster_id=self.cluster_id,
            )
            for i, (client, controller) in enumerate(ports, start=1)
        ]

    @classmethod
    def find(cls, data_dir: Path, cache_dir: Path | None = None) -> LocalCluster | None:
        """The cluster recorded in ``data_dir`` (its ``cluster.json``), or None."""
        path = Path(data_dir).expanduser().resolve() / CLUSTER_LAYOUT
        try:
            brokers = int(json.loads(path.read_text(encoding="utf-8"))["brokers"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(data_dir, brokers=brokers, cache_dir=cache_dir)

    def _read_layout(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.layout_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BrokerError(f"cannot read the cluster layout {self.layout_file}: {exc}") from exc
        if not isinstance(data, dict) or not {"brokers", "cluster_id", "ports"} <= data.keys():
            raise BrokerError(f"{self.layout_file} is not a Firelake cluster layout")
        return data

    def _choose_ports(self) -> list[tuple[int, int]]:
        if self.port:
            ports = [(self.port + 2 * i, self.port + 2 * i + 1) for i in range(self.brokers)]
            if ports[-1][1] > 65535:
                raise ValueError(f"ports from {self.port} run past 65535 for {self.brokers} nodes")
            return ports
        taken: set[int] = set()
        while len(taken) < 2 * self.brokers:
            taken.add(free_port())
        flat = sorted(taken)
        return [(flat[2 * i], flat[2 * i + 1]) for i in range(self.brokers)]

    @property
    def layout_file(self) -> Path:
        """``data_dir/cluster.json``."""
        return self.data_dir / CLUSTER_LAYOUT

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated (any one of them suffices)."""
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalBroker:
        """The node with id ``node_id`` (1-based)."""
        if not 1 <= node_id <= len(self.nodes):
            raise ValueError(f"no node {node_id} in a {len(self.nodes)}-node cluster")
        return self.nodes[node_id - 1]

    def is_running(self) -> bool:
        """True if every node's process is alive."""
        return all(node.is_running() for node in self.nodes)

    def status(self) -> dict[str, Any]:
        """``running`` (all nodes), ``bootstrap``, ``data_dir`` and a line per node."""
        status: dict[str, Any] = {
            "running": self.is_running(),
            "brokers": len(self.nodes),
            "bootstrap": self.bootstrap,
            "data_dir": str(self.data_dir),
            "kafka_version": KAFKA_VERSION,
        }
        for node in self.nodes:
            pid = node.pid() if node.is_running() else None
            state = f"running (pid {pid})" if pid else "stopped"
            status[f"node-{node.node_id}"] = f"{state} on {node.bootstrap}, log {node.log_file}"
        return status

    def start(self, timeout: float = 120.0) -> None:
        """Spawn every node that is not running and wait until all answer.

        The nodes are formatted and spawned in parallel (the quorum elects a leader only
        once a majority runs). On failure the nodes this call spawned are stopped and
        :class:`BrokerError` names the node, with its log's tail.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.layout_file.exists():
            layout = {
                "brokers": len(self.nodes),
                "cluster_id": self.cluster_id,
                "ports": [[node.port, node.controller_port] for node in self.nodes],
            }
            tmp = self.layout_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(layout, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, self.layout_file)
        spawned = [node for node in self.nodes if not node.is_running()]
        try:
            with ThreadPoolExecutor(max_workers=max(len(spawned), 1)) as pool:
                for future in [pool.submit(node.spawn) for node in spawned]:
                    future.result()
            deadline = time.monotonic() + timeout
            for node in self.nodes:
                node.wait_ready(max(deadline - time.monotonic(), 0.5))
        except BaseException:
            for node in spawned:
                with contextlib.suppress(Exception):
                    node.stop(timeout=10.0)
            raise

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout`` s), all at once."""
        for node in self.nodes:
            pid = node.pid()
            if pid is not None and node.is_running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        errors = []
        for node in self.nodes:
            try:
                node.stop(timeout)
            except BrokerError as exc:
                errors.append(str(exc))
        if errors:
            raise BrokerError("; ".join(errors))

    def pid(self) -> int | None:
        """The first node's pid (what a supervisor records; it watches :meth:`is_running`)."""
        return self.nodes[0].pid()


def local_kafka(
    data_dir: Path, port: int = DEFAULT_PORT, brokers: int | None = None
) -> LocalBroker | LocalCluster:
    """The local Kafka of a data folder: the cluster it records, else a new one, else a broker.

    A folder with a ``cluster.json`` is that cluster (``brokers``, when given, must match
    its size); otherwise ``brokers`` above 1 makes a new :class:`LocalCluster` (refused
    while a lone broker of the same folder runs: they would share ports), and anything
    else the lone :class:`LocalBroker`. So ``firelake kafka stop``, ``status`` and the
    services find a cluster that ``firelake kafka start --brokers 3`` started.
    """
    cluster = LocalCluster.find(data_dir)
    if cluster is not None:
        if brokers is not None and brokers != len(cluster.nodes):
            raise BrokerError(
                f"{cluster.data_dir} holds a {len(cluster.nodes)}-broker cluster, not {brokers}: "
                "stop it and remove the folder to change its size"
            )
        return cluster
    single = LocalBroker(data_dir, port=port)
    if brokers is None or brokers <= 1:
        return single
    if single.is_running():
        raise BrokerError(
            f"a single local broker runs on {single.bootstrap} from {single.data_dir}: "
            "stop it (firelake kafka stop) before starting a cluster there"
        )
    return LocalCluster(data_dir, brokers=brokers, port=port)

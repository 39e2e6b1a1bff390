"""The local process supervisor behind ``firelake up``.

It starts the broker (unless a bootstrap address is configured), creates the streams, then
runs each service as a child process: the ingest service, one router per configured router,
the workers of each window and one process for all sinks. Ctrl-C or SIGTERM stops the
children (SIGTERM, then SIGKILL after a grace period) and, last, the broker Firelake started.

Every service is supervised, the broker ``up`` started included (:class:`BrokerProcess`): a
child that dies is restarted with exponential backoff, at most ``max_restarts`` times within
any ``restart_window_seconds`` (a budget per time window, so a blip a day is always
survived, a crash loop is not). A service given up on is logged at ERROR in capitals, and
the supervisor turns unhealthy: its ``/health`` endpoint answers 503 naming the service,
the state file ``firelake status`` reads says so, and ``firelake up --exit-on-failure``
exits non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from firelake.config import FirelakeConfig

__all__ = [
    "BrokerProcess",
    "ChildProcess",
    "HealthServer",
    "ServiceSpec",
    "Supervisor",
    "metrics_address",
    "pipeline_services",
    "read_state",
    "render_state",
]

log = logging.getLogger("firelake.supervisor")


class Process(Protocol):
    """What the supervisor needs of a child: ``subprocess.Popen``'s pid, poll and signals."""

    pid: int

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


class BrokerProcess:
    """The local broker as a supervised child (it runs detached: this watches its pid file).

    ``broker`` is a :class:`firelake.broker.LocalBroker`; :meth:`start` blocks until the
    broker answers (its own bounded wait).
    """

    def __init__(self, broker: Any, start_timeout_s: float = 180.0) -> None:
        self.broker = broker
        self.start_timeout_s = start_timeout_s
        self.pid = 0

    def start(self) -> BrokerProcess:
        self.broker.start(timeout=self.start_timeout_s)
        self.pid = self.broker.pid() or 0
        return self

    def poll(self) -> int | None:
        return None if self.broker.is_running() else 1

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(["kafka"], timeout or 0)
            time.sleep(0.1)
        return 1

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass(frozen=True)
class ServiceSpec:
    """One service to run as a child process.

    ``spawn`` replaces ``argv`` for a child that is not a plain subprocess (the broker);
    ``stop_last`` children stop after all others (the broker they all need); ``metrics``
    says where the child serves Prometheus ``/metrics`` ('' for none), for ``status``.
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    spawn: Callable[[], Process] | None = None
    stop_last: bool = False
    metrics: str = ""


@dataclass
class ChildProcess:
    """A running (or dead) child and its restart history."""

    spec: ServiceSpec
    process: Process | None = None
    restarts: int = 0
    next_start: float = 0.0
    #: Clock times of the restarts inside the current window.
    recent: deque[float] = field(default_factory=deque)
    last_exit: int | None = None
    started_at: float = 0.0

    @property
    def state(self) -> str:
        if self.process is not None:
            return "running"
        return "restarting" if self.next_start else "stopped"


def metrics_address(ports: range) -> str:
    """Where a service's ``/metrics`` is: one port, or the range its workers bind in."""
    where = str(ports.start) if len(ports) == 1 else f"{ports.start}-{ports.stop - 1}"
    return f"127.0.0.1:{where}/metrics"


def pipeline_services(
    config: FirelakeConfig, config_path: str | None, bootstrap: str, serving: bool = True
) -> list[ServiceSpec]:
    """The child processes that make up the pipeline of a configuration (without
    ``serving``: no ingest API and no query service — replay tests feed the streams and
    read the lake themselves, and start faster).

    Every service but the apps serves Prometheus ``/metrics`` on a port the configuration
    fixes (``config.MetricsConfig``): the ingest and the query service on their own ports,
    the sinks on ``metrics.base_port``, the routers and (transactional) windows on their
    (given or assigned) ``metrics_port``.
    """
    env = {
        "FIRELAKE_KAFKA_BOOTSTRAP": bootstrap,
        "FIRELAKE_LAKE": config.lake_url,
    }
    cli = (sys.executable, "-m", "firelake.cli")
    config_args = ("--config", config_path) if config_path else ()
    # Ingest workers listen on the one port with SO_REUSEPORT; the kernel spreads
    # connections over them.
    workers = config.ingest.workers if serving else 0
    ingest_metrics = metrics_address(range(config.ingest.port, config.ingest.port + 1))
    services = [
        ServiceSpec(
            "ingest" if workers == 1 else f"ingest:{worker}",
            (*cli, "ingest", *config_args),
            env,
            metrics=ingest_metrics,
        )
        for worker in range(workers)
    ]
    for name, router in config.routers.items():
        # Workers of one router join one consumer group and share its partitions.
        for worker in range(router.workers):
            label = f"router:{name}" if router.workers == 1 else f"router:{name}:{worker}"
            argv = (*cli, "router", "--name", name, *config_args)
            where = metrics_address(router.metrics_ports) if router.metrics_port else ""
            services.append(ServiceSpec(label, argv, env, metrics=where))
    for name, window in config.windows.items():
        # One worker holds the window, the others stand by; a stable instance id per worker
        # lets a restarted one take its place at once (static group membership).
        for worker in range(window.workers):
            label = f"window:{name}" if window.workers == 1 else f"window:{name}:{worker}"
            window_env = {
                **env,
                "FIRELAKE_WINDOW_INSTANCE_ID": f"firelake-window-{name}-{worker}-"
                f"{socket.gethostname()}",
            }
            argv = (*cli, "window", "--name", name, *config_args)
            where = (
                metrics_address(window.metrics_ports)
                if window.metrics_port and window.engine == "transactional"
                else ""
            )
            services.append(ServiceSpec(label, argv, window_env, metrics=where))
    # Always: Firehose delivery streams created through the API get their sinks here too.
    # One sinks process: static group membership lets a restarted one take its partitions
    # back at once instead of after a session timeout.
    sink_env = {**env, "FIRELAKE_SINK_INSTANCE_ID": f"firelake-sinks-{socket.gethostname()}"}
    port = config.metrics.base_port
    sink_argv = (*cli, "sink", "--all", "--metrics-port", str(port), *config_args)
    sink_metrics = metrics_address(range(port, port + 1)) if port else ""
    services.append(ServiceSpec("sinks", sink_argv, sink_env, metrics=sink_metrics))
    # SQL over the lake (HTTP query API); it reads the lake only, never Kafka.
    if serving:
        port = config.query.port  # 0: any free port, told in its log only
        where = metrics_address(range(port, port + 1)) if port else ""
        argv = (*cli, "serve-queries", *config_args)
        services.append(ServiceSpec("queries", argv, env, metrics=where))
    # A seed system's own services ([apps.N]), e.g. Code Developer University's API.
    for name in config.apps:
        argv = (*cli, "app", "--name", name, *config_args)
        services.append(ServiceSpec(f"app:{name}", argv, env))
    return services


class Supervisor:
    """Runs child processes, restarts the ones that die, stops them all on request."""

    def __init__(
        self,
        services: Sequence[ServiceSpec],
        max_restarts: int = 5,
        backoff_seconds: float = 1.0,
        stop_grace_seconds: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        restart_window_seconds: float = 300.0,
        max_backoff_seconds: float = 30.0,
        state_file: Path | None = None,
    ) -> None:
        self.children = [ChildProcess(spec) for spec in services]
        self.max_restarts = max_restarts
        self.backoff_seconds = backoff_seconds
        self.stop_grace_seconds = stop_grace_seconds
        self.clock = clock
        self.restart_window_seconds = restart_window_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.state_file = state_file
        self.failed: list[str] = []
        self.extra: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _spawn(self, child: ChildProcess) -> None:
        try:
            if child.spec.spawn is not None:
                child.process = child.spec.spawn()
            else:
                env = {**os.environ, **child.spec.env}
                child.process = subprocess.Popen(child.spec.argv, env=env)
        except Exception as exc:
            # A start that fails counts like a death: backoff, budget, giving up.
            log.error("%s failed to start: %s", child.spec.name, exc)
            child.process = None
            self._died(child, -1, self.clock())
            return
        child.next_start = 0.0
        child.started_at = self.clock()
        log.info("started %s (pid %d)", child.spec.name, child.process.pid)

    @property
    def healthy(self) -> bool:
        """False once any service was given up on."""
        return not self.failed

    def health(self) -> dict[str, Any]:
        """Every service's state, pid, restarts and last exit code; overall health."""
        with self._lock:
            services = {
                c.spec.name: {
                    "state": "failed" if c.spec.name in self.failed else c.state,
                    "pid": c.process.pid if c.process is not None else None,
                    "restarts": c.restarts,
                    "restarts_in_window": len(c.recent),
                    "last_exit": c.last_exit,
                    "metrics": c.spec.metrics,
                }
                for c in self.children
            }
        return {
            "healthy": self.healthy,
            "failed": list(self.failed),
            "restart_budget": f"{self.max_restarts} per {self.restart_window_seconds:g}s",
            "services": services,
            "updated": time.time(),
            **self.extra,
        }

    def write_state(self) -> None:
        """Write :meth:`health` to the state file (atomically), if there is one."""
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f".{self.state_file.name}.tmp")
        tmp.write_text(json.dumps(self.health(), indent=1), encoding="utf-8")
        os.replace(tmp, self.state_file)

    def _died(self, child: ChildProcess, code: int, now: float) -> None:
        """Count a death against the window's budget: schedule a restart or give up."""
        child.last_exit = code
        while child.recent and now - child.recent[0] > self.restart_window_seconds:
            child.recent.popleft()
        if len(child.recent) >= self.max_restarts:
            log.error(
                "GIVING UP on %s: it exited with %s after %d restarts within %.0fs; the "
                "pipeline is DEGRADED (firelake status, /health)",
                child.spec.name,
                code,
                len(child.recent),
                self.restart_window_seconds,
            )
            with self._lock:
                self.failed.append(child.spec.name)
                child.next_start = 0.0
            return
        delay = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** len(child.recent))
        with self._lock:
            child.recent.append(now)
            child.restarts += 1
            child.next_start = now + delay
        log.warning(
            "%s exited with %s; restarting in %.1fs (restart %d of %d within %.0fs)",
            child.spec.name,
            code,
            delay,
            len(child.recent),
            self.max_restarts,
            self.restart_window_seconds,
        )

    def start(self) -> None:
        """Start every child (but those already running, e.g. the broker started first)."""
        for child in self.children:
            if child.process is None:
                self._spawn(child)

    def poll(self) -> None:
        """Restart children that died, with backoff; give up on one past its budget."""
        now = self.clock()
        for child in self.children:
            if child.process is None:
                if child.spec.name not in self.failed and now >= child.next_start:
                    self._spawn(child)
                continue
            code = child.process.poll()
            if code is None:
                continue
            child.process = None
            self._died(child, code, now)
        self.write_state()

    def stop(self) -> None:
        """SIGTERM every child, wait for the grace period, then SIGKILL the stragglers.

        The ``stop_last`` children (the broker) go after all the others have stopped.
        """
        self._stop([c for c in self.children if not c.spec.stop_last])
        self._stop([c for c in self.children if c.spec.stop_last])
        self.write_state()

    def _stop(self, children: list[ChildProcess]) -> None:
        running = [c for c in children if c.process is not None and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_seconds
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s did not stop in %.0fs; killing it", child.spec.name, self.stop_grace_seconds
                )
                child.process.kill()
                child.process.wait(timeout=10)
            log.info("stopped %s", child.spec.name)

    def run_until(
        self,
        should_stop: Callable[[], bool],
        poll_seconds: float = 0.5,
        exit_on_failure: bool = False,
    ) -> None:
        """Supervise until ``should_stop()`` is true or every child has failed for good
        (or, with ``exit_on_failure``, any one)."""
        while not should_stop():
            self.poll()
            if len(self.failed) == len(self.children):
                log.error("every service failed; stopping")
                break
            if exit_on_failure and self.failed:
                log.error("stopping: gave up on %s (--exit-on-failure)", ", ".join(self.failed))
                break
            time.sleep(poll_seconds)


class HealthServer:
    """``GET /health`` on 127.0.0.1: the supervisor's :meth:`Supervisor.health` as JSON,
    200 while healthy and 503 once a service was given up on."""

    def __init__(self, supervisor: Supervisor, port: int, host: str = "127.0.0.1") -> None:
        owner = supervisor

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.rstrip("/") not in ("/health", ""):
                    self.send_error(404, "only /health is served here")
                    return
                state = owner.health()
                body = json.dumps(state).encode()
                self.send_response(200 if state["healthy"] else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="health", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("supervisor health on http://127.0.0.1:%d/health", self.port)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def read_state(path: Path) -> dict[str, Any] | None:
    """The state a running (or the last) ``firelake up`` wrote, None if there is none."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def render_state(state: dict[str, Any] | None) -> str:
    """``firelake status``'s first lines: ``firelake up``'s health and every service."""
    if state is None:
        return "firelake up: no state file (not started with firelake up here)"
    pid = state.get("pid")
    alive = False
    if isinstance(pid, int) and pid > 0:
        try:
            os.kill(pid, 0)
            alive = True
        except OSError:
            alive = False
    if not alive:
        head = "firelake up: NOT RUNNING (last state below)"
    elif state.get("healthy"):
        head = f"firelake up: healthy (pid {pid}, {state.get('health', '')})"
    else:
        head = f"firelake up: UNHEALTHY, gave up on {', '.join(state.get('failed', []))}"
    lines = [
        head,
        f"  {'service':<24} {'state':<11} {'pid':>8} {'restarts':>9}  {'last exit':<9}  metrics",
    ]
    for name, service in state.get("services", {}).items():
        pid_text = str(service.get("pid") or "-")
        last = service.get("last_exit")
        lines.append(
            f"  {name:<24} {service.get('state', '?'):<11} {pid_text:>8} "
            f"{service.get('restarts', 0):>9}  {'-' if last is None else last!s:<9}  "
            f"{service.get('metrics') or '-'}"
        )
    return "\n".join(lines)

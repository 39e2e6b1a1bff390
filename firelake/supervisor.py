"""The local process supervisor behind ``firelake up``.

It starts the broker (unless a bootstrap address is configured), creates the streams, then
runs each service as a child process: the ingest service, one router per configured router,
the workers of each window and one process for all sinks. A child that dies is restarted
with exponential backoff, a bounded number of times; Ctrl-C or SIGTERM stops the children
(SIGTERM, then SIGKILL after a grace period) and the broker Firelake started.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from firelake.config import FirelakeConfig

__all__ = ["ChildProcess", "ServiceSpec", "Supervisor", "pipeline_services"]

log = logging.getLogger("firelake.supervisor")


@dataclass(frozen=True)
class ServiceSpec:
    """One service to run as a child process."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ChildProcess:
    """A running (or dead) child and its restart history."""

    spec: ServiceSpec
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0


def pipeline_services(
    config: FirelakeConfig, config_path: str | None, bootstrap: str
) -> list[ServiceSpec]:
    """The child processes that make up the pipeline of a configuration."""
    env = {
        "FIRELAKE_KAFKA_BOOTSTRAP": bootstrap,
        "FIRELAKE_LAKE": config.lake_url,
    }
    cli = (sys.executable, "-m", "firelake.cli")
    config_args = ("--config", config_path) if config_path else ()
    # Ingest workers listen on the one port with SO_REUSEPORT; the kernel spreads
    # connections over them.
    workers = config.ingest.workers
    services = [
        ServiceSpec(
            "ingest" if workers == 1 else f"ingest:{worker}", (*cli, "ingest", *config_args), env
        )
        for worker in range(workers)
    ]
    for name, router in config.routers.items():
        # Workers of one router join one consumer group and share its partitions.
        for worker in range(router.workers):
            label = f"router:{name}" if router.workers == 1 else f"router:{name}:{worker}"
            services.append(ServiceSpec(label, (*cli, "router", "--name", name, *config_args), env))
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
            services.append(ServiceSpec(label, argv, window_env))
    # Always: Firehose delivery streams created through the API get their sinks here too.
    # One sinks process: static group membership lets a restarted one take its partitions
    # back at once instead of after a session timeout.
    sink_env = {**env, "FIRELAKE_SINK_INSTANCE_ID": f"firelake-sinks-{socket.gethostname()}"}
    services.append(ServiceSpec("sinks", (*cli, "sink", "--all", *config_args), sink_env))
    # SQL over the lake (HTTP query API); it reads the lake only, never Kafka.
    services.append(ServiceSpec("queries", (*cli, "serve-queries", *config_args), env))
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
    ) -> None:
        self.children = [ChildProcess(spec) for spec in services]
        self.max_restarts = max_restarts
        self.backoff_seconds = backoff_seconds
        self.stop_grace_seconds = stop_grace_seconds
        self.clock = clock
        self.failed: list[str] = []

    def _spawn(self, child: ChildProcess) -> None:
        env = {**os.environ, **child.spec.env}
        child.process = subprocess.Popen(child.spec.argv, env=env)
        log.info("started %s (pid %d)", child.spec.name, child.process.pid)

    def start(self) -> None:
        """Start every child."""
        for child in self.children:
            self._spawn(child)

    def poll(self) -> None:
        """Restart children that died, with backoff; give up on one after max_restarts."""
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
            if child.restarts >= self.max_restarts:
                log.error(
                    "%s exited with %s; restart limit %d reached, giving up",
                    child.spec.name,
                    code,
                    self.max_restarts,
                )
                self.failed.append(child.spec.name)
                continue
            delay = self.backoff_seconds * (2**child.restarts)
            child.restarts += 1
            child.next_start = now + delay
            log.warning(
                "%s exited with %s; restarting in %.1fs (restart %d of %d)",
                child.spec.name,
                code,
                delay,
                child.restarts,
                self.max_restarts,
            )

    def stop(self) -> None:
        """SIGTERM every child, wait for the grace period, then SIGKILL the stragglers."""
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
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

    def run_until(self, should_stop: Callable[[], bool], poll_seconds: float = 0.5) -> None:
        """Supervise until ``should_stop()`` is true or every child has failed for good."""
        while not should_stop():
            self.poll()
            if len(self.failed) == len(self.children):
                log.error("every service failed; stopping")
                break
            time.sleep(poll_seconds)

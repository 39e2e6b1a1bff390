"""Router metrics ports: the workers, `firelake status` and the dashboard share one range."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, start_http_server

from agents.metrics import metrics_ports
from firelake.testing import example_config
from queries.dashboard import pipeline_health


def _free_pair() -> int:
    """A port p with p+1 free too (p itself left free)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            with socket.socket() as second:
                second.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise AssertionError("no two adjacent free ports")


def test_the_dashboard_finds_a_worker_on_the_next_port(tmp_path: Path) -> None:
    # A one-worker router whose first port was busy serves /metrics on port+1 (the
    # workers' range is max(workers, 2) wide); the dashboard looked at port only: "down".
    base = example_config("127.0.0.1:1", tmp_path)
    name, router = next(iter(base.routers.items()))
    port = _free_pair()
    router = dataclasses.replace(router, workers=1, metrics_port=port)
    config = dataclasses.replace(base, routers={name: router})
    assert metrics_ports(router) == router.metrics_ports == range(port, port + 2)

    registry = CollectorRegistry()
    Counter("firelake_router_events_in", "Events read.", registry=registry).inc(42)
    server, thread = start_http_server(port + 1, addr="127.0.0.1", registry=registry)
    try:
        health = pipeline_health(config, {}, lambda sql: None)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    (stage,) = [s for s in health["stages"] if s["name"] == f"router {name}"]
    assert (stage["state"], stage["events"]) == ("1/1 up", 42)


def test_dlq_tables_are_the_sinks_of_the_routers_dlq_streams(tmp_path: Path) -> None:
    config = example_config("127.0.0.1:1", tmp_path)
    assert config.dlq_tables() == ["dlq"]
    # A second sink of the same DLQ table is counted once; a router without a DLQ adds none.
    name, dlq_sink = next((n, s) for n, s in config.sinks.items() if s.table == "dlq")
    name_r, router = next(iter(config.routers.items()))
    twice = dataclasses.replace(
        config,
        sinks={**config.sinks, f"{name}-2": dlq_sink},
        routers={name_r: router, "no-dlq": dataclasses.replace(router, dlq="")},
    )
    assert twice.dlq_tables() == ["dlq"]

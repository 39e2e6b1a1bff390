"""Every long-running service `firelake up` starts has a known /metrics port.

The ingest serves on its own port, the sinks process on ``[metrics] base_port`` and each
router without a ``metrics_port`` on the next free ports, in file order; the supervisor
passes the sinks their port and ``firelake status`` shows where each service serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agents.window_metrics import WindowCollector
from agents.windows.processor import WindowProcessor
from firelake.config import (
    EXAMPLE_CONFIG,
    FirelakeConfig,
    example_config_path,
    load_config,
    parse_config,
)
from firelake.supervisor import ServiceSpec, Supervisor, pipeline_services, render_state
from firelake.testing import example_dict


def config_with(tmp_path: Path, **sections: Any) -> FirelakeConfig:
    raw = example_dict("127.0.0.1:1", tmp_path, "t", **sections)
    return parse_config(raw, source="<test>", base_dir=str(tmp_path), environ={})


def sinks_spec(services: list[ServiceSpec]) -> ServiceSpec:
    (spec,) = [s for s in services if s.name == "sinks"]
    return spec


@pytest.mark.parametrize("path", [EXAMPLE_CONFIG, example_config_path("cdu")])
def test_the_shipped_examples_observe_every_service_on_its_own_port(path: Path) -> None:
    config = load_config(path, environ={})
    services = pipeline_services(config, str(path), "127.0.0.1:9092")
    sinks = sinks_spec(services)
    base = config.metrics.base_port
    assert sinks.argv[sinks.argv.index("--metrics-port") + 1] == str(base)
    assert sinks.metrics == f"127.0.0.1:{base}/metrics"
    ports = [base]
    workers: dict[str, Any] = {
        **{f"router:{name}": spec for name, spec in config.routers.items()},
        **{f"window:{name}": spec for name, spec in config.windows.items()},
    }
    for label, worker in workers.items():
        assert worker.metrics_port, label
        ports.extend(worker.metrics_ports)
        (spec, *_) = [s for s in services if s.name in (label, f"{label}:0")]
        first, last = worker.metrics_ports[0], worker.metrics_ports[-1]
        assert spec.metrics == f"127.0.0.1:{first}-{last}/metrics"
    assert len(ports) == len(set(ports))
    assert not set(ports) & {config.ingest.port, config.query.port, config.kafka.port}
    (queries,) = [s for s in services if s.name == "queries"]
    assert queries.metrics == f"127.0.0.1:{config.query.port}/metrics"
    ingest = [s for s in services if s.name.startswith("ingest")]
    assert ingest and all(s.metrics == f"127.0.0.1:{config.ingest.port}/metrics" for s in ingest)


def test_assigned_ports_skip_the_ingest_port_and_routers_that_chose_theirs(
    tmp_path: Path,
) -> None:
    config = config_with(tmp_path, metrics={"base_port": 7000}, ingest={"port": 7001})
    (router,) = config.routers.values()
    assert router.metrics_ports == range(7002, 7004)

    raw = example_dict("127.0.0.1:1", tmp_path, "t", metrics={"base_port": 7000})
    chosen = dict(next(iter(raw["routers"].values())), metrics_port=7001)
    raw["routers"]["second"] = dict(chosen, metrics_port=0)
    raw["routers"]["first"] = chosen
    del raw["routers"][next(iter(raw["routers"]))]
    config = parse_config(raw, source="<test>", base_dir=str(tmp_path), environ={})
    assert config.routers["first"].metrics_ports == range(7001, 7003)
    assert config.routers["second"].metrics_ports == range(7003, 7005)


def test_base_port_zero_assigns_nothing(tmp_path: Path) -> None:
    config = config_with(tmp_path)  # the test configurations' default
    assert config.metrics.base_port == 0
    assert all(router.metrics_port == 0 for router in config.routers.values())
    sinks = sinks_spec(pipeline_services(config, None, "127.0.0.1:1"))
    assert sinks.argv[sinks.argv.index("--metrics-port") + 1] == "0"
    assert sinks.metrics == ""


def test_status_shows_where_each_service_serves_metrics() -> None:
    supervisor = Supervisor(
        [
            ServiceSpec("sinks", ("true",), metrics="127.0.0.1:9560/metrics"),
            ServiceSpec("queries", ("true",)),
        ]
    )
    text = render_state({**supervisor.health(), "pid": 0})
    (sinks,) = [line for line in text.splitlines() if "sinks" in line]
    (queries,) = [line for line in text.splitlines() if "queries" in line]
    assert sinks.endswith("127.0.0.1:9560/metrics")
    assert queries.endswith("-")


def test_a_window_worker_says_whether_it_holds_the_window_and_counts_its_events(
    tmp_path: Path,
) -> None:
    config = load_config(EXAMPLE_CONFIG, environ={})
    name = next(iter(config.windows))
    partitions = range(config.streams[config.windows[name].source].partitions)
    processor = WindowProcessor(config, name, partitions)
    try:
        registry = CollectorRegistry()
        held: list[WindowProcessor | None] = [None]
        registry.register(WindowCollector(name, lambda: held[0]))
        labels = {"window": name}
        assert registry.get_sample_value("firelake_window_active", labels) == 0
        assert registry.get_sample_value("firelake_window_events_total", labels) is None
        held[0] = processor
        processor.stats.events = 12
        assert registry.get_sample_value("firelake_window_active", labels) == 1
        assert registry.get_sample_value("firelake_window_events_total", labels) == 12
    finally:
        processor.close()

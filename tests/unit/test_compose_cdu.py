"""docker-compose.yml's Code Developer University profile: real commands on the shipped
example, and the scorers in locked-down containers of their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from firelake.cli import build_parser
from firelake.config import example_config_path, load_config

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
CDU = ("cdu-init", "cdu-api", "cdu-intake", "cdu-scorer", "cdu-scorer-high", "cdu-sinks")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]


@pytest.mark.parametrize("name", CDU)
def test_cdu_services_run_real_commands_on_the_example(services, name) -> None:
    service = services[name]
    assert service["profiles"] == ["cdu"]
    assert service["environment"]["FIRELAKE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    args = build_parser().parse_args(service["command"][1:])
    assert args.example == "cdu"
    config = load_config(example_config_path("cdu"), environ={})
    if args.command == "router":
        assert args.name in config.routers
    if args.command == "app":
        assert args.name in config.apps and args.host == "0.0.0.0"
    if name != "cdu-init":
        assert services[name]["depends_on"]["cdu-init"]["condition"] == (
            "service_completed_successfully"
        )


@pytest.mark.parametrize("name", ["cdu-scorer", "cdu-scorer-high"])
def test_scorers_are_locked_down(services, name) -> None:
    scorer = services[name]
    assert scorer["read_only"] is True and scorer["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in scorer["security_opt"]
    assert (
        scorer["pids_limit"] > 0
        and scorer["mem_limit"]
        and any(t.startswith("/tmp") for t in scorer["tmpfs"])
    )


def test_every_cdu_router_has_a_service(services) -> None:
    config = load_config(example_config_path("cdu"), environ={})
    commands = [services[n]["command"] for n in CDU]
    routed = {c[c.index("--name") + 1] for c in commands if c[1] == "router"}
    assert routed == set(config.routers)

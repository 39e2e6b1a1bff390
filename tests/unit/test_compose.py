"""docker-compose.yml and the Dockerfile: real CLI commands, wiring, the shipped config."""

from __future__ import annotations

import base64
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from firelake.cli import build_parser
from firelake.config import EXAMPLE_CONFIG, load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
CONFIG_IN_IMAGE = "/app/firelake.toml"
WINDOW_SERVICES = ("window-plays-per-minute", "window-channel-viewers", "window-user-sessions")
FIRELAKE_SERVICES = ("init", "ingest", "router", "sinks", "queries", *WINDOW_SERVICES)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_services_present(services: dict[str, Any]) -> None:
    base = {name for name, spec in services.items() if "cdu" not in spec.get("profiles", ())}
    assert base == {"kafka", "minio", *FIRELAKE_SERVICES}


def test_kafka_is_a_single_kraft_node(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert kafka["image"] == "apache/kafka:4.1.1"
    assert env["KAFKA_NODE_ID"] == "1"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert set(env["KAFKA_LISTENERS"].split(",")) == {"PLAINTEXT://:9092", "CONTROLLER://:9093"}
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    # KRaft refuses a cluster id that is not a base64url UUID (16 bytes).
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    health = " ".join(kafka["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in health
    assert "--bootstrap-server" in health


def test_minio_serves_a_volume(services: dict[str, Any]) -> None:
    minio = services["minio"]
    assert minio["image"].startswith("minio/minio")
    assert minio["command"][:2] == ["server", "/data"]
    assert any(v.split(":")[1] == "/data" for v in minio["volumes"])


@pytest.mark.parametrize("name", FIRELAKE_SERVICES)
def test_firelake_service_wiring(services: dict[str, Any], name: str) -> None:
    service = services[name]
    assert service["build"] == "."
    assert service["environment"]["FIRELAKE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert service["environment"]["FIRELAKE_LAKE"] == "/lake"
    assert "lake:/lake" in service["volumes"]
    depends = service["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    if name != "init":
        assert depends["init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", FIRELAKE_SERVICES)
def test_commands_are_real_cli_commands(services: dict[str, Any], name: str) -> None:
    command = services[name]["command"]
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    assert argv[0] == "firelake"
    args = build_parser().parse_args(argv[1:])
    assert args.config == CONFIG_IN_IMAGE
    expected = {
        "init": "streams",
        "ingest": "ingest",
        "router": "router",
        "sinks": "sink",
        "queries": "serve-queries",
    }
    assert args.command == expected.get(name, "window")


def test_commands_name_what_the_shipped_config_declares(services: dict[str, Any]) -> None:
    config = load_config(EXAMPLE_CONFIG, environ={})
    router = build_parser().parse_args(services["router"]["command"][1:])
    assert router.name in config.routers
    sinks = build_parser().parse_args(services["sinks"]["command"][1:])
    assert sinks.all
    init = build_parser().parse_args(services["init"]["command"][1:])
    assert init.action == "create"
    # The ingest's published port is the one the configuration listens on.
    assert f"{config.ingest.port}:{config.ingest.port}" in services["ingest"]["ports"]
    # So is the query service's, bound to every interface by the service's environment.
    queries = services["queries"]
    assert f"{config.query.port}:{config.query.port}" in queries["ports"]
    inside = load_config(
        EXAMPLE_CONFIG, environ={k: str(v) for k, v in queries["environment"].items()}
    )
    assert (inside.query.host, inside.query.port) == ("0.0.0.0", 8080)
    assert inside.lake.root == "/lake" and inside.kafka.bootstrap == "kafka:9092"


def test_every_agent_of_each_example_has_a_service(services: dict[str, Any]) -> None:
    """`docker compose up` runs the whole example: each router and window agent."""
    for example, config in (
        ("yle", load_config(EXAMPLE_CONFIG, environ={})),
        ("cdu", load_config(EXAMPLE_CONFIG.parent.parent / "cdu" / "firelake.toml", environ={})),
    ):
        started = {"router": set(), "window": set()}
        for service in services.values():
            argv = service.get("command")
            if not isinstance(argv, list) or argv[0] != "firelake":
                continue
            args = build_parser().parse_args(argv[1:])
            if args.command in started and (args.example or "yle") == example:
                started[args.command].add(args.name)
        assert started["router"] == set(config.routers), example
        assert started["window"] == set(config.windows), example


def test_named_volumes_are_declared() -> None:
    volumes = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["volumes"]
    assert {"lake", "kafka-data", "minio-data"} <= set(volumes)


def test_dockerfile_builds_the_package_with_the_shipped_config() -> None:
    steps = dockerfile_instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert any(word == "RUN" and "pip install ." in rest for word, rest in steps)
    copies = [rest.split() for word, rest in steps if word == "COPY"]
    assert ["firelake/examples/yle/firelake.toml", CONFIG_IN_IMAGE] in copies
    # Everything copied into the build exists (pyproject's readme included).
    for sources in (c[:-1] for c in copies):
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    packages = {c[0] for c in copies if len(c) == 2}
    # Every package pyproject installs is in the build context (a missing one fails at run).
    found = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for pattern in found["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in packages, f"Dockerfile does not copy {pattern}"
    # The saved queries sit where the image's config looks for them.
    saved_dir = load_config(EXAMPLE_CONFIG, environ={}).query.saved_dir
    assert ["firelake/examples/yle/queries", f"/app/{saved_dir}"] in copies


def test_the_dockerfile_edit_makes_the_ingest_reachable(tmp_path: Path) -> None:
    """The image's config is the example with the ingest bound to every interface."""
    run = next(rest for word, rest in dockerfile_instructions() if "sed -i" in rest)
    match = re.search(r"sed -i 's/(.+?)/(.+?)/' " + re.escape(CONFIG_IN_IMAGE), run)
    assert match is not None, run
    pattern, replacement = match.group(1), match.group(2)
    original = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    edited, count = re.subn(pattern, replacement, original, flags=re.MULTILINE)
    assert count == 1
    path = tmp_path / "firelake.toml"
    path.write_text(edited, encoding="utf-8")
    inside = load_config(path, environ={})
    shipped = load_config(EXAMPLE_CONFIG, environ={})
    assert inside.ingest.host == "0.0.0.0"
    assert inside.streams == shipped.streams and inside.sinks == shipped.sinks

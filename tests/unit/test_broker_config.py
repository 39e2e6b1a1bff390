"""Unit tests for firelake.broker that never start a real broker."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import stat
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from firelake import broker as broker_mod
from firelake.broker import (
    HOST,
    KAFKA_VERSION,
    BrokerError,
    LocalBroker,
    default_cache_dir,
    fetch_kafka,
    free_port,
    generate_cluster_id,
    port_in_use,
    probe_broker,
    render_server_properties,
    tail_file,
)


def parse_properties(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        out[key] = value
    return out


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A socket listening on a free 127.0.0.1 port (i.e. "something else")."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    sock.listen(1)
    try:
        yield sock
    finally:
        sock.close()


# --------------------------------------------------------------------------- properties


def test_render_server_properties_kraft_single_node(tmp_path: Path) -> None:
    props = parse_properties(
        render_server_properties(port=19092, controller_port=19093, log_dir=tmp_path / "logs")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert props["log.dirs"] == str(tmp_path / "logs")
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_render_server_properties_extra_overrides(tmp_path: Path) -> None:
    text = render_server_properties(
        port=1,
        controller_port=2,
        log_dir=tmp_path,
        node_id=7,
        extra={"num.partitions": "3", "auto.create.topics.enable": "false"},
    )
    props = parse_properties(text)
    assert props["num.partitions"] == "3"
    assert props["auto.create.topics.enable"] == "false"
    assert props["controller.quorum.voters"] == "7@127.0.0.1:2"
    assert text.count("\nnum.partitions=") == 1


def test_render_properties_escapes_backslashes(tmp_path: Path) -> None:
    text = render_server_properties(port=1, controller_port=2, log_dir=Path("C:\\x\\y"))
    assert "log.dirs=C:\\\\x\\\\y" in text


def test_local_broker_defaults(tmp_path: Path) -> None:
    b = LocalBroker(tmp_path / "kafka")
    assert b.port == 9092
    assert b.controller_port == 9093
    assert b.bootstrap == "127.0.0.1:9092"
    assert b.pid_file.parent == b.data_dir
    assert b.log_file.parent == b.data_dir
    assert b.data_dir.is_absolute()
    props = parse_properties(b.render_properties())
    assert props["log.dirs"] == str(b.log_dir)
    assert not b.is_formatted()


def test_local_broker_zero_ports_pick_free_distinct_ports(tmp_path: Path) -> None:
    b = LocalBroker(tmp_path, port=0, controller_port=0)
    assert b.port > 0
    assert b.controller_port is not None and b.controller_port > 0
    assert b.port != b.controller_port
    assert b.bootstrap == f"127.0.0.1:{b.port}"


def test_local_broker_rejects_bad_ports(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalBroker(tmp_path, port=5000, controller_port=5000)
    with pytest.raises(ValueError):
        LocalBroker(tmp_path, port=70000)


def test_generate_cluster_id_is_kafka_uuid() -> None:
    ids = {generate_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22
        assert not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


# --------------------------------------------------------------------------- ports


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    assert not port_in_use(port)


def test_port_in_use_detects_listener(listener: socket.socket) -> None:
    assert port_in_use(listener.getsockname()[1])


def test_start_refuses_busy_port(
    tmp_path: Path, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fetch(*_a: object, **_k: object) -> Path:
        raise AssertionError("must fail before fetching jars")

    monkeypatch.setattr(broker_mod, "fetch_kafka", no_fetch)
    busy = listener.getsockname()[1]
    b = LocalBroker(tmp_path / "k", port=busy, controller_port=0)
    with pytest.raises(BrokerError, match=f"port {busy} on 127.0.0.1 is in use"):
        b.start(timeout=1)
    assert not b.pid_file.exists()
    assert not b.is_running()


def test_start_refuses_busy_controller_port(
    tmp_path: Path, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_mod, "fetch_kafka", lambda *_a, **_k: pytest.fail("fetched"))
    busy = listener.getsockname()[1]
    b = LocalBroker(tmp_path / "k", port=free_port(), controller_port=busy)
    with pytest.raises(BrokerError, match=f"port {busy} on 127.0.0.1 is in use"):
        b.start(timeout=1)


# --------------------------------------------------------------------------- state / pid


def test_status_when_not_started(tmp_path: Path) -> None:
    b = LocalBroker(tmp_path, port=free_port(), controller_port=0)
    st = b.status()
    assert st["running"] is False
    assert st["pid"] is None
    assert st["bootstrap"] == b.bootstrap
    assert st["data_dir"] == str(b.data_dir)
    assert not b.is_running()
    b.stop()  # no-op


def test_stale_pid_file_of_foreign_process_is_not_killed(tmp_path: Path) -> None:
    b = LocalBroker(tmp_path, port=free_port(), controller_port=0)
    b.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a Kafka broker
    assert b.pid() == os.getpid()
    assert not b.is_running()
    b.stop()  # must not SIGTERM the test process
    assert not b.pid_file.exists()


def test_garbage_pid_file(tmp_path: Path) -> None:
    b = LocalBroker(tmp_path, port=free_port(), controller_port=0)
    b.pid_file.write_text("not a pid")
    assert b.pid() is None
    assert not b.is_running()


# --------------------------------------------------------------------------- log tail


def test_log_tail_missing_file(tmp_path: Path) -> None:
    b = LocalBroker(tmp_path / "nowhere", port=free_port(), controller_port=0)
    assert b.log_tail() == ""


def test_log_tail_last_lines(tmp_path: Path) -> None:
    b = LocalBroker(tmp_path, port=free_port(), controller_port=0)
    b.log_file.write_text("".join(f"line {i}\n" for i in range(100)))
    tail = b.log_tail()
    assert tail.splitlines() == [f"line {i}" for i in range(60, 100)]
    assert b.log_tail(3) == "line 97\nline 98\nline 99"
    assert b.log_tail(0) == ""
    assert b.log_tail(1000).splitlines()[0] == "line 0"


def test_tail_file_large_and_unterminated(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    long_line = "x" * 5000
    with open(path, "w") as fh:
        for i in range(200):
            fh.write(f"{i} {long_line}\n")
        fh.write("last line without newline")
    lines = tail_file(path, 5).splitlines()
    assert len(lines) == 5
    assert lines[-1] == "last line without newline"
    assert lines[0].startswith("196 ")


def test_tail_file_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.log"
    path.write_bytes(b"ok\n\xff\xfe broken\n")
    assert tail_file(path, 1).endswith("broken")


# --------------------------------------------------------------------------- fetch


def _fake_tool(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only fake ``java`` (and whatever a test adds)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_tool(bin_dir, "java", "exit 0\n")
    for tool in ("mkdir", "grep", "sleep"):  # what the fake mvn scripts use
        real = shutil.which(tool)
        assert real is not None
        (bin_dir / tool).symlink_to(real)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    return bin_dir


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FIRELAKE_CACHE", raising=False)
    assert default_cache_dir() == (
        Path.home() / ".cache" / "firelake" / f"kafka-{KAFKA_VERSION}" / "libs"
    )
    monkeypatch.setenv("FIRELAKE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / f"kafka-{KAFKA_VERSION}" / "libs"


def test_fetch_uses_complete_cache_without_mvn(tmp_path: Path, fake_bin: Path) -> None:
    libs = tmp_path / "cache" / "libs"
    libs.mkdir(parents=True)
    (libs / "a.jar").write_bytes(b"")
    (libs / ".firelake-complete").write_text("ok")
    # no mvn on PATH at all: a complete cache must not need it
    assert fetch_kafka(libs) == libs


def test_fetch_without_mvn_is_clear_error(tmp_path: Path, fake_bin: Path) -> None:
    with pytest.raises(BrokerError, match="'mvn' was not found"):
        fetch_kafka(tmp_path / "cache" / "libs")


def test_fetch_without_java_is_clear_error(
    tmp_path: Path, fake_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (fake_bin / "java").unlink()
    with pytest.raises(BrokerError, match="'java' was not found"):
        fetch_kafka(tmp_path / "cache" / "libs")


def test_fetch_mvn_failure_leaves_no_cache(tmp_path: Path, fake_bin: Path) -> None:
    _fake_tool(fake_bin, "mvn", "echo 'Could not resolve dependencies: boom'\nexit 1\n")
    libs = tmp_path / "cache" / "libs"
    with pytest.raises(BrokerError, match="boom") as info:
        fetch_kafka(libs)
    assert "exit code 1" in str(info.value)
    assert not libs.exists()
    assert list(libs.parent.iterdir()) == []  # no half-filled temp dirs either


def test_fetch_success_is_atomic_and_marked(tmp_path: Path, fake_bin: Path) -> None:
    # Fake mvn: parse -DoutputDirectory=... and drop two jars there; record the pom it saw.
    _fake_tool(
        fake_bin,
        "mvn",
        'for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${a#-DoutputDirectory=}";; '
        "esac; done\n"
        'mkdir -p "$out" && : > "$out/kafka_2.13-4.1.1.jar" && : > "$out/x.jar"\n'
        "grep -q kafka_2.13 pom.xml || exit 3\n",
    )
    libs = tmp_path / "cache" / "libs"
    assert fetch_kafka(libs) == libs
    assert sorted(p.name for p in libs.glob("*.jar")) == ["kafka_2.13-4.1.1.jar", "x.jar"]
    assert (libs / ".firelake-complete").read_text().startswith(f"kafka {KAFKA_VERSION}")
    assert [p.name for p in libs.parent.iterdir()] == ["libs"]
    # second call: cached, mvn no longer needed
    (fake_bin / "mvn").unlink()
    assert fetch_kafka(libs) == libs


def test_fetch_replaces_incomplete_cache(tmp_path: Path, fake_bin: Path) -> None:
    _fake_tool(
        fake_bin,
        "mvn",
        'for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${a#-DoutputDirectory=}";; '
        'esac; done\nmkdir -p "$out" && : > "$out/new.jar"\n',
    )
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "half.jar").write_bytes(b"")  # no marker: an interrupted manual copy
    fetch_kafka(libs)
    assert sorted(p.name for p in libs.glob("*.jar")) == ["new.jar"]


def test_package_data_present() -> None:
    kafka_dir = Path(broker_mod.__file__).parent / "kafka"
    pom = (kafka_dir / "pom.xml").read_text()
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in pom
    assert "log4j-slf4j-impl" in pom
    assert "rootLogger.level = INFO" in (kafka_dir / "log4j2.properties").read_text()


# --------------------------------------------------------------------------- wire probe


def _metadata_v4_response(correlation_id: int, brokers: list[tuple[int, str, int]]) -> bytes:
    body = struct.pack(">ii", correlation_id, 0) + struct.pack(">i", len(brokers))
    for node_id, host, port in brokers:
        raw = host.encode()
        body += struct.pack(">ih", node_id, len(raw)) + raw + struct.pack(">ih", port, -1)
    body += struct.pack(">h", -1) + struct.pack(">i", 1) + struct.pack(">i", 0)  # rest
    return struct.pack(">i", len(body)) + body


def test_probe_broker_parses_metadata_response() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((HOST, 0))
    server.listen(1)
    seen: dict[str, int] = {}

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            (size,) = struct.unpack(">i", conn.recv(4, socket.MSG_WAITALL))
            req = conn.recv(size, socket.MSG_WAITALL)
            api_key, api_version, corr = struct.unpack_from(">hhi", req, 0)
            seen.update(api_key=api_key, api_version=api_version)
            conn.sendall(_metadata_v4_response(corr, [(1, "127.0.0.1", 4242)]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        brokers = probe_broker(HOST, server.getsockname()[1], timeout=5)
    finally:
        thread.join(5)
        server.close()
    assert brokers == [(1, "127.0.0.1", 4242)]
    assert seen == {"api_key": 3, "api_version": 4}


def test_probe_broker_nothing_listening() -> None:
    with pytest.raises(OSError):
        probe_broker(HOST, free_port(), timeout=1)
    assert not LocalBroker(Path("/nonexistent"), port=free_port(), controller_port=0).ready(0.5)


# --------------------------------------------------------------------------- start failures


def _prepared_broker(
    tmp_path: Path, fake_bin: Path, monkeypatch: pytest.MonkeyPatch, java_script: str
) -> LocalBroker:
    """A LocalBroker whose "java" is a shell script and whose storage looks formatted."""
    _fake_tool(fake_bin, "java", java_script)
    libs = tmp_path / "libs"
    libs.mkdir()
    monkeypatch.setattr(broker_mod, "fetch_kafka", lambda *_a, **_k: libs)
    b = LocalBroker(tmp_path / "k", port=free_port(), controller_port=0)
    b.log_dir.mkdir(parents=True)
    (b.log_dir / "meta.properties").write_text("node.id=1\n")
    return b


def test_start_reports_early_exit_with_log_tail(
    tmp_path: Path, fake_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = _prepared_broker(
        tmp_path,
        fake_bin,
        monkeypatch,
        "echo 'ERROR Exiting Kafka due to fatal exception'\nexit 1\n",
    )
    with pytest.raises(BrokerError, match="exited during startup") as info:
        b.start(timeout=20)
    assert "Exiting Kafka due to fatal exception" in str(info.value)
    assert "exit code 1" in str(info.value)
    assert not b.pid_file.exists()
    assert not b.is_running()


def test_start_timeout_kills_process_and_reports_log_tail(
    tmp_path: Path, fake_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = _prepared_broker(tmp_path, fake_bin, monkeypatch, "echo 'still starting'\nexec sleep 60\n")
    with pytest.raises(BrokerError, match="did not become ready within 1s") as info:
        b.start(timeout=1)
    assert "still starting" in str(info.value)
    assert not b.is_running()
    assert not b.pid_file.exists()

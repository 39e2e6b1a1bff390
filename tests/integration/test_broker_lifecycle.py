"""Integration tests: fetch, start, use, restart and stop a real Kafka broker."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from firelake.broker import BrokerError, LocalBroker, free_port

pytestmark = pytest.mark.kafka

kafka = pytest.importorskip("kafka")
from kafka import KafkaConsumer, KafkaProducer  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    b = LocalBroker(tmp_path / "kafka", port=free_port(), controller_port=0)
    try:
        yield b
    finally:
        b.stop()


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        assert topic in admin.list_topics()
    finally:
        admin.close()


def _roundtrip(bootstrap: str, topic: str, value: bytes) -> list[bytes]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.send(topic, key=b"k", value=value).get(timeout=30)
        producer.flush(30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"firelake-test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=30_000,
    )
    try:
        for message in consumer:
            return [message.value]
        return []
    finally:
        consumer.close()


def test_broker_lifecycle(broker: LocalBroker) -> None:
    try:
        broker.start(timeout=120)
    except BrokerError as exc:  # pragma: no cover - diagnostics only
        pytest.fail(f"broker did not start:\n{exc}")
    st = broker.status()
    assert st["running"] is True
    assert st["bootstrap"] == broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert st["data_dir"] == str(broker.data_dir)
    pid = st["pid"]
    assert isinstance(pid, int) and pid > 0
    assert broker.pid_file.read_text().strip() == str(pid)
    assert broker.is_formatted()
    assert broker.ready()
    assert "Kafka Server started" in broker.log_tail(400)

    topic = "firelake-lifecycle"
    _create_topic(broker.bootstrap, topic)
    assert _roundtrip(broker.bootstrap, topic, b"hello firelake") == [b"hello firelake"]

    broker.stop()
    assert _gone(pid)
    assert not broker.is_running()
    assert not broker.pid_file.exists()
    assert broker.status()["running"] is False
    broker.stop()  # idempotent


def test_broker_restart_keeps_data_and_is_controllable_from_elsewhere(
    broker: LocalBroker,
) -> None:
    broker.start(timeout=120)
    meta = (broker.log_dir / "meta.properties").read_text()
    topic = "firelake-restart"
    _create_topic(broker.bootstrap, topic)
    first_pid = broker.pid()
    broker.start(timeout=30)  # already running: no second process
    assert broker.pid() == first_pid
    broker.stop()

    broker.start(timeout=120)  # same data dir: no reformat, topic survives
    assert (broker.log_dir / "meta.properties").read_text() == meta
    assert _roundtrip(broker.bootstrap, topic, b"again") == [b"again"]

    # Another LocalBroker on the same data dir (as another process would) sees and stops it.
    other = LocalBroker(broker.data_dir, port=broker.port, controller_port=broker.controller_port)
    assert other.is_running()
    pid = other.pid()
    assert pid is not None
    other.stop()
    assert _gone(pid)
    assert not broker.is_running()


def test_second_broker_on_same_port_fails_clearly(broker: LocalBroker, tmp_path: Path) -> None:
    broker.start(timeout=120)
    intruder = LocalBroker(tmp_path / "other", port=broker.port, controller_port=0)
    with pytest.raises(BrokerError, match=f"port {broker.port} on 127.0.0.1 is in use"):
        intruder.start(timeout=10)
    assert broker.ready()

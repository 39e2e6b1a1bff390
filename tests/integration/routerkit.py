"""Helpers shared by the router integration tests (real broker, router as a subprocess).

Not a test module: the router tests import it (``tests.integration.routerkit``), including
the ``running`` fixture (``from tests.integration.routerkit import running as running``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType

from agents.status import scrape
from firelake.config import FirelakeConfig, load_config
from firelake.testing import example_data, example_dict, write_config
from streams import admin
from streams.envelope import decode, encode
from streams.partitioning import partition_for_key
from streams.topics import ensure_topics

__all__ = [
    "REPO",
    "Received",
    "alter_topic_config",
    "committed_offsets",
    "create_topics",
    "end_offsets",
    "metrics",
    "produce",
    "raw_envelopes",
    "read_committed",
    "read_records",
    "router_config",
    "running",
    "start_router",
    "tail",
    "wait_for_metric",
]

REPO = Path(__file__).resolve().parents[2]

Message = tuple[int, bytes, list[tuple[str, bytes]] | None, bytes]
#: (partition, event, key) per topic, as :func:`read_committed` returns them.
Received = dict[str, list[tuple[int, dict[str, Any], str | None]]]


# ---------------------------------------------------------------- configuration and topics


def router_config(
    tmp_path: Path,
    bootstrap: str,
    lake: Path,
    suffix: str,
    partitions: int = 6,
    data: dict[str, Any] | None = None,
    **settings: Any,
) -> tuple[Path, FirelakeConfig, str]:
    """The example (or ``data``) with a ``partitions``-partition raw stream and settings of
    its one router, written, loaded and its topics created; (path, config, router name)."""
    data = data if data is not None else example_data()
    data["streams"]["raw-events"]["partitions"] = partitions
    (router,) = data["routers"].values()
    router.update(settings)
    path = tmp_path / "firelake.toml"
    write_config(path, example_dict(bootstrap, lake, suffix, data=data))
    config = load_config(path, environ={})
    ensure_topics(config, bootstrap)
    return path, config, next(iter(config.routers))


def create_topics(
    config: FirelakeConfig, bootstrap: str, overrides: Mapping[str, Mapping[str, str]] | None = None
) -> None:
    """The config's topics, with ensure_topics; ``overrides`` gives some streams topic configs
    (those are created here directly, to make the broker refuse the router's output).
    """
    if not overrides:
        ensure_topics(config, bootstrap)
        return
    specs = {
        s.name: admin.TopicSpec(s.partitions, overrides.get(s.name, {}))
        for s in config.streams.values()
    }
    with admin.admin_client(bootstrap) as client:
        results = admin.create_topics(client, specs, config.kafka.replication_factor)
    refused = {name: result for name, result in results.items() if result[0]}
    assert not refused, f"topics not created (error code, message): {refused}"


def alter_topic_config(bootstrap: str, topic: str, settings: Mapping[str, str | None]) -> None:
    """Set (a value) or reset to the broker default (None) topic configs, incrementally."""
    ops: dict[str, Any] = {
        key: (AlterConfigOp.DELETE, None) if value is None else (AlterConfigOp.SET, value)
        for key, value in settings.items()
    }
    with admin.admin_client(bootstrap) as client:
        client.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, ops)])


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offset per partition of a topic."""
    with admin.admin_client(bootstrap) as client:
        offsets = client.list_group_offsets(group).get(group, {})
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The end (next) offset of every partition of a topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        ends = consumer.end_offsets([KafkaTopicPartition(topic, p) for p in range(partitions)])
    finally:
        consumer.close()
    return {tp.partition: offset for tp, offset in ends.items()}


# ---------------------------------------------------------------- producing and reading


def raw_envelopes(records: list[tuple[str, bytes]], partitions: int) -> list[Message]:
    """(partition, value, headers, key) per target partition, like the ingest writes them."""
    by_partition: dict[int, list[tuple[str, bytes]]] = {}
    for key, line in records:
        by_partition.setdefault(partition_for_key(key, partitions), []).append((key, line))
    now_ms = int(time.time() * 1000)
    messages: list[Message] = []
    for partition, items in sorted(by_partition.items()):
        keys = [k for k, _ in items]
        value, headers = encode([line for _, line in items], keys, now_ms, now_ms)
        messages.append((partition, value, headers, keys[0].encode()))
    return messages


async def produce(bootstrap: str, raw_topic: str, messages: list[Message]) -> None:
    """Send raw messages in order, each acknowledged before the next."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, value, headers, key in messages:
            await producer.send_and_wait(
                raw_topic, value, key=key, partition=partition, headers=headers
            )
    finally:
        await producer.stop()


async def read_records(
    bootstrap: str,
    topics: dict[str, int],
    deadline: float,
    enough: Callable[[dict[str, list[tuple[int, dict[str, Any], str | None, Any]]]], bool],
) -> dict[str, list[tuple[int, dict[str, Any], str | None, Any]]]:
    """(partition, event, key, Kafka record) per topic of every envelope line, as
    ``read_committed`` readers see them, until ``enough`` says so or ``deadline``
    (monotonic) passes, plus a short extra read that would show duplicates."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    got: dict[str, list[tuple[int, dict[str, Any], str | None, Any]]] = {t: [] for t in topics}
    try:
        tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        def take(batches: dict[TopicPartition, list[Any]]) -> None:
            for tp, records in batches.items():
                for record in records:
                    envelope = decode(record.value, record.headers, record.key)
                    for index, line in enumerate(envelope.lines):
                        got[tp.topic].append(
                            (tp.partition, orjson.loads(line), envelope.key_at(index), record)
                        )

        while time.monotonic() < deadline and not enough(got):
            take(await consumer.getmany(timeout_ms=500, max_records=5000))
        take(await consumer.getmany(timeout_ms=1500))
    finally:
        await consumer.stop()
    return got


async def read_committed(
    bootstrap: str,
    topics: dict[str, int],
    want: int,
    deadline: float,
    enough: Callable[[Received], bool] | None = None,
) -> Received:
    """(partition, event, key) per topic (:func:`read_records`) until ``want`` events in
    all, or until ``enough`` says so."""

    def strip(got: dict[str, list[tuple[int, dict[str, Any], str | None, Any]]]) -> Received:
        return {t: [(p, e, k) for p, e, k, _ in items] for t, items in got.items()}

    def done(got: dict[str, list[tuple[int, dict[str, Any], str | None, Any]]]) -> bool:
        if enough is not None:
            return enough(strip(got))
        return sum(map(len, got.values())) >= want

    return strip(await read_records(bootstrap, topics, deadline, done))


# ---------------------------------------------------------------- the router process


def start_router(
    tmp_path: Path, config_path: Path, router_name: str, bootstrap: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """``python -m agents.router`` as a subprocess logging into tmp_path/router.log.

    Its working directory is ``tmp_path``, so a transform module written there imports.
    """
    log_path = tmp_path / "router.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIRELAKE_KAFKA_BOOTSTRAP": bootstrap}
    command = [sys.executable, "-m", "agents.router", "--config", str(config_path)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*command, "--router", router_name],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc, log_path


def tail(log_path: Path) -> str:
    """The end of a router log, for assertion messages."""
    return log_path.read_text(errors="replace")[-3000:]


def metrics(port: int) -> dict[str, float]:
    """A router's counters from its /metrics endpoint ({} while it does not answer yet)."""
    try:
        return scrape(f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return {}


def wait_for_metric(
    port: int, ready: Callable[[dict[str, float]], bool], timeout: float
) -> dict[str, float]:
    """Poll a router's counters until ``ready`` says so or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    sample = metrics(port)
    while not ready(sample) and time.monotonic() < deadline:
        time.sleep(0.1)
        sample = metrics(port)
    return sample


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Router processes started by a test: killed at the end if still alive."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

"""Stream topics on the real broker: create, re-check, mismatch, concurrent creation, delete,
and the replication factor (automatic by cluster size, or configured)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from firelake.config import FirelakeConfig
from firelake.testing import example_config
from streams.admin import admin_client, broker_count, choose_replication_factor
from streams.topics import (
    MAX_MESSAGE_BYTES,
    TopicError,
    TopicMismatchError,
    delete_topics,
    ensure_topics,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
def admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    with admin_client(kafka_bootstrap, "test-topics") as client:
        yield client


@pytest.fixture
def config(kafka_bootstrap: str, lake: Path, suffix: str) -> Iterator[FirelakeConfig]:
    cfg = example_config(kafka_bootstrap, lake, suffix)
    try:
        yield cfg
    finally:
        delete_topics(kafka_bootstrap, list(cfg.streams))


def partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int | None]:
    return {
        t["name"]: (len(t["partitions"]) if t["error_code"] == 0 else None)
        for t in admin.describe_topics(names)
    }


def test_creates_every_stream_then_only_checks(
    kafka_bootstrap: str, config: FirelakeConfig, admin: KafkaAdminClient
) -> None:
    names = list(config.streams)
    created = ensure_topics(config, kafka_bootstrap)
    assert sorted(created) == sorted(names)
    assert partition_counts(admin, names) == {n: s.partitions for n, s in config.streams.items()}
    raw = next(n for n in names if n.startswith("raw-events-"))
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, raw)])
    settings = configs["topic"][raw]
    assert settings["retention.ms"]["value"] == str(168 * 3_600_000)
    assert settings["max.message.bytes"]["value"] == str(MAX_MESSAGE_BYTES)
    assert ensure_topics(config, kafka_bootstrap) == []


def test_partition_mismatch_names_stream_and_counts_and_creates_nothing(
    kafka_bootstrap: str, lake: Path, suffix: str, config: FirelakeConfig, admin: KafkaAdminClient
) -> None:
    raw = f"raw-events-{suffix}"
    # Only the raw stream, with 2 partitions, exists before the full config is ensured.
    only_raw = {"streams": {"raw-events": {"partitions": 2}}}
    assert ensure_topics(
        example_config(kafka_bootstrap, lake, suffix, data=only_raw), kafka_bootstrap
    ) == [raw]
    with pytest.raises(TopicMismatchError) as info:
        ensure_topics(config, kafka_bootstrap)
    err = info.value
    assert (err.stream, err.declared, err.actual) == (raw, 4, 2)
    assert raw in str(err) and "declares 4 partitions" in str(err) and "has 2" in str(err)
    others = [n for n in config.streams if n != raw]
    assert set(partition_counts(admin, others).values()) == {None}


def test_concurrent_ensure_calls_both_succeed(
    kafka_bootstrap: str, config: FirelakeConfig, admin: KafkaAdminClient
) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        runs = [pool.submit(ensure_topics, config, kafka_bootstrap) for _ in range(3)]
        results = [run.result(timeout=60) for run in runs]
    created = [name for result in results for name in result]
    # Each topic is created by exactly one call; the others found it (or raced and re-checked).
    assert sorted(created) == sorted(config.streams)
    assert partition_counts(admin, list(config.streams)) == {
        n: s.partitions for n, s in config.streams.items()
    }


def test_delete_skips_unknown_topics(kafka_bootstrap: str, config: FirelakeConfig) -> None:
    ensure_topics(config, kafka_bootstrap)
    names = list(config.streams)
    deleted = delete_topics(kafka_bootstrap, [*names, f"never-created-{names[0]}"])
    assert sorted(deleted) == sorted(names)
    assert delete_topics(kafka_bootstrap, []) == []


def replication_factors(admin: KafkaAdminClient, names: list[str]) -> dict[str, set[int]]:
    return {
        t["name"]: {len(p["replica_nodes"]) for p in t["partitions"]}
        for t in admin.describe_topics(names)
    }


def test_new_topics_get_the_automatic_replication_factor_of_the_cluster(
    kafka_bootstrap: str, config: FirelakeConfig, admin: KafkaAdminClient
) -> None:
    assert config.kafka.replication_factor == 0  # automatic, the default
    brokers = broker_count(admin)
    assert brokers >= 1
    expected = choose_replication_factor(brokers)  # 1 on the single dev broker
    names = list(config.streams)
    assert sorted(ensure_topics(config, kafka_bootstrap)) == sorted(names)
    assert replication_factors(admin, names) == {name: {expected} for name in names}


def test_a_configured_replication_factor_reaches_the_broker(
    kafka_bootstrap: str, lake: Path, suffix: str, config: FirelakeConfig, admin: KafkaAdminClient
) -> None:
    # More replicas than the cluster has brokers: the broker refuses, naming the topic.
    too_many = broker_count(admin) + 1
    only_raw = {"streams": {"raw-events": {"partitions": 1}}}
    greedy = example_config(
        kafka_bootstrap, lake, suffix, data=only_raw, kafka={"replication_factor": too_many}
    )
    raw = f"raw-events-{suffix}"
    with pytest.raises(TopicError) as info:
        ensure_topics(greedy, kafka_bootstrap)
    assert info.value.topic == raw
    assert "InvalidReplicationFactor" in str(info.value) and raw in str(info.value)
    assert partition_counts(admin, [raw]) == {raw: None}

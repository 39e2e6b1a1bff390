"""The one way Firelake talks to Kafka's admin API: a client, and topic creation.

Administration only (kafka-python's ``KafkaAdminClient``), never the hot path. Every
admin client is made by :func:`admin_client` (same timeouts everywhere, always closed),
and every topic is created by :func:`create_topics` / :func:`ensure_topic`, which pick the
replication factor in one place: ``kafka.replication_factor`` when set, else automatic —
1 on a cluster of fewer than 3 brokers (a local or CI broker cannot hold more replicas),
3 on a cluster of 3 or more (a broker can fail without losing data), the broker count
read from the cluster's metadata.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import kafka.errors as kafka_errors
from kafka.admin import KafkaAdminClient

__all__ = [
    "AUTO_REPLICATION",
    "TopicSpec",
    "admin_client",
    "broker_count",
    "choose_replication_factor",
    "create_topics",
    "ensure_topic",
    "replication_factor",
]

#: ``kafka.replication_factor = 0``: choose from the cluster's size.
AUTO_REPLICATION = 0
#: Smallest cluster that gets the replicated default, and that default.
REPLICATED_BROKERS = 3

_TOPIC_EXISTS = kafka_errors.TopicAlreadyExistsError.errno


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: its partition count and topic-level settings."""

    partitions: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)


def choose_replication_factor(brokers: int, configured: int = AUTO_REPLICATION) -> int:
    """The replication factor for new topics on a cluster of ``brokers`` brokers.

    ``configured`` (``kafka.replication_factor``) wins when it is 1 or more; 0 means 1
    below 3 brokers and 3 from 3 brokers on.
    """
    if configured < 0:
        raise ValueError(f"replication factor must be 0 (automatic) or >= 1, got {configured}")
    if configured:
        return configured
    if brokers < 1:
        raise ValueError(f"a cluster has at least one broker, got {brokers}")
    return REPLICATED_BROKERS if brokers >= REPLICATED_BROKERS else 1


@contextmanager
def admin_client(
    bootstrap: str, client_id: str = "firelake-admin", timeout_s: float = 30.0
) -> Iterator[KafkaAdminClient]:
    """An admin client for ``bootstrap`` (requests and bootstrap bounded by ``timeout_s``),
    closed on exit."""
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
    )
    try:
        yield admin
    finally:
        admin.close()


def broker_count(admin: KafkaAdminClient) -> int:
    """How many live (unfenced) brokers the cluster has, from its metadata."""
    brokers = admin.describe_cluster()["brokers"]
    return sum(1 for broker in brokers if not broker.get("is_fenced"))


def replication_factor(admin: KafkaAdminClient, configured: int = AUTO_REPLICATION) -> int:
    """The replication factor for new topics: ``configured``, or chosen by cluster size."""
    if configured:
        return choose_replication_factor(0, configured)
    return choose_replication_factor(broker_count(admin))


def create_topics(
    admin: KafkaAdminClient,
    topics: Mapping[str, TopicSpec],
    configured_replication: int = AUTO_REPLICATION,
    timeout_s: float = 30.0,
) -> dict[str, tuple[int, str | None]]:
    """Ask the broker to create ``topics``; never raises for a topic's own error.

    Returns each topic's (error code, error message): 0 created, else the broker's
    refusal (``TopicAlreadyExistsError.errno`` for one that exists). The caller decides.
    """
    factor = replication_factor(admin, configured_replication)
    result = admin.create_topics(
        {
            name: {
                "num_partitions": spec.partitions,
                "replication_factor": factor,
                "configs": dict(spec.configs),
            }
            for name, spec in topics.items()
        },
        timeout_ms=int(timeout_s * 1000),
        raise_errors=False,
    )
    return {t["name"]: (t["error_code"], t["error_message"]) for t in result["topics"]}


def ensure_topic(
    admin: KafkaAdminClient,
    name: str,
    spec: TopicSpec | None = None,
    configured_replication: int = AUTO_REPLICATION,
    timeout_s: float = 30.0,
) -> bool:
    """Create a topic unless it exists; True when this call created it (and it is ready).

    An existing topic is left as it is. Any other refusal raises the broker's error,
    naming the topic.
    """
    results = create_topics(admin, {name: spec or TopicSpec()}, configured_replication, timeout_s)
    code, message = results[name]
    if code == _TOPIC_EXISTS:
        return False
    if code:
        error = kafka_errors.for_code(code)
        raise error(f"cannot create topic {name!r}: {message or error.__name__}")
    admin.wait_for_topics([name], timeout_ms=int(timeout_s * 1000))
    return True

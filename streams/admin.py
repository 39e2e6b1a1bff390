"""The one way Firelake talks to Kafka's admin API: a client, and topic creation.

Administration only (kafka-python's ``KafkaAdminClient``), never the hot path. Every
admin client is made by :func:`admin_client` (same timeouts everywhere, always closed),
and every topic is created by :func:`create_topics` / :func:`ensure_topic`, which pick the
replication factor in one place: ``kafka.replication_factor`` when set, else automatic —
1 on a cluster of fewer than 3 brokers (a local or CI broker cannot hold more replicas),
3 on a cluster of 3 or more (a broker can fail without losing data), the broker count
read from the cluster's metadata. A stream's own ``replication_factor`` wins over both.
Every topic also gets ``min.insync.replicas`` (a stream's own, else 2 from 3 replicas on,
else 1): with producers on ``acks=all`` a write is acknowledged only once that many
replicas hold it, so losing one broker of three loses no acknowledged event.
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
    "choose_min_insync_replicas",
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
    """A topic to create: its partition count and topic-level settings.

    ``replication`` and ``min_insync`` are the stream's own settings; 0 leaves them to
    the configured or automatic choice (:func:`create_topics`).
    """

    partitions: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)
    replication: int = AUTO_REPLICATION
    min_insync: int = AUTO_REPLICATION


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


def choose_min_insync_replicas(factor: int, configured: int = AUTO_REPLICATION) -> int:
    """The ``min.insync.replicas`` of a topic with ``factor`` replicas.

    ``configured`` wins when it is 1 or more (it cannot exceed ``factor``: no write could
    be acknowledged); 0 means 2 from 3 replicas on (one replica may be lost, or lag,
    without refusing writes) and 1 below.
    """
    if factor < 1:
        raise ValueError(f"replication factor must be >= 1, got {factor}")
    if configured < 0 or configured > factor:
        raise ValueError(
            f"min.insync.replicas must be 0 (automatic) or 1..{factor} (the replicas), "
            f"got {configured}"
        )
    if configured:
        return configured
    return 2 if factor >= REPLICATED_BROKERS else 1


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

    Each topic gets its spec's replication factor, else ``configured_replication``, else
    the automatic one, and ``min.insync.replicas`` to match (its spec's, or
    :func:`choose_min_insync_replicas`, capped at the factor: a stream asking for 2 gets 1
    on a one-broker box; a ``configs`` entry of that name wins).
    Returns each topic's (error code, error message): 0 created, else the broker's
    refusal (``TopicAlreadyExistsError.errno`` for one that exists). The caller decides.
    """
    default_factor: int | None = None
    requests: dict[str, dict[str, object]] = {}
    for name, spec in topics.items():
        factor = spec.replication
        if not factor:
            if default_factor is None:
                default_factor = replication_factor(admin, configured_replication)
            factor = default_factor
        in_sync = choose_min_insync_replicas(factor, min(spec.min_insync, factor))
        requests[name] = {
            "num_partitions": spec.partitions,
            "replication_factor": factor,
            "configs": {"min.insync.replicas": str(in_sync), **spec.configs},
        }
    result = admin.create_topics(
        requests,
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

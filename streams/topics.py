"""The Kafka topics behind the configured streams: create them, check them, delete them.

Administration only (``streams.admin``), never the hot path. Every stream of the
configuration is a topic with its declared partition count, its retention, a message size
limit big enough for a full PutRecords envelope, and the replication factor and
``min.insync.replicas`` ``streams.admin`` picks (the stream's own, else
``kafka.replication_factor``, else by cluster size; in-sync replicas to match). An existing
topic is never altered: a partition count that differs from the configuration would send
keys to other partitions than producers and readers expect, so it is refused with
:class:`TopicMismatchError`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import kafka.errors as kafka_errors
from kafka.admin import KafkaAdminClient

from firelake.config import FirelakeConfig, StreamConfig
from streams.admin import TopicSpec, admin_client, create_topics

__all__ = [
    "MAX_MESSAGE_BYTES",
    "TopicError",
    "TopicMismatchError",
    "delete_topics",
    "ensure_topics",
    "topic_configs",
]

log = logging.getLogger(__name__)

MiB = 1024 * 1024

#: Largest Kafka message on every Firelake topic (topic ``max.message.bytes``). The broker's
#: default (~1 MiB) is too small for an envelope of a 5 MiB request with its keys header;
#: producers set ``max_request_size`` to this too.
MAX_MESSAGE_BYTES = 8 * MiB

_UNKNOWN_TOPIC = kafka_errors.UnknownTopicOrPartitionError.errno
_TOPIC_EXISTS = kafka_errors.TopicAlreadyExistsError.errno


class TopicError(RuntimeError):
    """A topic the broker refused or failed to create, describe or delete; names the topic."""

    def __init__(self, topic: str, message: str) -> None:
        self.topic = topic
        super().__init__(message)


class TopicMismatchError(TopicError):
    """An existing topic whose partition count differs from its stream's configuration."""

    def __init__(self, stream: str, declared: int, actual: int) -> None:
        self.stream = stream
        self.declared = declared
        self.actual = actual
        super().__init__(
            stream,
            f"stream {stream!r} declares {declared} partitions but its topic has {actual}; "
            f"set streams.{stream}.partitions = {actual} or delete the topic",
        )


def _broker_error(topic: str, operation: str, code: int, message: str | None = None) -> TopicError:
    error = kafka_errors.for_code(code).__name__
    detail = f"{error}: {message}" if message else error
    return TopicError(topic, f"cannot {operation} topic {topic!r}: {detail}")


def topic_configs(stream: StreamConfig) -> dict[str, str]:
    """The topic-level settings of a stream's topic."""
    return {
        "retention.ms": str(stream.retention_hours * 3_600_000),
        "max.message.bytes": str(MAX_MESSAGE_BYTES),
    }


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int | None]:
    """Partition count of each topic, ``None`` for a topic that does not exist."""
    counts: dict[str, int | None] = {}
    for info in admin.describe_topics(names):
        name = info["name"]
        code = info.get("error_code", 0)
        if code == _UNKNOWN_TOPIC:
            counts[name] = None
        elif code:
            raise _broker_error(name, "describe", code)
        else:
            counts[name] = len(info.get("partitions") or ())
    return counts


def _check(stream: StreamConfig, actual: int | None) -> None:
    if actual is not None and actual != stream.partitions:
        raise TopicMismatchError(stream.name, stream.partitions, actual)


def ensure_topics(config: FirelakeConfig, bootstrap: str, timeout_s: float = 30.0) -> list[str]:
    """Create the topic of every configured stream that lacks one; check the others.

    Existing topics are checked before anything is created, so a mismatch
    (:class:`TopicMismatchError`) leaves the broker untouched. A topic created concurrently
    by another process is re-checked like an existing one. Returns the names this call
    created, once each has a leader for every partition.
    """
    streams = dict(config.streams)
    if not streams:
        return []
    with admin_client(bootstrap, f"{config.kafka.client_id}-admin", timeout_s) as admin:
        counts = _partition_counts(admin, list(streams))
        for name, stream in streams.items():
            _check(stream, counts.get(name))
        missing = [name for name in streams if counts.get(name) is None]
        if not missing:
            return []
        results = create_topics(
            admin,
            {
                name: TopicSpec(
                    streams[name].partitions,
                    topic_configs(streams[name]),
                    streams[name].replication_factor,
                    streams[name].min_insync_replicas,
                )
                for name in missing
            },
            config.kafka.replication_factor,
            timeout_s,
        )
        created: list[str] = []
        raced: list[str] = []
        for name, (code, message) in results.items():
            if code == 0:
                created.append(name)
            elif code == _TOPIC_EXISTS:
                raced.append(name)
            else:
                raise _broker_error(name, "create", code, message)
        if raced:
            # Another process created these between our describe and create: check theirs.
            recount = _partition_counts(admin, raced)
            for name in raced:
                _check(streams[name], recount.get(name))
        if created:
            admin.wait_for_topics(created, timeout_ms=int(timeout_s * 1000))
            log.info("created topics %s", ", ".join(created))
        return created


def delete_topics(
    bootstrap: str,
    names: Iterable[str],
    timeout_s: float = 30.0,
    client_id: str = "firelake-admin",
) -> list[str]:
    """Delete topics (tooling and tests); topics that do not exist are skipped.

    Returns the names deleted.
    """
    names = list(names)
    if not names:
        return []
    with admin_client(bootstrap, client_id, timeout_s) as admin:
        result = admin.delete_topics(names, timeout_ms=int(timeout_s * 1000), raise_errors=False)
    deleted = []
    for topic in result["topics"]:
        code = topic["error_code"]
        if code == 0:
            deleted.append(topic["name"])
        elif code != _UNKNOWN_TOPIC:
            raise _broker_error(topic["name"], "delete", code, topic["error_message"])
    return deleted

"""How far each sink is behind, measured where it counts: the lake's state against the stream.

A sink's Kafka offset commit is advisory (``sinks.progress``): the lake's state files record
what is stored. So lag here is the stream's end offset minus the next offset the lake's
state says is to be written, per partition — the number that stays up when a sinks process
is down or was given up on, which the group's committed offsets would not show for a new
lake. Freshness is the age of the newest state file (the last committed flush).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition

from firelake.config import FirelakeConfig
from sinks.destinations import destination_for
from sinks.progress import ProgressStore

__all__ = ["SinkStatus", "render_sinks", "sink_status"]


@dataclass
class SinkStatus:
    """One sink: messages of its stream not in the lake yet, per partition; last flush."""

    name: str
    table: str
    stream: str
    lag: dict[int, int] = field(default_factory=dict)
    last_flush: datetime | None = None
    #: Why the lag could not be measured (a missing topic, an unreadable state), if so.
    error: str = ""


def sink_status(config: FirelakeConfig, bootstrap: str) -> list[SinkStatus]:
    """The status of every configured sink."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        found = []
        for name, spec in config.sinks.items():
            status = SinkStatus(name, spec.table, spec.stream)
            found.append(status)
            try:
                _measure(status, config, consumer)
            except Exception as exc:  # one unreadable sink must not hide the others
                status.error = f"{type(exc).__name__}: {exc}"
        return found
    finally:
        consumer.close()


def _measure(status: SinkStatus, config: FirelakeConfig, consumer: KafkaConsumer) -> None:
    spec = config.sinks[status.name]
    store = ProgressStore(destination_for(config, spec), status.name)
    partitions = config.streams[spec.stream].partitions
    tps = [KafkaTopicPartition(spec.stream, p) for p in range(partitions)]
    ends = consumer.end_offsets(tps)
    begins = consumer.beginning_offsets(tps)
    for tp in tps:
        state = store.state(spec.stream, tp.partition)
        done = state.last_offset + 1 if state is not None else begins[tp]
        status.lag[tp.partition] = max(0, ends[tp] - max(done, begins[tp]))
        if state is not None:
            flushed = datetime.fromisoformat(state.updated_at.replace("Z", "+00:00"))
            if status.last_flush is None or flushed > status.last_flush:
                status.last_flush = flushed


def render_sinks(statuses: list[SinkStatus], now: datetime | None = None) -> str:
    """The human-readable report."""
    now = now or datetime.now(UTC)
    lines = []
    for status in statuses:
        if status.error:
            lines.append(f"sink {status.name}: lag unknown ({status.error})")
            continue
        total = sum(status.lag.values())
        if status.last_flush is None:
            fresh = "nothing written yet"
        else:
            fresh = f"last flush {(now - status.last_flush).total_seconds():.0f}s ago"
        lines.append(
            f"sink {status.name} ({status.stream} -> {status.table}): lag {total} messages, {fresh}"
        )
        for partition, lag in sorted(status.lag.items()):
            if lag:
                lines.append(f"  {status.stream}[{partition}]  lag {lag}")
    return "\n".join(lines)

"""``firelake status``: every router's consumer lag per partition and its live counters.

Lag comes from Kafka (the group's committed offset against each partition's end), so it is
right even when no worker runs — that is when it matters. Counters come from the workers'
Prometheus endpoints (``metrics_port``) when they serve one.
"""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition

from agents.edge import app_id
from agents.metrics import metrics_ports
from firelake.config import FirelakeConfig
from streams.admin import admin_client

__all__ = ["RouterStatus", "render", "router_status", "scrape"]

_SHOWN = ("events_in", "routed", "filtered", "duplicates", "dropped", "retried", "dead_lettered")


@dataclass
class RouterStatus:
    """One router: lag per (topic, partition) and counters summed over its workers."""

    name: str
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    endpoints: list[str] = field(default_factory=list)


def scrape(url: str, timeout: float = 2.0) -> dict[str, float]:
    """firelake_router_* samples of one /metrics page, summed over labels (name -> value)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode("utf-8")
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("firelake_router_") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        metric = name.split("{", 1)[0].removeprefix("firelake_router_").removesuffix("_total")
        values[metric] = values.get(metric, 0.0) + float(value)
    return values


def router_status(config: FirelakeConfig, bootstrap: str) -> list[RouterStatus]:
    """Status of every configured router."""
    with (
        admin_client(bootstrap, f"{config.kafka.client_id}-admin") as admin,
        contextlib.closing(KafkaConsumer(bootstrap_servers=bootstrap)) as consumer,
    ):
        found = []
        for name, spec in config.routers.items():
            status = RouterStatus(name)
            group = app_id(name)
            committed = admin.list_group_offsets(group).get(group, {})
            tps = [
                KafkaTopicPartition(topic, p)
                for topic in spec.sources
                for p in range(config.streams[topic].partitions)
            ]
            ends = consumer.end_offsets(tps)
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                status.lag[(tp.topic, tp.partition)] = max(0, ends[tp] - done)
            if spec.metrics_port:
                for port in metrics_ports(spec):
                    url = f"http://127.0.0.1:{port}/metrics"
                    try:
                        sample = scrape(url)
                    except (urllib.error.URLError, OSError):
                        continue
                    status.endpoints.append(url)
                    for metric, value in sample.items():
                        status.counters[metric] = status.counters.get(metric, 0.0) + value
            found.append(status)
        return found


def render(statuses: list[RouterStatus]) -> str:
    """The human-readable report."""
    lines = []
    for status in statuses:
        total = sum(status.lag.values())
        lines.append(f"router {status.name}: lag {total}")
        for (topic, partition), lag in sorted(status.lag.items()):
            lines.append(f"  {topic}[{partition}]  lag {lag}")
        if status.endpoints:
            shown = "  ".join(f"{name}={int(status.counters.get(name, 0))}" for name in _SHOWN)
            lines.append(f"  {shown}  ({len(status.endpoints)} worker(s) reporting)")
        else:
            lines.append("  no worker metrics (not running, or metrics_port = 0)")
    return "\n".join(lines)

"""A sink's metrics show only the partitions it owns: a revoke takes the others out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import TopicPartition

from firelake.testing import example_config
from sinks.sink import ParquetSink


def test_a_revoked_partition_leaves_the_lag_metrics(tmp_path: Path) -> None:
    config = example_config("127.0.0.1:1", tmp_path)
    name = next(n for n in config.sinks if n.startswith("playback-"))
    sink = ParquetSink(config, name)  # no broker is contacted before run()
    sink.stats.lag.update({0: 5, 1: 3})
    sink.stats.last_flush_rows.update({0: 100, 1: 7})
    asyncio.run(sink._on_revoked([TopicPartition(sink.topic, 0), TopicPartition("other", 1)]))
    assert sink.stats.lag == {1: 3} and sink.stats.last_flush_rows == {1: 7}

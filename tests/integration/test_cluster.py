"""Three real brokers: replicated topics by default, and a partition leader's crash survived.

A module-wide :class:`firelake.broker.LocalCluster` of three KRaft nodes (on free ports
under tmp, always stopped) proves the cluster mode of issue 16:

1. topics Firelake creates on it get three replicas and ``min.insync.replicas = 2``
   without any setting, and a stream's own settings win; ``firelake kafka status`` and
   ``firelake streams create`` find the cluster through ``kafka.data_dir``;
2. while a client sends steady load through the native ingest -> raw stream -> router ->
   sinks (``firelake up`` pointed at the cluster), the broker that leads the raw stream's
   partition 0 is SIGKILLed, and later restarted: every accepted event is in the lake
   exactly once, and every request was answered within the ingest's answer deadline.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from firelake.broker import BrokerError, LocalCluster
from firelake.config import load_config
from firelake.testing import (
    example_config,
    example_data,
    example_dict,
    free_port,
    run_cli,
    running_pipeline,
    write_config,
)
from streams.admin import admin_client
from streams.topics import ensure_topics
from tests.integration.loadkit import (
    Load,
    assert_lake_exactly_once,
    lake_ids,
    send_load,
    wait_progress,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]

#: The ingest's answer deadline in this test, and the slack on top (a loaded 2-core box).
DEADLINE_S = 5.0
SLACK_S = 3.0
#: How long the leader stays dead while the load goes on.
DOWN_S = 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three combined broker+controller nodes on free ports; stopped however the tests end."""
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), brokers=3, port=0)
    try:
        local.start(timeout=180)
    except BrokerError as exc:
        pytest.fail(f"the three-broker cluster did not start: {exc}", pytrace=False)
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def own_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The services must use the cluster, not a broker the environment names."""
    monkeypatch.delenv("FIRELAKE_KAFKA_BOOTSTRAP", raising=False)


def partitions(bootstrap: str, topic: str) -> dict[int, dict[str, Any]]:
    """The topic's partitions by index: leader, replicas and in-sync replicas."""
    with admin_client(bootstrap, "firelake-test-admin", timeout_s=15) as admin:
        (info,) = admin.describe_topics([topic])
    return {p["partition_index"]: p for p in info["partitions"]}


def min_insync(bootstrap: str, topic: str) -> str:
    with admin_client(bootstrap, "firelake-test-admin", timeout_s=15) as admin:
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return str(configs["topic"][topic]["min.insync.replicas"]["value"])


def wait_for(what: str, check: Any, seconds: float) -> Any:
    """Poll ``check()`` (bounded) until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # a node is down: metadata may fail; retry
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {seconds:.0f} s (last: {last!r})")


def test_topics_get_three_replicas_and_two_in_sync_by_default(
    cluster: LocalCluster, tmp_path: Path, suffix: str
) -> None:
    data = {
        "streams": {
            "raw-events": {"partitions": 2},
            "dlq": {"partitions": 1, "replication_factor": 2, "min_insync_replicas": 1},
        }
    }
    config = example_config(cluster.bootstrap, tmp_path, suffix, data=data)
    assert config.kafka.replication_factor == 0  # automatic
    raw, dlq = f"raw-events-{suffix}", f"dlq-{suffix}"
    assert sorted(ensure_topics(config, cluster.bootstrap)) == sorted([raw, dlq])
    for partition in partitions(cluster.bootstrap, raw).values():
        assert sorted(partition["replica_nodes"]) == [1, 2, 3]
        assert sorted(partition["isr_nodes"]) == [1, 2, 3]
    assert min_insync(cluster.bootstrap, raw) == "2"
    # A stream's own settings win over the automatic ones.
    assert {len(p["replica_nodes"]) for p in partitions(cluster.bootstrap, dlq).values()} == {2}
    assert min_insync(cluster.bootstrap, dlq) == "1"


def test_the_cli_finds_the_cluster_by_its_data_folder(
    cluster: LocalCluster, tmp_path: Path, suffix: str, own_bootstrap: None
) -> None:
    data = {"streams": {"raw-events": {"partitions": 1}}}
    kafka = {"data_dir": str(cluster.data_dir), "port": cluster.port}
    path = write_config(
        tmp_path / "firelake.toml", example_dict("", tmp_path, suffix, data, kafka=kafka)
    )
    status = run_cli(path, "kafka", "status")
    assert "running: True" in status and f"bootstrap: {cluster.bootstrap}" in status, status
    assert f"already running at {cluster.bootstrap}" in run_cli(
        path, "kafka", "start", "--brokers", "3"
    )
    run_cli(path, "streams", "create", timeout=90)  # no bootstrap configured: the cluster's
    (partition,) = partitions(cluster.bootstrap, f"raw-events-{suffix}").values()
    assert sorted(partition["replica_nodes"]) == [1, 2, 3]


def test_events_survive_the_sigkill_of_the_raw_streams_leader(
    cluster: LocalCluster, tmp_path: Path, suffix: str, own_bootstrap: None
) -> None:
    data = example_data()
    data["windows"] = {}
    data["streams"] = {
        "raw-events": {**data["streams"]["raw-events"], "partitions": 2},
        "playback-events": {**data["streams"]["playback-events"], "partitions": 2},
        "page-events": {**data["streams"]["page-events"], "partitions": 2},
        "dlq": data["streams"]["dlq"],
    }
    data["sinks"] = {
        name: {**sink, "max_seconds": 1}
        for name, sink in data["sinks"].items()
        if name in ("playback", "page", "dlq")
    }
    ingest_port = free_port()
    raw = example_dict(
        cluster.bootstrap,
        tmp_path / "lake",
        suffix,
        data,
        ingest={"port": ingest_port, "answer_deadline_seconds": DEADLINE_S},
    )
    path = write_config(tmp_path / "firelake.toml", raw)
    config = load_config(path, environ={})
    tables = [sink.table for sink in config.sinks.values()]
    raw_stream = next(iter(config.routers.values())).source
    load = Load(prefix=f"cluster-{suffix}", deadline_s=DEADLINE_S, slack_s=SLACK_S)
    with running_pipeline(path, ingest_port, tmp_path / "up.log", start_timeout=180) as base:
        url = f"{base}/v1/streams/{raw_stream}/records"
        sender = threading.Thread(target=lambda: asyncio.run(send_load(url, load)), daemon=True)
        sender.start()
        try:
            wait_progress(load, 60, "the start")
            wait_for("the first rows in the lake", lambda: lake_ids(config.lake_root, tables), 90)
            assert sorted(partitions(cluster.bootstrap, raw_stream)[0]["replica_nodes"]) == [
                1,
                2,
                3,
            ]

            # The leader of the raw stream's partition 0 crashes; a survivor takes over.
            leader = int(partitions(cluster.bootstrap, raw_stream)[0]["leader_id"])
            victim = cluster.node(leader)
            victim.kill()
            killed = time.monotonic()
            new_leader = wait_for(
                "a new leader of partition 0",
                lambda: (
                    p["leader_id"]
                    if (p := partitions(cluster.bootstrap, raw_stream)[0])["leader_id"]
                    not in (leader, -1)
                    else None
                ),
                45,
            )
            wait_progress(load, 60, f"the SIGKILL of broker {leader}")
            time.sleep(max(0.0, DOWN_S - (time.monotonic() - killed)))

            # It comes back and catches up.
            victim.start(timeout=120)
            wait_for(
                f"broker {leader} back in partition 0's in-sync replicas",
                lambda: leader in partitions(cluster.bootstrap, raw_stream)[0]["isr_nodes"],
                90,
            )
            wait_progress(load, 60, f"the restart of broker {leader}")

            # Drain: no new records; retry until every record was accepted.
            with load.lock:
                load.new_records = False
            wait_for("every record accepted", lambda: load.settled, 90)
        finally:
            load.stop = True
            sender.join(60)

        # The lake: exactly one row per accepted record, failed-then-retried ones included.
        assert_lake_exactly_once(load, config.lake_root, tables, 90)
    # Every request was answered within the ingest's deadline (plus the slack).
    assert not load.late, (sorted(load.late)[-5:], dict(load.answers))
    print(
        f"cluster failover: broker {leader} killed, partition 0 now led by {new_leader}; "
        f"{len(load.accepted)} records accepted, "
        f"{len(load.failed_then_retried & load.accepted)} after a failure; "
        f"answers {dict(load.answers)}; slowest {load.slowest:.1f}s"
    )

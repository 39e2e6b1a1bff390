"""Unit tests for the local cluster's layout (firelake.broker.LocalCluster); no JVM starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firelake.broker import (
    BrokerError,
    LocalBroker,
    LocalCluster,
    cluster_properties,
    local_kafka,
)


def parse_properties(text: str) -> dict[str, str]:
    pairs = (line.partition("=") for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, _, value in pairs}


def test_three_nodes_one_quorum_with_replicated_internal_topics(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", brokers=3, port=19200)
    assert [(n.node_id, n.port, n.controller_port) for n in cluster.nodes] == [
        (1, 19200, 19201),
        (2, 19202, 19203),
        (3, 19204, 19205),
    ]
    assert cluster.bootstrap == "127.0.0.1:19200,127.0.0.1:19202,127.0.0.1:19204"
    props = [parse_properties(node.render_properties()) for node in cluster.nodes]
    voters = "1@127.0.0.1:19201,2@127.0.0.1:19203,3@127.0.0.1:19205"
    assert {p["controller.quorum.voters"] for p in props} == {voters}
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert {n.cluster_id for n in cluster.nodes} == {cluster.cluster_id}
    assert {n.data_dir for n in cluster.nodes} == {tmp_path / "c" / f"node-{i}" for i in (1, 2, 3)}
    for p in props:
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"
        assert p["min.insync.replicas"] == "2"


def test_a_one_node_cluster_keeps_single_replicas() -> None:
    props = cluster_properties({1: 9093})
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"


def test_port_zero_picks_distinct_free_ports(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, brokers=3, port=0)
    ports = [p for n in cluster.nodes for p in (n.port, n.controller_port)]
    assert len(set(ports)) == 6 and all(0 < p < 65536 for p in ports)
    assert cluster.port == cluster.nodes[0].port


def test_the_recorded_layout_is_the_clusters_identity(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, brokers=3, port=0)
    cluster.layout_file.write_text(
        json.dumps(
            {
                "brokers": 3,
                "cluster_id": cluster.cluster_id,
                "ports": [[n.port, n.controller_port] for n in cluster.nodes],
            }
        )
    )
    again = LocalCluster(tmp_path, brokers=3, port=9092)  # the layout wins over the port
    assert again.bootstrap == cluster.bootstrap and again.cluster_id == cluster.cluster_id
    found = LocalCluster.find(tmp_path)
    assert found is not None and found.bootstrap == cluster.bootstrap
    assert isinstance(local_kafka(tmp_path), LocalCluster)
    with pytest.raises(BrokerError, match="holds a 3-broker cluster, not 5"):
        LocalCluster(tmp_path, brokers=5)
    with pytest.raises(BrokerError, match="holds a 3-broker cluster, not 2"):
        local_kafka(tmp_path, brokers=2)


def test_a_damaged_layout_is_named(tmp_path: Path) -> None:
    (tmp_path / "cluster.json").write_text("{not json")
    with pytest.raises(BrokerError, match=r"cluster\.json"):
        LocalCluster(tmp_path, brokers=3)
    assert LocalCluster.find(tmp_path) is None


def test_local_kafka_picks_broker_or_new_cluster(tmp_path: Path) -> None:
    assert isinstance(local_kafka(tmp_path / "a", 9092), LocalBroker)
    assert isinstance(local_kafka(tmp_path / "a", 9092, brokers=1), LocalBroker)
    cluster = local_kafka(tmp_path / "b", 19300, brokers=3)
    assert isinstance(cluster, LocalCluster) and cluster.port == 19300
    assert not cluster.layout_file.exists()  # written by the first start only


def test_stopped_cluster_status_names_each_node(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, brokers=3, port=19400)
    status = cluster.status()
    assert status["running"] is False and status["brokers"] == 3
    assert status["node-2"].startswith("stopped on 127.0.0.1:19402")
    assert cluster.pid() is None
    cluster.stop()  # nothing runs: a no-op
    with pytest.raises(ValueError, match="no node 4"):
        cluster.node(4)

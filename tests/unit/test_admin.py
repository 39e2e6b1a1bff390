"""Replication of new topics: the factor (configured, or chosen from the cluster's size)
and min.insync.replicas (configured, or chosen from the factor)."""

from __future__ import annotations

import pytest

from firelake.config import ConfigError, parse_config
from streams.admin import (
    AUTO_REPLICATION,
    choose_min_insync_replicas,
    choose_replication_factor,
)


@pytest.mark.parametrize(("brokers", "factor"), [(1, 1), (2, 1), (3, 3), (4, 3), (9, 3)])
def test_automatic_factor_is_1_below_3_brokers_and_3_from_3_on(brokers: int, factor: int) -> None:
    assert choose_replication_factor(brokers) == factor
    assert choose_replication_factor(brokers, AUTO_REPLICATION) == factor


@pytest.mark.parametrize("brokers", [1, 3, 5])
def test_a_configured_factor_wins_whatever_the_cluster(brokers: int) -> None:
    assert choose_replication_factor(brokers, 2) == 2


def test_bad_inputs_name_what_was_wrong() -> None:
    with pytest.raises(ValueError, match=r"0 \(automatic\) or >= 1, got -1"):
        choose_replication_factor(3, -1)
    with pytest.raises(ValueError, match="at least one broker, got 0"):
        choose_replication_factor(0)


def test_config_replication_factor_defaults_to_automatic_and_refuses_negatives() -> None:
    assert parse_config({}).kafka.replication_factor == AUTO_REPLICATION == 0
    assert parse_config({"kafka": {"replication_factor": 3}}).kafka.replication_factor == 3
    with pytest.raises(ConfigError, match=r"kafka\.replication_factor"):
        parse_config({"kafka": {"replication_factor": -1}})


@pytest.mark.parametrize(("factor", "in_sync"), [(1, 1), (2, 1), (3, 2), (5, 2)])
def test_automatic_min_insync_is_2_from_3_replicas_on(factor: int, in_sync: int) -> None:
    assert choose_min_insync_replicas(factor) == in_sync
    assert choose_min_insync_replicas(factor, 1) == 1  # a configured one wins
    assert choose_min_insync_replicas(factor, factor) == factor


def test_min_insync_beyond_the_replicas_is_refused() -> None:
    with pytest.raises(ValueError, match=r"1\.\.3 \(the replicas\), got 4"):
        choose_min_insync_replicas(3, 4)
    with pytest.raises(ValueError, match="replication factor must be >= 1, got 0"):
        choose_min_insync_replicas(0)


def test_stream_replication_settings_default_to_automatic_and_are_checked() -> None:
    def stream(**settings: int) -> dict[str, object]:
        return {"streams": {"raw": {"partitions": 1, **settings}}}

    raw = parse_config(stream()).streams["raw"]
    assert (raw.replication_factor, raw.min_insync_replicas) == (0, 0)
    raw = parse_config(stream(replication_factor=3, min_insync_replicas=2)).streams["raw"]
    assert (raw.replication_factor, raw.min_insync_replicas) == (3, 2)
    assert parse_config(stream(min_insync_replicas=2)).streams["raw"].min_insync_replicas == 2
    with pytest.raises(ConfigError, match=r"streams\.raw\.min_insync_replicas.*exceeds"):
        parse_config(stream(replication_factor=2, min_insync_replicas=3))
    with pytest.raises(ConfigError, match=r"streams\.raw\.replication_factor"):
        parse_config(stream(replication_factor=-1))

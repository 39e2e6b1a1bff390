"""The replication factor of new topics: configured, or chosen from the cluster's size."""

from __future__ import annotations

import pytest

from firelake.config import ConfigError, parse_config
from streams.admin import AUTO_REPLICATION, choose_replication_factor


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

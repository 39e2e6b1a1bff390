"""Shared fixtures: one real Kafka broker per test run, unique names, a lake per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from firelake.testing import unique_suffix


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address of a real broker: FIRELAKE_KAFKA_BOOTSTRAP, or one we start.

    A broker that cannot start fails the tests with its log's tail; they never skip.
    """
    external = os.environ.get("FIRELAKE_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    from firelake.broker import BrokerError, LocalBroker, free_port

    broker = LocalBroker(
        data_dir=tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=0
    )
    try:
        broker.start(timeout=120)
    except BrokerError as exc:
        pytest.fail(f"the Kafka broker did not start: {exc}", pytrace=False)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def suffix() -> str:
    """A unique suffix for this test's topics and consumer groups."""
    return unique_suffix()


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """An empty lake folder for this test."""
    root = tmp_path / "lake"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def firelake_bootstrap(kafka_bootstrap: str) -> str:
    """Replay cases (the ``firelake`` pytest plugin) share the session's broker."""
    return kafka_bootstrap

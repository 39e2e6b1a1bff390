"""Logging set-up shared by every Firelake process: one line per record, to stderr."""

from __future__ import annotations

import logging
import os

__all__ = ["setup_logging"]

_FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once; ``FIRELAKE_LOG_LEVEL`` overrides the default INFO."""
    level_name = (level or os.environ.get("FIRELAKE_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=getattr(logging, level_name, logging.INFO), format=_FORMAT)
    # Kafka clients are chatty at INFO about every rebalance and metadata refresh.
    for noisy in ("aiokafka", "kafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))

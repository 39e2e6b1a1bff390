"""The query service's background refresher re-scans the stale engine, never a fresh one."""

from __future__ import annotations

import time
from pathlib import Path

from firelake.config import load_config
from firelake.testing import write_config
from queries.service import QueryService


def test_the_refresher_leaves_a_fresh_engine_alone(tmp_path: Path, monkeypatch) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    path = write_config(tmp_path / "firelake.toml", {"lake": {"root": str(lake)}})
    # A long refresh_s: the background thread stays asleep; the test drives the rounds.
    service = QueryService(load_config(path, environ={}), engines=2, refresh_s=3600)
    try:
        stale = service._all[0]
        refreshed: list[object] = []
        for engine in service._all:
            monkeypatch.setattr(
                engine, "refresh", lambda engine=engine: refreshed.append(engine) or []
            )
        # Stale, but not so far behind that taking it refreshes it on the request path.
        service._refreshed[id(stale)] = time.monotonic() - 1.5 * service.refresh_s
        with service.engine() as busy:  # the stale engine runs a long query
            assert busy is stale
            assert service._refresh_stale() is False  # the idle engine is fresh
            assert refreshed == []
        # The query ended: the stale engine is refreshed when the refresher reaches it.
        rounds = [service._refresh_stale() for _ in range(2)]
        assert rounds.count(True) == 1 and refreshed == [stale]
        assert service._refresh_stale() is False  # both fresh now
    finally:
        service.close()

"""firelake.aio.ServerThread: one runner for the ingest and the query service threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from api.server import IngestThread
from firelake.aio import ServerThread
from queries.service import QueryServerThread


class Fake:
    """A server that records on which thread and loop it ran."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.events: list[str] = []
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return "http://127.0.0.1:1"

    async def start(self) -> None:
        self.thread = threading.current_thread()
        asyncio.get_running_loop()
        if self.fail is not None:
            raise self.fail
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")


def test_runs_the_server_on_its_own_thread_until_stopped() -> None:
    fake = Fake()
    with ServerThread(fake, "fake") as running:
        assert running.url == fake.url and fake.events == ["start"]
        assert fake.thread is not threading.current_thread()
        assert fake.thread is not None and fake.thread.name == "fake"
    assert fake.events == ["start", "stop"]
    assert not fake.thread.is_alive()
    running.stop()  # a second stop does nothing


def test_a_failed_start_is_raised_in_the_caller() -> None:
    fake = Fake(OSError("address in use"))
    with pytest.raises(OSError, match="address in use"):
        ServerThread(fake, "fake").start()
    assert fake.events == []


def test_the_ingest_and_query_threads_are_server_threads() -> None:
    assert issubclass(IngestThread, ServerThread)
    assert issubclass(QueryServerThread, ServerThread)

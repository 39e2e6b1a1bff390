"""The event loop Firelake's services run on: uvloop where it is installed.

uvloop (libuv under asyncio's API) cuts the per-callback and per-socket-write cost of the
loop, which the profiles of the ingest, router and sinks show as a tenth or more of their
CPU under load (``_SelectorSocketTransport.write``, ``_run_once``). Services call
:func:`run` instead of ``asyncio.run``; without uvloop it is ``asyncio.run``.
``FIRELAKE_EVENT_LOOP=asyncio`` keeps the standard loop (to compare, or to rule uvloop out).

:class:`ServerThread` runs a server (the ingest, the query service) on its own loop in a
background thread, for synchronous callers such as tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, Generic, Protocol, Self, TypeVar

__all__ = ["ServerThread", "loop_factory", "run"]

T = TypeVar("T")


def loop_factory() -> Any:
    """uvloop's loop class, or None for asyncio's own (not installed, or opted out)."""
    if os.environ.get("FIRELAKE_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the fastest loop available."""
    factory = loop_factory()
    if factory is None:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


class _Server(Protocol):
    """What :class:`ServerThread` runs: a server started and stopped on its event loop."""

    @property
    def url(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


S = TypeVar("S", bound=_Server)


class ServerThread(Generic[S]):
    """A server on its own event loop in a background thread, for synchronous callers.

    Tests and benchmarks that block their own thread (boto3, the AWS CLI, a browser)
    talk to the ingest or the query service through one of these:
    ``with ServerThread(server, "ingest") as running: running.url``. ``start`` returns
    once the server listens and raises what its start raised; ``stop`` stops it on its
    loop and waits for the thread.
    """

    def __init__(self, server: S, name: str, start_timeout_s: float = 60.0) -> None:
        self.server = server
        self.name = name
        self.start_timeout_s = start_timeout_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                await self.server.start()
            except BaseException as exc:
                self._error = exc
                self._started.set()
                return
            self._started.set()
            try:
                await self._stop.wait()
            finally:
                await self.server.stop()

        asyncio.run(main())

    def start(self) -> None:
        """Start the thread and wait until the server listens (or failed to start)."""
        self._started.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._started.wait(self.start_timeout_s):
            raise TimeoutError(f"the {self.name} did not start within {self.start_timeout_s} s")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server on its loop and wait for the thread (no-op when not started)."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

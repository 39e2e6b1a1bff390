"""The event loop Firelake's services run on: uvloop where it is installed.

uvloop (libuv under asyncio's API) cuts the per-callback and per-socket-write cost of the
loop, which the profiles of the ingest, router and sinks show as a tenth or more of their
CPU under load (``_SelectorSocketTransport.write``, ``_run_once``). Services call
:func:`run` instead of ``asyncio.run``; without uvloop it is ``asyncio.run``.
``FIRELAKE_EVENT_LOOP=asyncio`` keeps the standard loop (to compare, or to rule uvloop out).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "run"]

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

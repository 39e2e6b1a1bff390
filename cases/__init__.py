"""Stream replay tests: record a stream, replay it through a pipeline, compare SQL answers.

A *case* is a folder (``case.toml``, ``input/<stream>.jsonl``, ``expected/*.sql`` with their
rows) that ``firelake test`` and the pytest plugin (:mod:`cases.pytest_plugin`) run against
a real broker, each case on its own topics and its own lake. ``firelake record`` captures
the input from a live stream. The package sits above ``streams``, ``sinks`` and
``queries`` (it injects, waits and queries) and drives the routers, windows and sinks as a
user does, through ``firelake up`` in a child process, so it never imports ``agents``.
"""

__all__: list[str] = []

"""The query side loads no Kafka client and none of the sink write path, even lazily.

``queries`` reads the lake only: from ``sinks`` it may use the layout modules
(``sinks.paths``, ``sinks.manifest``, ``sinks.destinations``). Checked in a fresh
interpreter, since this test process has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Modules (and their submodules) a query must never load.
FORBIDDEN = (
    "aiokafka",
    "kafka",
    "faust",
    "sinks.parquet",
    "sinks.compaction",
    "sinks.sink",
    "sinks.archive",
)


def loaded_after_import(*modules: str) -> set[str]:
    """Every module in ``sys.modules`` of a fresh interpreter after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_the_query_engine_and_catalog_load_no_kafka_client_and_no_sink_machinery() -> None:
    loaded = loaded_after_import("queries.engine", "queries.catalog")
    found = sorted(
        name
        for name in loaded
        for banned in FORBIDDEN
        if name == banned or name.startswith(banned + ".")
    )
    assert found == [], f"a query imports {found}"
    assert "sinks.manifest" in loaded  # the live files come from the manifest module

"""The architecture rules hold as import contracts, and a forbidden import breaks them.

The contracts live in pyproject.toml (``[tool.importlinter]``) and README.md explains them.
The second test proves they are not vacuous: it copies the packages to a temporary folder,
adds one forbidden import, and expects ``lint-imports`` to fail naming it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("firelake", "streams", "sinks", "agents", "queries", "api")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_repository_keeps_every_contract() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture
def copy_of_the_tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # The query engine may not reach a Kafka client, even through another module.
        ("queries/engine.py", "import aiokafka", "Queries read the lake"),
        ("queries/engine.py", "import streams.replay", "Queries read the lake"),
        # A sink never imports an agent; the config never imports upward.
        ("sinks/paths.py", "import agents.routing", "Layers"),
        ("firelake/config.py", "import sinks.sink", "Layers"),
        # Streams never import sinks (the Firehose facade that joins them lives in api/).
        ("streams/topics.py", "import sinks.parquet", "Layers"),
        # Nothing imports the CLI.
        ("api/server.py", "import firelake.cli", "Layers"),
        # A pure core stays free of Kafka clients.
        ("agents/routing.py", "import kafka", "Pure cores"),
        # The grammars are leaves.
        ("firelake/grammars/prefix.py", "import firelake.config", "leaves"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    copy_of_the_tree: Path, module: str, line: str, contract: str
) -> None:
    target = copy_of_the_tree / module
    target.write_text(f"{target.read_text()}\n{line}  # forbidden\n")
    result = lint(copy_of_the_tree)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
    assert module.removesuffix(".py").replace("/", ".") in broken, result.stdout

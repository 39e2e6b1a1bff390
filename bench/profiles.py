"""Profiles of running stages with py-spy, and their top costs as text.

py-spy (PyPI) samples a running Python process from outside without changing it. A
benchmark records each stage's process for the timed section (``--profile DIR``: one
collapsed-stack file per stage, ``<stage>.txt``), and :func:`top_costs` names the
functions where the samples fall: *self* (the frame on top of the stack) and *inclusive*
(anywhere on it) shares of the stage's busy samples, idle waits left out.

``python -m bench.profiles DIR [--top N]`` prints the summary of every file in DIR.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ProfileRecorder", "render_top_costs", "top_costs"]

#: Frames of a process waiting, not working (the event loop's selector, thread waits).
_IDLE = ("select (selectors.py", "poll (selectors.py", "wait (threading.py", "_worker (")


class ProfileRecorder:
    """py-spy ``record`` on each stage's main process for ``seconds``, collapsed stacks."""

    def __init__(self, out: Path, stages: Mapping[str, int], seconds: float, rate: int = 50):
        self.out = out
        self.stages = stages
        self.seconds = seconds
        self.rate = rate
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        venv_spy = Path(sys.executable).parent / "py-spy"
        spy = str(venv_spy) if venv_spy.exists() else shutil.which("py-spy") or "py-spy"
        self.out.mkdir(parents=True, exist_ok=True)
        for stage, pid in self.stages.items():
            argv = [spy, "record", "--pid", str(pid), "--format", "raw", "--nonblocking"]
            argv += ["--rate", str(self.rate), "--duration", str(max(1, int(self.seconds)))]
            argv += ["--output", str(self.out / f"{stage}.txt")]
            self._procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def wait(self, timeout: float = 60.0) -> None:
        for proc in self._procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()


def _frame_name(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1].rstrip(")")
    return f"{name} ({file})" if file else name


Shares = list[tuple[str, float]]


def top_costs(path: Path, top: int = 12) -> tuple[int, Shares, Shares]:
    """(busy samples, top self shares, top inclusive shares) of a collapsed-stack file."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = 0
    for row in path.read_text().splitlines():
        stack, _, count_text = row.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if any(marker in frames[-1] for marker in _IDLE):
            continue
        count = int(count_text)
        busy += count
        names = [_frame_name(f) for f in frames[1:]]  # frames[0] is the thread
        if names:
            own[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
    if not busy:
        return 0, [], []

    def shares(counter: Counter[str]) -> Shares:
        return [(name, n / busy) for name, n in counter.most_common(top)]

    return busy, shares(own), shares(inclusive)


def render_top_costs(folder: Path, top: int = 12) -> str:
    """Markdown: per stage file, the top self and inclusive costs."""
    lines = []
    for path in sorted(folder.glob("*.txt")):
        busy, own, inclusive = top_costs(path, top)
        lines += [f"#### {path.stem} ({busy} busy samples)", "", "| self | % | inclusive | % |"]
        lines.append("| --- | ---: | --- | ---: |")
        for i in range(max(len(own), len(inclusive))):
            a = own[i] if i < len(own) else ("", 0.0)
            b = inclusive[i] if i < len(inclusive) else ("", 0.0)
            lines.append(f"| `{a[0]}` | {a[1]:.0%} | `{b[0]}` | {b[1]:.0%} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profiles", description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    print(render_top_costs(args.folder, args.top))


if __name__ == "__main__":
    main()

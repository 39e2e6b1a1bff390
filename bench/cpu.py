"""CPU time per process, per stage: the steady figure on a shared machine.

Events/s on these 2-core boxes swings by up to 2x with whatever else runs; the CPU seconds
a process spends on a run, divided by the run's events, barely moves. Each benchmark that
runs services in their own processes reads their CPU time from ``/proc/<pid>/stat`` (user +
system, all threads) before and after the timed section, and reports µs per event per stage
beside events/s.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "FIRELAKE_STAGES",
    "StageMeter",
    "cpu_seconds",
    "descendants",
    "listening_pid",
    "render_stage_table",
]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of processes (all their threads) from /proc; a process
    that is gone counts 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def descendants(pid: int) -> list[int]:
    """A process and its descendants (an ingest's workers, a broker's launcher child)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(k) for k in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def listening_pid(port: int) -> int | None:
    """The process listening on a loopback TCP port (the broker), or None if not found."""
    want = f":{port:04X}"
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[1].endswith(want) and cols[3] == "0A":  # 0A: LISTEN
                inodes.add(cols[9])
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


@dataclass
class StageMeter:
    """CPU seconds per named stage (a stage is a set of pids) between :meth:`start` and
    :meth:`stop`; stages measured elsewhere (a client reporting its own time) are added
    with :meth:`add`."""

    stages: Mapping[str, list[int]]
    spent: dict[str, float] = field(default_factory=dict)
    _before: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self._before = {name: cpu_seconds(pids) for name, pids in self.stages.items()}

    def stop(self) -> dict[str, float]:
        for name, pids in self.stages.items():
            self.spent[name] = cpu_seconds(pids) - self._before.get(name, 0.0)
        return self.spent

    def add(self, name: str, seconds: float) -> None:
        self.spent[name] = seconds


#: Stages that are Firelake's own work (the issue's ≤ 20 µs/event budget).
FIRELAKE_STAGES = ("ingest", "router", "sinks")


def render_stage_table(
    title: str, runs: Mapping[str, tuple[int, float, Mapping[str, float]]]
) -> str:
    """A Markdown table: per run (events, seconds, CPU seconds by stage), events/s, µs of
    CPU per event per stage, Firelake's own sum (ingest + router + sinks) and cores used."""
    names: list[str] = []
    for _, _, spent in runs.values():
        names += [n for n in spent if n not in names]
    head = " | ".join(f"{n} µs/ev" for n in names)
    lines = [
        f"#### {title}",
        "",
        f"| run | events/s | {head} | Firelake µs/ev | all µs/ev | cores busy |",
        "| --- | ---: | " + " | ".join("---:" for _ in names) + " | ---: | ---: | ---: |",
    ]
    for label, (events, seconds, spent) in runs.items():
        per = {n: spent.get(n, 0.0) / events * 1e6 if events else 0.0 for n in names}
        own = sum(per.get(n, 0.0) for n in FIRELAKE_STAGES)
        total = sum(per.values())
        cores = sum(spent.values()) / seconds if seconds else 0.0
        cells = " | ".join(f"{per[n]:.1f}" for n in names)
        rate = events / seconds if seconds else 0.0
        lines.append(
            f"| {label} | {rate:,.0f} | {cells} | **{own:.1f}** | {total:.1f} | {cores:.2f} |"
        )
    return "\n".join(lines) + "\n"

"""CPU accounting for ``bench.pg_workers``: CPU seconds and run-queue waits per group of
processes over a run, from /proc (Linux)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds) of a live process, or (0, 0.0) once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0, 0.0
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _runq_wait(pid: int) -> float:
    """Seconds a live process has spent runnable but waiting for a core (schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def children(ppid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _cpu(int(entry.name))[0] == ppid:
            found.append(int(entry.name))
    return found


def _busy() -> float:
    """CPU seconds the whole machine spent busy so far (every process, every core)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(v) for v in fields]
    return (sum(values) - values[3] - values[4]) / _TICK  # all but idle and iowait


Snapshot = dict[str, dict[int, float]]
#: Prefix of the parts that are run-queue waits (runnable, no core free), not CPU.
WAIT = "waiting "


@dataclass
class Usage:
    """CPU seconds per component over one timed run."""

    parts: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    @staticmethod
    def snapshot(groups: dict[str, Callable[[], list[int]]]) -> Snapshot:
        """CPU seconds of every process of each group now (the groups are looked up each
        time: a worker's pool may open a connection, that is a new backend, mid-run)."""
        out = {name: {p: _cpu(p)[1] for p in pids()} for name, pids in groups.items()}
        for name in ("workers", "postgres"):
            out[WAIT + name] = {p: _runq_wait(p) for p in groups[name]()}
        out["machine"] = {0: _busy()}
        return out

    @classmethod
    def between(cls, before: Snapshot, after: Snapshot, wall: float) -> Usage:
        parts = {
            name: sum(cpu - before[name].get(pid, 0.0) for pid, cpu in pids.items())
            for name, pids in after.items()
        }
        machine = parts.pop("machine")
        parts["other"] = machine - sum(v for k, v in parts.items() if not k.startswith(WAIT))
        return cls(parts, wall)

    @property
    def busy(self) -> float:
        """Cores busy on the machine during the run (everything, ours and others')."""
        cpu = sum(v for k, v in self.parts.items() if not k.startswith(WAIT))
        return cpu / self.wall if self.wall else 0.0

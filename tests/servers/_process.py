"""Stopping daemons that fork: find a process tree through /proc and make sure it is gone."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from tests.servers._util import pid_alive


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1])


def descendants(pid: int) -> set[int]:
    """Every live process below *pid* in the process tree (not *pid* itself)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent_of(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].startswith("Z")


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait until none of *pids* is running; return those still running after *timeout*."""
    deadline = time.monotonic() + timeout
    left = {p for p in pids if pid_alive(p) and not _zombie(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = {p for p in left if pid_alive(p) and not _zombie(p)}
    return left


def signal_all(pids: set[int], signum: signal.Signals) -> None:
    """Send *signum* to each of *pids* that still exists."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def kill_tree(pids: set[int]) -> None:
    """SIGKILL whatever of *pids* is still running (the last resort at teardown)."""
    signal_all(pids, signal.SIGKILL)

"""The background Send/Receive of ``mapispool sendmail``'s delivery mode ``background``:
whether a spooler already holds the store, and starting a detached one when none does.

Cheap to import (``os``, ``sys``; ``subprocess`` only when a process is started), so
that the sendmail fast path (``sendmail_fast``) can use it; the caller pays only the
fork and exec of the new process, never waits for it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .sendmail_say import warn

if TYPE_CHECKING:
    from ..profile import Profile


def spooler_running(store: Path) -> bool:
    """Whether a spooler process holds the store now: its lock file bears the mark
    ``running PID`` (``store.integrity.mark_running``) of a live process. Read without
    taking the lock, so that a spooler starting at this moment is never refused."""
    real = Path(os.path.realpath(store))
    try:
        mark = Path(f"{real}.lock").read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return False
    if len(mark) != 2 or mark[0] != "running" or not mark[1].isdigit():
        return False
    try:
        os.kill(int(mark[1]), 0)
    except ProcessLookupError:
        return False  # a spooler that crashed left its mark
    except PermissionError:
        return True
    return True


def start_background(profile: Profile) -> None:
    """Start a detached upload-only Send/Receive for the profile's store and return at
    once; a no-op when a spooler already runs on it (it looks at the queue again before
    it lets the store go, and this message was committed before this check)."""
    if spooler_running(profile.store_path()):
        return
    source = profile.source
    if source is None:
        return
    import subprocess

    command = [sys.executable, "-m", "mapispool.cli.sendmail_background", "--profile", source]
    try:
        subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not killed with the caller's terminal or process group
            close_fds=True,
        )
    except OSError as exc:
        warn(f"could not start a background Send/Receive ({exc}); the message is queued")

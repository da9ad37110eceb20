"""Where the time goes: cProfile of an outbound flush into smtp-sink or of
``Session.submit``, every thread included (the spooler runs its loop in a thread of its
own, which a plain ``cProfile.run`` would not see).

    python -m bench.profile outbound [N]   # N queued messages, flushed over 1 connection
    python -m bench.profile submit [N]     # N messages through Session.submit

Prints the functions with the most time of their own, then the most cumulative time."""

from __future__ import annotations

import cProfile
import io
import pstats
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import message

_profiles: list[cProfile.Profile] = []


def _profile_new_threads() -> None:
    """Wrap ``Thread.run`` so that every thread started from now on profiles itself."""
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        _profiles.append(prof)
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()

    threading.Thread.run = run  # type: ignore[method-assign]


def _outbound(work: Path, n: int) -> Callable[[], Any]:
    from tests.servers.dirs import ServerDirs

    from mapispool.mapi import FLUSH_UPLOAD
    from mapispool.session import Session

    from .queue import fill_numbered, profile
    from .servers import Sink

    dirs = ServerDirs()
    sink = Sink(dirs)
    fill_numbered(work / "store.db", n)
    smtp = {"provider": "smtp", "host": sink.host, "port": sink.port, "tls": "none"}

    def flush() -> Any:
        try:
            with Session.logon(profile(work / "store.db", {"out": smtp})) as session:
                return session.spooler_status().flush_queues(FLUSH_UPLOAD).total("sent")
        finally:
            sink.stop()
            dirs.remove()

    return flush


def _submit(work: Path, n: int) -> Callable[[], Any]:
    from mapispool.session import Session

    from .queue import profile

    msgs = [message(i) for i in range(n)]

    def submit() -> Any:
        with Session.logon(profile(work / "store.db", {"out": {"provider": "loopback"}})) as s:
            for raw in msgs:
                s.submit(raw)
            return len(s.outgoing_queue())

    return submit


def main(argv: list[str]) -> None:
    kinds = {"outbound": _outbound, "submit": _submit}
    if not argv or argv[0] not in kinds:
        raise SystemExit(f"usage: python -m bench.profile {{{'|'.join(kinds)}}} [N]")
    n = int(argv[1]) if len(argv) > 1 else 2000
    work = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    try:
        job = kinds[argv[0]](work, n)
        _profile_new_threads()
        main_prof = cProfile.Profile()
        _profiles.append(main_prof)
        main_prof.enable()
        done = job()
        main_prof.disable()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{argv[0]}: N={n}, result {done}")
    out = io.StringIO()
    stats = pstats.Stats(_profiles[0], stream=out)
    for prof in _profiles[1:]:
        stats.add(prof)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    print(out.getvalue())


if __name__ == "__main__":
    main(sys.argv[1:])

"""The SMTP listener against Postfix, fed the same way: Postfix's ``smtp-source`` pushes N
messages into ``mapispool serve --smtp`` and into a complete Postfix (smtpd → cleanup →
fsync'd queue), both relaying to the same smtp-sink. Both make every message durable
before the 250 to its final dot; the time is smtp-source's, from its first connection to
its last 250 (acceptance, which is what an application waits for). Each side drains its
queue, untimed, before the next run. Runs interleave: mapispool, Postfix, mapispool, ...

Standalone: ``python -m bench.listener [--smoke]`` (as root, for Postfix).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from mapispool.store import SqliteStore

from .common import RECIPIENT, SENDER, Row, Section, Sizes, paired, settle_disk, skipped, stopwatch
from .servers import PostfixRelay, Sink, Unavailable, require

BENCH = "listener"
SESSIONS = 4  # smtp-source connections on both sides
SIZE = 2048


def _smtp_source(tool: str, port: int, n: int) -> float:
    with stopwatch() as t:
        subprocess.run(
            [tool, "-d", "-s", str(SESSIONS), "-m", str(n), "-l", str(SIZE),
             "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return t[0]


class Daemon:
    """``mapispool serve --smtp`` on a fresh store, relaying into the sink."""

    def __init__(self, base: Path, sink_port: int) -> None:
        from tests.servers._util import free_port, wait_for_ports

        base.mkdir(parents=True, exist_ok=True)
        self.store = base / "store.db"
        self.port = free_port()
        profile = base / "profile.toml"
        profile.write_text(
            f'store = "{self.store}"\n\n[transports.out]\nprovider = "smtp"\n'
            f'host = "127.0.0.1"\nport = {sink_port}\ntls = "none"\nconnections = 4\n'
        )
        self.log = (base / "daemon.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mapispool.cli", "--profile", str(profile), "serve",
             "--smtp", f"127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip
        wait_for_ports([self.port], timeout=30.0, proc=self.proc, log=base / "daemon.log")

    def drain(self, timeout: float) -> None:
        """Wait until the daemon has relayed everything it accepted."""
        asyncio.run(self._drain(time.monotonic() + timeout))

    async def _drain(self, deadline: float) -> None:
        store = SqliteStore(self.store)
        try:
            while any(
                n for state, n in (await store.count_by_state()).items() if not state.finished
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError("the daemon did not relay everything in time")
                await asyncio.sleep(0.05)
        finally:
            await store.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _postfix_drain(relay: PostfixRelay, target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while relay.delivered() < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Postfix relayed {relay.delivered()} of {target}")
        time.sleep(0.05)


def run(sizes: Sizes, dirs: object) -> Section:
    from tests.servers.dirs import ServerDirs

    assert isinstance(dirs, ServerDirs)
    section = Section("SMTP listener: smtp-source into mapispool serve --smtp and into Postfix")
    print(f"== {section.title}", flush=True)
    n = 20 if sizes.smoke else max(sizes.postfix // 5, 100)
    try:
        tool = require("smtp-source", "postfix")
        sink = Sink(dirs)
    except Unavailable as exc:
        section.add(skipped(BENCH, "everything", n, str(exc)))
        return section
    relay: PostfixRelay | None = None
    daemon: Daemon | None = None
    try:
        relay = PostfixRelay(dirs, sink.port)
        daemon = Daemon(dirs.make("listener-daemon"), sink.port)
        accepted = 0

        def ours() -> float:
            assert daemon is not None
            settle_disk()
            elapsed = _smtp_source(tool, daemon.port, n)
            daemon.drain(120 + n / 10)
            return elapsed

        def postfix() -> float:
            nonlocal accepted
            assert relay is not None
            settle_disk()
            elapsed = _smtp_source(tool, relay.port, n)
            accepted += n
            _postfix_drain(relay, accepted, 120 + n / 10)
            return elapsed

        mine, pf = paired(
            sizes.runs,
            Row(BENCH, f"mapispool serve --smtp, {SESSIONS} sessions", n),
            ours,
            Row(BENCH, f"Postfix smtpd → queue, {SESSIONS} sessions", n),
            postfix,
        )
        section.add(pf)
        section.add(mine)
        section.target("listener / Postfix smtpd, accepted durably", mine, pf, 1.0)
        section.notes.append(
            f"smtp-source sends {n} messages of {SIZE} bytes over {SESSIONS} sessions to "
            "each side; both fsync each message before the 250 to its final dot (Postfix's "
            "queue file; mapispool's store commit with synchronous = FULL) and relay it to "
            "the same smtp-sink (draining is not timed). The goal column is parity."
        )
    except (Unavailable, subprocess.CalledProcessError) as exc:
        section.add(skipped(BENCH, "Postfix or the daemon", n, str(exc)))
    finally:
        if daemon is not None:
            daemon.stop()
        if relay is not None:
            relay.stop()
        sink.stop()
    return section


def main(argv: list[str] | None = None) -> None:
    from tests.servers.dirs import ServerDirs

    parser = argparse.ArgumentParser(prog="python -m bench.listener", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="the tiny version")
    args = parser.parse_args(argv)
    dirs = ServerDirs()
    try:
        run(Sizes.from_env(smoke=args.smoke), dirs)
    finally:
        dirs.remove()


if __name__ == "__main__":
    main()

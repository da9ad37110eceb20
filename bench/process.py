"""Benchmark 6: one process per message, as cron, git send-email and mutt call a sendmail.

``mapispool-sendmail`` against ``msmtp`` (issue #13's yardstick), one process per message on
both sides, interleaved block by block, both ending in the same smtp-sink, in two cases:

- (a) with ``mapispool serve`` running: each process hands the message to the daemon over
  its socket and exits with the daemon's answer (the message committed to the store). The
  daemon is resident, as Postfix's pickup and qmgr are for Postfix's sendmail; it is
  started before a block and stopped after it, untimed, and it sends later (not timed:
  the profile queues only), so this case compares the per-process cost alone.
- (b) without a daemon (the fast path): per process, the sendmail processes alone
  (mapispool's only queue, durably; msmtp's deliver); to the sink, the same processes plus
  one ``mapispool flush --upload`` process that sends what they queued, so both sides end
  with every message in the sink.

#13's target: ``mapispool-sendmail`` costs no more than msmtp per process.

It also measures how much of a ``mapispool-sendmail`` process is imports
(``python -X importtime``), and the CPU time (user + system) of one process on each side,
which a loaded machine disturbs less than wall time (msmtp mostly waits on the network).

The mapispool processes run with their bytecode caches written (``__pycache__``, as an
installed package has them): ``PYTHONDONTWRITEBYTECODE`` is dropped from their
environment and one warm-up process of each command runs before the pairs."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.servers.dirs import ServerDirs

from .common import RECIPIENT, SENDER, Row, Section, Sizes, message, paired, skipped, stopwatch
from .servers import Sink, Unavailable, require

BENCH = "process"
_IMPORT_LINE = re.compile(rb"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", re.MULTILINE)


#: The mapispool processes' environment: bytecode caches allowed, as in a real install.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


class CpuClock:
    """The CPU seconds (user + system) of the child processes that ended since ``start``."""

    def __init__(self) -> None:
        self.seconds: list[float] = []  # one entry per block: CPU per process
        self._before = 0.0

    @staticmethod
    def _now() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def start(self) -> None:
        self._before = self._now()

    def stop(self, processes: int) -> None:
        self.seconds.append((self._now() - self._before) / processes)


def _bin(name: str) -> Path:
    return Path(sys.executable).parent / name


def _profile(work: Path, port: int) -> Path:
    path = work / "profile.toml"
    path.write_text(
        f'store = "{work / "store.db"}"\nsend_immediately = false\n'
        '[transports.out]\nprovider = "smtp"\nhost = "127.0.0.1"\n'
        f'port = {port}\ntls = "none"\n'
    )
    return path


def msmtp_block(port: int, msgs: list[bytes], cpu: CpuClock | None = None) -> float:
    """One msmtp process per message, each delivering to the sink before it exits."""
    binary = require("msmtp", "msmtp", root=False)
    args = [binary, "--host=127.0.0.1", f"--port={port}", f"--from={SENDER}", "--auth=off",
            "--tls=off", RECIPIENT]  # fmt: skip
    return _one_process_each(args, msgs, cpu)


def _one_process_each(cmd: list[str], msgs: list[bytes], cpu: CpuClock | None, **run: Any) -> float:
    """Seconds to run ``cmd`` once per message, the message on its stdin (``run``: more
    ``subprocess.run`` arguments); the processes' CPU goes to ``cpu``."""
    if cpu is not None:
        cpu.start()
    with stopwatch() as took:
        for raw in msgs:
            subprocess.run(cmd, input=raw, check=True, **run)
    if cpu is not None:
        cpu.stop(len(msgs))
    return took[0]


class MapispoolBlock:
    """One ``mapispool-sendmail`` process per message (queue only: no daemon runs), then
    one ``mapispool flush --upload`` process; ``queued`` keeps the sendmail part of each
    run, the return value is the whole."""

    def __init__(self, port: int, queued: Row, cpu: CpuClock | None = None) -> None:
        self.port = port
        self.queued = queued
        self.cpu = cpu

    def __call__(self, msgs: list[bytes]) -> float:
        work = Path(tempfile.mkdtemp(prefix="bench-proc-"))
        try:
            profile = _profile(work, self.port)
            # -odq: only queue (the delivery mode a profile with send_immediately = false
            # has anyway); the flush process below sends.
            send = [str(_bin("mapispool-sendmail")), "--profile", str(profile), "-i", "-odq",
                    "-f", SENDER, RECIPIENT]  # fmt: skip
            flush = [str(_bin("mapispool")), "--profile", str(profile), "-q", "flush",
                     "--upload", "--no-ui"]  # fmt: skip
            queued = _one_process_each(send, msgs, self.cpu, stdout=subprocess.DEVNULL, env=ENV)
            with stopwatch() as sent:
                subprocess.run(flush, check=True, stdout=subprocess.DEVNULL, env=ENV)
            self.queued.times.append(queued)
            return queued + sent[0]
        finally:
            shutil.rmtree(work, ignore_errors=True)


class HandoffBlock:
    """Case (a): one ``mapispool-sendmail`` process per message, each handed to a running
    ``mapispool serve`` (started and stopped around the block, untimed). Every process
    must have been answered by the daemon (its log says ``handled=True`` once each)."""

    def __init__(self, port: int, cpu: CpuClock | None = None) -> None:
        self.port = port
        self.cpu = cpu

    def __call__(self, msgs: list[bytes]) -> float:
        work = Path(tempfile.mkdtemp(prefix="bench-hand-"))
        log = work / "daemon.log"
        try:
            profile = _profile(work, self.port)
            with log.open("wb") as out:
                daemon = subprocess.Popen(
                    [str(_bin("mapispool")), "--profile", str(profile), "serve"],
                    stdout=subprocess.DEVNULL, stderr=out, env=ENV,
                )  # fmt: skip
            try:
                _wait_for(log, b"event=sendmail-handoff", daemon)
                send = [str(_bin("mapispool-sendmail")), "--profile", str(profile), "-i",
                        "-odq", "-f", SENDER, RECIPIENT]  # fmt: skip
                handed = _one_process_each(send, msgs, self.cpu, stdout=subprocess.DEVNULL, env=ENV)
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(60)
            answered = log.read_bytes().count(b"handled=True")
            if answered != len(msgs):
                raise RuntimeError(f"the daemon answered {answered} of {len(msgs)} hand-offs")
            return handed
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _wait_for(log: Path, text: bytes, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while text not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mapispool serve did not start: {log.read_text()[-500:]}")
        time.sleep(0.05)


def import_seconds(port: int, runs: int) -> tuple[float, float, list[tuple[float, str]]]:
    """For a ``mapispool-sendmail`` process run under ``-X importtime``: the median
    seconds spent importing (the sum of the top-level cumulative times), the median wall
    seconds of those same processes (importtime's own bookkeeping included on both
    sides), and the largest top-level imports of the last run as (seconds, module)."""
    totals: list[float] = []
    walls: list[float] = []
    top: list[tuple[float, str]] = []
    for _ in range(runs):
        work = Path(tempfile.mkdtemp(prefix="bench-imp-"))
        try:
            profile = _profile(work, port)
            with stopwatch() as wall:
                done = subprocess.run(
                    [sys.executable, "-X", "importtime", str(_bin("mapispool-sendmail")),
                     "--profile", str(profile), "-i", "-odq", "-f", SENDER, RECIPIENT],
                    input=message(0), check=True, capture_output=True, env=ENV,
                )  # fmt: skip
            walls.append(wall[0])
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows = [
            (int(cumulative) / 1e6, name.decode())
            for _self, cumulative, indent, name in _IMPORT_LINE.findall(done.stderr)
            if len(indent) == 1  # top level: one space after the bar
        ]
        totals.append(sum(seconds for seconds, _ in rows))
        top = sorted(rows, reverse=True)[:5]
    return statistics.median(totals), statistics.median(walls), top


def run(sizes: Sizes, dirs: ServerDirs) -> Section:
    section = Section("6. One process per message: mapispool-sendmail vs msmtp")
    print(f"== {section.title}", flush=True)
    k, runs = sizes.msmtp, sizes.runs
    if not _bin("mapispool-sendmail").exists():
        section.add(skipped(BENCH, "everything", k, "mapispool-sendmail not installed"))
        return section
    try:
        sink = Sink(dirs)
        require("msmtp", "msmtp", root=False)
    except Unavailable as exc:
        section.add(skipped(BENCH, "everything", k, str(exc)))
        return section
    try:
        msgs = [message(i) for i in range(k)]
        HandoffBlock(sink.port)(msgs[:1])  # warm-up: writes __pycache__
        hand_cpu, hand_peer_cpu = CpuClock(), CpuClock()
        handed, hand_peer = paired(
            runs,
            Row(BENCH, "(a) mapispool-sendmail handing off to mapispool serve", k),
            lambda: HandoffBlock(sink.port, hand_cpu)(msgs),
            Row(BENCH, "(a) msmtp, one process per message", k),
            lambda: msmtp_block(sink.port, msgs, hand_peer_cpu),
        )
        for row in (hand_peer, handed):
            section.add(row)
            row.extra = f"{(row.median or 0) / k * 1000:.0f} ms per message"
        section.target("(a) hand-off to a running daemon / msmtp, per process", handed,
                       hand_peer, 1.0)  # fmt: skip
        section.notes.append(_cpu_note("(a) with mapispool serve running", hand_cpu,
                                       hand_peer_cpu))  # fmt: skip
        print("  " + section.notes[-1], flush=True)
        queued = Row(BENCH, "(b) mapispool-sendmail, no daemon, one process per message", k)
        MapispoolBlock(sink.port, Row(BENCH, "warm-up", 1))(msgs[:1])  # writes __pycache__
        our_cpu, peer_cpu = CpuClock(), CpuClock()
        ours, peer = paired(
            runs,
            Row(BENCH, "(b) mapispool-sendmail per message + 1 flush process", k),
            lambda: MapispoolBlock(sink.port, queued, our_cpu)(msgs),
            Row(BENCH, "(b) msmtp, one process per message", k),
            lambda: msmtp_block(sink.port, msgs, peer_cpu),
        )
        queued.base = peer
        for row in (peer, queued, ours):
            section.add(row)
            row.extra = f"{(row.median or 0) / k * 1000:.0f} ms per message"
        print(queued.line(), flush=True)
        section.target("(b) no daemon: mapispool-sendmail / msmtp, per process", queued, peer,
                       1.0)  # fmt: skip
        section.target("(b) sendmail processes + flush / msmtp, into the sink", ours, peer, 1.0)
        section.notes.append(_cpu_note("(b) without a daemon", our_cpu, peer_cpu))
        print("  " + section.notes[-1], flush=True)
        imports, wall, top = import_seconds(sink.port, 1 if sizes.smoke else 5)
        section.notes.append(
            f"`python -X importtime` (median of {1 if sizes.smoke else 5} processes): a "
            f"mapispool-sendmail process spends {imports * 1000:.0f} ms of its "
            f"{wall * 1000:.0f} ms importing ({imports / wall:.0%}; importtime's "
            "bookkeeping inflates both). Largest top-level imports: "
            + ", ".join(f"{name} {seconds * 1000:.0f} ms" for seconds, name in top)
            + "."
        )
        print("  " + section.notes[-1], flush=True)
    finally:
        sink.stop()
    return section


def _cpu_note(case: str, ours: CpuClock, peer: CpuClock) -> str:
    def ms(clock: CpuClock) -> str:
        values = [v * 1000 for v in clock.seconds]
        return f"{statistics.median(values):.0f} ms ({min(values):.0f}..{max(values):.0f})"

    return (f"CPU time (user + system) per process {case}, median of the blocks: "
            f"mapispool-sendmail {ms(ours)}, msmtp {ms(peer)}.")  # fmt: skip

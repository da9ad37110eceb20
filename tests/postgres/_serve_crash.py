"""The multi-worker crash run of issue #12, shared by tests/postgres/test_serve_crash.py
and ``python -m bench.crash_workers``.

Real processes all the way: ``mapispool serve --worker NAME`` workers (the command line,
with the outcome tap of ``_tapped_serve``) on one PostgreSQL store send through an smtp
transport to an aiosmtpd server that records every DATA it accepts. Two other processes
submit meanwhile: a ``Session`` in a process of its own (bursts) and ``mapispool submit``
runs. The workers are killed with kill -9 at random (each one restarted under a new
name) and some are paused with SIGSTOP past their lease, then resumed (zombies). Then
the workers drain the queue undisturbed and ``reconcile`` checks:

* lost: none. Every submitted message ends ``sent`` (and reached the sink) or
  ``uncertain`` (shown to a person, never resent silently);
* duplicates only among ``uncertain`` messages;
* no late write accepted from a fenced-off worker: each accepted outcome (the tap's
  ``ok`` lines) carries the last fencing token the store issued for its message (the
  ``offered`` events name every claim's worker and token), and no message became ``sent``
  after its last claim was taken over (a ``recovered-*`` event after its last claim).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from mapispool.store.model import QueueState
from mapispool.store.postgres import PostgresStore
from tests.postgres._session_submitter import crash_message
from tests.postgres._tapped_serve import TAP_ENV
from tests.servers.smtp import SmtpServer, SmtpTransaction

ROOT = Path(__file__).resolve().parents[2]
_CLAIM = re.compile(r"^worker (\S+) claim (\d+)$")
_CRASH_ID = re.compile(rb"^X-Crash-Id: (\d+)\r?$", re.MULTILINE)
#: Numbers of the messages ``mapispool submit`` queues (the Session's count from 0).
CLI_FIRST = 1_000_000


@dataclass(frozen=True)
class CrashSettings:
    kills: int = 100
    lease: float = 2.0  # the profile's store_lease: short, so that pauses outlive it
    workers: int = 3
    pause_share: float = 0.12  # of the disturbances, how many are SIGSTOP pauses
    seed: int = 12
    drain_timeout: float = 150.0


@dataclass
class CrashReport:
    """What a run did and what reconciliation found; ``problems()`` is empty on success."""

    kills: int = 0
    pauses: int = 0
    worker_starts: int = 0
    submitted: int = 0
    sent: int = 0
    uncertain: int = 0
    uncertain_delivered: int = 0
    delivered_twice: int = 0
    accepted: int = 0
    fenced: int = 0
    fenced_handoff: int = 0
    recovered: int = 0
    seconds: float = 0.0
    undrained: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    twice_not_uncertain: list[str] = field(default_factory=list)
    late_accepted: list[str] = field(default_factory=list)
    sent_after_takeover: list[str] = field(default_factory=list)
    submit_failures: list[str] = field(default_factory=list)
    unaccounted: int = 0  # queue rows no submitter reported (or reported rows missing)

    def problems(self) -> list[str]:
        found = []
        if self.undrained:
            found.append(f"not drained: {self.undrained}")
        if self.unaccounted:
            found.append(f"{self.unaccounted} queue rows do not match the submitted messages")
        for name in ("lost", "twice_not_uncertain", "late_accepted", "sent_after_takeover",
                     "submit_failures"):  # fmt: skip
            values = getattr(self, name)
            if values:
                found.append(f"{name}: {values[:10]} ({len(values)})")
        return found

    def summary(self) -> str:
        return (
            f"{self.submitted} submitted, {self.kills} kills, {self.pauses} pauses,"
            f" {self.worker_starts} worker starts in {self.seconds:.0f} s: {self.sent} sent,"
            f" {self.uncertain} uncertain ({self.uncertain_delivered} of them delivered),"
            f" {self.delivered_twice} delivered twice, {len(self.lost)} lost;"
            f" {self.accepted} outcomes accepted, {self.fenced} late outcomes and"
            f" {self.fenced_handoff} late hand-over marks refused, {self.recovered}"
            f" claims taken over; {len(self.late_accepted)} late writes accepted"
        )


def write_profile(
    directory: Path, url: str, schema: str, smtp_port: int, lease: float, lanes: int
) -> Path:
    path = directory / "profile.toml"
    path.write_text(
        f'store = "{url}"\nstore_schema = "{schema}"\nstore_lease = "{lease}s"\n\n'
        "[retry]\nfloor = 1\ncap = 2\n\n"
        f'[transports.out]\nprovider = "smtp"\nhost = "127.0.0.1"\nport = {smtp_port}\n'
        # Every worker may send at once: more messages in flight when a kill comes.
        f'tls = "none"\ntimeout = 30\nlanes = {lanes}\n',
        encoding="utf-8",
    )
    return path


def _env(tap: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MAPISPOOL_PROFILE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env[TAP_ENV] = str(tap)
    return env


class Workers:
    """``settings.workers`` slots, each running one tapped ``mapispool serve`` worker."""

    def __init__(self, profile: Path, directory: Path, tap: Path) -> None:
        self.profile, self.directory, self.env = profile, directory, _env(tap)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.names: dict[int, str] = {}
        self.starts = 0

    def start(self, slot: int) -> None:
        self.starts += 1
        name = f"w{slot}-{self.starts}"
        with (self.directory / f"{name}.log").open("wb") as log:
            self.procs[slot] = subprocess.Popen(
                [sys.executable, "-m", "tests.postgres._tapped_serve", "--profile",
                 str(self.profile), "serve", "--worker", name],
                stdout=subprocess.DEVNULL, stderr=log, env=self.env, cwd=ROOT,
            )  # fmt: skip
        self.names[slot] = name

    def log(self, slot: int) -> str:
        return (self.directory / f"{self.names[slot]}.log").read_text(errors="replace")

    def started(self, slot: int) -> bool:
        return "event=started" in self.log(slot)

    def kill(self, slot: int) -> None:
        proc = self.procs[slot]
        proc.kill()
        proc.wait()

    def exited(self) -> list[str]:
        """Workers that ended by themselves (a crash the test did not cause)."""
        return [f"{self.names[s]}: {self.log(s)[-600:]}" for s, p in self.procs.items()
                if p.poll() is not None]  # fmt: skip

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Submitters:
    """A ``Session`` process submitting bursts, and ``mapispool submit`` runs in a thread;
    ``ids`` maps each accepted message's number to its entry id."""

    def __init__(self, profile: Path, directory: Path, seed: int, env: dict[str, str]) -> None:
        self._log = (directory / "submitter.log").open("wb")
        self.profile, self.env = profile, env
        self.stop_file = directory / "stop-submitting"
        self.ids: dict[int, bytes] = {}
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.session = subprocess.Popen(
            [sys.executable, "-m", "tests.postgres._session_submitter", str(profile), "0",
             str(seed), str(self.stop_file)],
            stdout=subprocess.PIPE, stderr=self._log,
            env=env, cwd=ROOT,
        )  # fmt: skip
        self._threads = [
            threading.Thread(target=self._read_session, daemon=True),
            threading.Thread(target=self._run_cli, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_session(self) -> None:
        assert self.session.stdout is not None
        for line in self.session.stdout:
            number, entry = line.split()
            with self._lock:
                self.ids[int(number)] = bytes.fromhex(entry.decode())

    def _run_cli(self) -> None:
        number = CLI_FIRST
        while not self._stopping.is_set():
            done = subprocess.run(
                [sys.executable, "-m", "mapispool.cli", "--profile", str(self.profile),
                 "submit", "-"],
                input=crash_message(number), capture_output=True, env=self.env, cwd=ROOT,
                timeout=120, check=False,
            )  # fmt: skip
            with self._lock:
                if done.returncode == 0:
                    self.ids[number] = bytes.fromhex(done.stdout.decode().strip())
                else:
                    self.failures.append(f"{number}: {done.stderr.decode(errors='replace')}")
            number += 1

    def stop(self) -> None:
        self.stop_file.touch()
        self._stopping.set()
        self.session.wait(timeout=120)
        for thread in self._threads:
            thread.join(timeout=120)
        self._log.close()
        if self.session.stdout is not None:
            self.session.stdout.close()
        if self.session.returncode != 0:
            self.failures.append(f"the Session submitter exited {self.session.returncode}")


def slow_sink_answer(_transaction: SmtpTransaction) -> str:
    """The sink's DATA answer after 20 ms (a server's queue write): each message stays
    in flight a little while, so that kills and pauses catch workers in the middle."""
    time.sleep(0.02)
    return "250 2.0.0 OK queued"


def run_crash(
    url: str, schema: str, directory: Path, smtp: SmtpServer, settings: CrashSettings
) -> CrashReport:
    """One crash run on a fresh schema (``schema`` must not hold a store yet)."""
    started = time.monotonic()
    rng = random.Random(settings.seed)
    profile = write_profile(directory, url, schema, smtp.port, settings.lease, settings.workers)
    tap = directory / "tap.log"
    report = CrashReport()
    workers = Workers(profile, directory, tap)
    for slot in range(settings.workers):
        workers.start(slot)
    _wait(lambda: all(workers.started(s) for s in range(settings.workers)), 90)
    submitters = Submitters(profile, directory, settings.seed, workers.env)
    _wait(lambda: len(submitters.ids) > 0, 90)  # both submitting before the first kill
    paused: dict[int, float] = {}  # slot -> when to resume it
    busy = _BusyWorkers(url, schema)
    try:
        while report.kills < settings.kills:
            time.sleep(rng.uniform(0.1, 0.6))
            now = time.monotonic()
            for slot, until in list(paused.items()):
                if until <= now:
                    workers.procs[slot].send_signal(signal.SIGCONT)
                    del paused[slot]
            # Any worker (one still starting too), preferably one with messages in flight.
            up = [s for s in range(settings.workers) if s not in paused]
            sending = [s for s in up if workers.names[s] in busy.names()]
            slot = rng.choice(sending if sending and rng.random() < 0.7 else up)
            if rng.random() < settings.pause_share and len(paused) < settings.workers - 1:
                workers.procs[slot].send_signal(signal.SIGSTOP)  # a zombie past its lease
                paused[slot] = now + settings.lease * rng.uniform(1.5, 3.0)
                report.pauses += 1
            else:
                workers.kill(slot)
                workers.start(slot)
                report.kills += 1
        for slot in paused:
            workers.procs[slot].send_signal(signal.SIGCONT)
        submitters.stop()
        crashed = workers.exited()
        assert not crashed, f"workers ended by themselves: {crashed}"
        report.undrained = asyncio.run(_drain(url, schema, settings.drain_timeout))
    finally:
        busy.close()
        workers.stop_all()
        if submitters.session.poll() is None:
            submitters.stop_file.touch()
    report.worker_starts = workers.starts
    report.submit_failures = submitters.failures
    tapped = [line.split() for line in tap.read_text().splitlines()] if tap.exists() else []
    asyncio.run(reconcile(url, schema, submitters.ids, smtp, tapped, report))
    report.seconds = time.monotonic() - started
    return report


class _BusyWorkers:
    """Which workers hold claims right now (a plain query on the store's queue)."""

    def __init__(self, url: str, schema: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.query = sql.SQL("SELECT DISTINCT worker FROM {}.queue WHERE state = 'in_flight'")
        self.query = self.query.format(sql.Identifier(schema))

    def names(self) -> set[str]:
        return {str(w) for (w,) in self.conn.execute(self.query).fetchall()}

    def close(self) -> None:
        self.conn.close()


def _wait(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the workers or the submitters did not start in time")
        time.sleep(0.1)


async def _drain(url: str, schema: str, patience: float) -> dict[str, int]:
    """Wait until every message is finished or uncertain; what is left otherwise."""
    store = await PostgresStore.open(url, schema=schema)
    try:
        deadline = time.monotonic() + patience
        while True:
            counts = await store.count_by_state()
            left = {s.value: n for s, n in counts.items()
                    if s not in (QueueState.SENT, QueueState.UNCERTAIN)}  # fmt: skip
            if not left or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.5)
    finally:
        await store.close()


async def reconcile(
    url: str,
    schema: str,
    ids: dict[int, bytes],
    smtp: SmtpServer,
    tapped: list[list[str]],
    report: CrashReport,
) -> None:
    """Fill ``report`` from the store, the sink's record and the tap's lines (``tapped``,
    see ``_tapped_serve``)."""
    delivered: Counter[int] = Counter()
    for transaction in smtp.messages:
        found = _CRASH_ID.search(transaction.data)
        if found:
            delivered[int(found[1])] += 1
    accepted = [(bytes.fromhex(w[1]), int(w[2])) for w in tapped if w[0] == "ok"]
    report.accepted = len(accepted)
    report.fenced = sum(1 for w in tapped if w[0] == "fenced")
    report.fenced_handoff = sum(1 for w in tapped if w[0] == "fenced-handoff")
    report.submitted = len(ids)
    issued: dict[bytes, list[int]] = defaultdict(list)
    store = await PostgresStore.open(url, schema=schema)
    try:
        for number, entry_id in sorted(ids.items()):
            state = (await store.queue_entry(entry_id, with_recipients=False)).state
            events = await store.events(entry_id)
            claims = [i for i, e in enumerate(events) if e.kind == "offered"]
            for i in claims:
                found = _CLAIM.match(events[i].detail or "")
                assert found, f"an offered event without its claim: {events[i]}"
                issued[entry_id].append(int(found[2]))
            report.recovered += sum(1 for e in events if e.kind.startswith("recovered-"))
            label = f"{number}={entry_id.hex()}"
            if state is QueueState.SENT:
                report.sent += 1
                if delivered[number] == 0:
                    report.lost.append(label)
                after_last = events[claims[-1] :] if claims else events
                if any(e.kind.startswith("recovered-") for e in after_last):
                    report.sent_after_takeover.append(label)
            elif state is QueueState.UNCERTAIN:
                report.uncertain += 1
                report.uncertain_delivered += delivered[number] > 0
            else:
                report.lost.append(f"{label} ({state.value})")
            if delivered[number] > 1:
                report.delivered_twice += 1
                if state is not QueueState.UNCERTAIN:
                    report.twice_not_uncertain.append(label)
        counts = await store.count_by_state()
        report.unaccounted = abs(sum(counts.values()) - len(ids))
    finally:
        await store.close()
    report.late_accepted = [
        f"{e.hex()} token {t} (last {max(issued[e], default=None)})"
        for e, t in accepted
        if t != max(issued.get(e, [-1]))
    ]

"""Crash bench: kill -9 the spooler at random moments and check that nothing is lost.

Outbound: messages are submitted into the store, a spooler process runs Send/Receive
against Postfix's smtp-sink (whose ``-d`` dumps say what really arrived), every third
one through a deferring transport (``DeferringSmtpProvider``: MAPI's MRXP style, it marks
its recipients and answers END_DONT_RESEND, then releases the message at the next flush
and sends it with BEGIN_DEFERRED), and is killed
with SIGKILL at a random moment after it started; a new one is started, and so on, K
times, then once more without a kill until the queue holds nothing but uncertain mail.
Inbound: messages delivered into a Dovecot Maildir are fetched over IMAP (or POP3) with
``action = "delete"``, so that a server copy deleted before its local commit would show
up as a loss.

It prints (and ``--json`` writes) submitted, delivered, delivered more than once, marked
uncertain, lost; inbound: delivered to the server, stored, lost, duplicated in the store,
deleted from the server before its local commit. The bar: zero lost; outbound duplicates
only among uncertain messages; inbound zero lost and zero duplicated.

    .venv/bin/python bench/crash.py --kills 200        # needs root (smtp-sink, Dovecot)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# bench/ holds modules named like the standard library's (queue.py): keep it off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
for entry in (str(ROOT), str(ROOT / "src")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from mapispool.mapi import BEGIN_DEFERRED, END_DONT_RESEND, NOTIFY_SENTDEFERRED  # noqa: E402
from mapispool.spi import OutboundMessage, Support, TransportLogon  # noqa: E402
from mapispool.store import QueueState, SqliteStore, Store  # noqa: E402
from mapispool.submission import prepare  # noqa: E402
from mapispool.transports.smtp import SmtpProvider  # noqa: E402
from mapispool.transports.smtp.logon import SmtpLogon  # noqa: E402

PASSWORD_ENV = "MAPISPOOL_CRASH_PASSWORD"
ID_HEADER = re.compile(rb"^X-Crash-Id: (\S+)", re.MULTILINE | re.IGNORECASE)

# The spooler process: Send/Receive until only uncertain mail is left and nothing more
# arrives. It says "ready" once logged on, so that the killer picks its moment after that.
_WORKER = """
import json, sys
from mapispool.mapi import FLUSH_DOWNLOAD, FLUSH_FORCE, FLUSH_NO_UI, FLUSH_UPLOAD
from mapispool.profile import Profile
from mapispool.session import Session
from mapispool.store import QueueState

flags = FLUSH_UPLOAD | FLUSH_DOWNLOAD | FLUSH_FORCE | FLUSH_NO_UI
with Session.logon(Profile.from_dict(json.loads(sys.argv[1]))) as session:
    print("ready", flush=True)
    for _ in range(1000):
        result = session.spooler_status().flush_queues(flags)
        waiting = [e for e in session.outgoing_queue() if e.state is not QueueState.UNCERTAIN]
        if not waiting and result.total("received") == 0:
            break
print("done", flush=True)
"""


#: The address type routed to the deferring transport (its section's ``address_types``).
DEFER_TYPE = "DEFER"


class DeferringSmtpLogon(SmtpLogon):
    """An smtp logon written the way MAPI's sample transport is: ``submit_message`` marks
    every recipient it handles and ``end_message`` answers END_DONT_RESEND; the next
    ``flush_queues`` releases what it holds (NOTIFY_SENTDEFERRED with no entry id) and
    the BEGIN_DEFERRED submit sends the message for real. Marks are not delivery: a
    spooler that took them for it would lose these messages (issue 9)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holding: set[bytes] = set()
        self._deferring: set[bytes] = set()

    async def flush_queues(self, flags: int) -> None:
        if self._holding:
            self._holding.clear()
            self.support.spooler_notify(NOTIFY_SENTDEFERRED, None)
        await super().flush_queues(flags)

    async def submit_message(self, message: OutboundMessage, flags: int) -> None:
        if flags & BEGIN_DEFERRED:
            await super().submit_message(message, flags)
            return
        for recipient in self._mine(message):
            recipient.responsibility = True  # MRXP: "mine in this attempt"
        self._deferring.add(message.entry_id)

    async def end_message(self, message: OutboundMessage) -> int:
        if message.entry_id in self._deferring:
            self._deferring.discard(message.entry_id)
            self._holding.add(message.entry_id)
            return int(END_DONT_RESEND)
        return await super().end_message(message)


class DeferringSmtpProvider(SmtpProvider):
    """Provider ``bench.crash:DeferringSmtpProvider``: an smtp section whose logon defers
    every message once (``DeferringSmtpLogon``)."""

    async def transport_logon(self, support: Support, flags: int) -> TransportLogon:
        plain = await super().transport_logon(support, flags)
        assert isinstance(plain, SmtpLogon)
        return DeferringSmtpLogon(support, plain.settings)


@dataclass
class Report:
    """What a crash run found."""

    kills: int = 0
    cycles: int = 0
    seconds: float = 0.0
    submitted: int = 0
    delivered: int = 0
    delivered_more_than_once: int = 0
    duplicates_not_uncertain: int = 0
    uncertain: int = 0
    uncertain_delivered: int = 0
    still_queued: int = 0
    lost: int = 0
    inbound_sent: int = 0
    inbound_stored: int = 0
    inbound_lost: int = 0
    inbound_duplicated: int = 0
    inbound_deleted_before_commit: int = 0
    recovered: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicates_not_uncertain
            or self.still_queued
            or self.inbound_lost
            or self.inbound_duplicated
            or self.inbound_deleted_before_commit
        )

    def lines(self) -> list[str]:
        return [
            f"kills: {self.kills} in {self.cycles} spooler runs, {self.seconds:.0f} s",
            f"outbound: submitted {self.submitted}, delivered {self.delivered}, "
            f"delivered more than once {self.delivered_more_than_once} "
            f"(of which not marked uncertain: {self.duplicates_not_uncertain}), "
            f"marked uncertain {self.uncertain} (delivered: {self.uncertain_delivered}), "
            f"still queued {self.still_queued}, lost {self.lost}",
            f"inbound: delivered to the server {self.inbound_sent}, stored "
            f"{self.inbound_stored}, lost {self.inbound_lost}, duplicated in the store "
            f"{self.inbound_duplicated}, server copy deleted before its local commit "
            f"{self.inbound_deleted_before_commit}",
            f"recovery on restart: {self.recovered}",
            "PASS" if self.ok else "FAIL",
        ]


@dataclass
class Servers:
    """Where the spooler sends and receives: smtp-sink and one Dovecot user."""

    sink: Any  # tests.servers.smtp_sink.SmtpSink
    dovecot: Any  # tests.servers.dovecot.DovecotServer
    user: Any  # tests.servers.dovecot.MailUser


def profile_dict(store: Path, servers: Servers, inbound: str) -> dict[str, Any]:
    dovecot = servers.dovecot
    return {
        "store": str(store),
        "send_immediately": False,
        "retry": {"floor": 1, "cap": 2},
        "transports": {
            "out": {
                "provider": "smtp",
                "host": servers.sink.host,
                "port": servers.sink.port,
                "tls": "none",
                "timeout": 10,
                "connect_timeout": 5,
            },
            "defer": {
                "provider": "bench.crash:DeferringSmtpProvider",
                "host": servers.sink.host,
                "port": servers.sink.port,
                "tls": "none",
                "timeout": 10,
                "connect_timeout": 5,
                "address_types": [DEFER_TYPE],
            },
            "in": {
                "provider": inbound,
                "host": dovecot.host,
                "port": dovecot.imap_port if inbound == "imap" else dovecot.pop3_port,
                "tls": "none",
                "allow_plaintext_auth": True,
                "username": servers.user.name,
                "password_env": PASSWORD_ENV,
                "action": "delete",
                "batch_size": 5,
                "timeout": 10,
            },
        },
    }


def outbound_message(crash_id: str) -> bytes:
    return (
        f"From: crash@example.test\r\nTo: sink@example.test\r\nSubject: crash {crash_id}\r\n"
        f"X-Crash-Id: {crash_id}\r\n\r\n" + f"body of {crash_id}\r\n" * 20
    ).encode()


def inbound_message(crash_id: str) -> bytes:
    return (
        f"From: far@example.test\r\nTo: me@example.test\r\nSubject: in {crash_id}\r\n"
        f"Message-ID: <{crash_id}@crash.test>\r\nX-Crash-Id: {crash_id}\r\n\r\n"
        f"inbound {crash_id}\r\n"
    ).encode()


async def submit_batch(store: Store, ids: list[str], lifetime: float) -> None:
    """Submit as a client of the store does (no spooler in this process)."""
    for crash_id in ids:
        # Every third message goes through the deferring transport.
        deferred = int(crash_id.lstrip("o")) % 3 == 0
        recipients = [f"{DEFER_TYPE}:sink@example.test"] if deferred else None
        prepared = prepare(outbound_message(crash_id), recipients=recipients, now=datetime.now(UTC))
        now = time.time()
        await store.submit(
            prepared.content,
            prepared.props,
            prepared.recipients,
            submit_time=now,
            not_before=None,
            expires_at=now + lifetime,
        )


def run_worker(
    profile: dict[str, Any], env: dict[str, str], kill_after: float | None, timeout: float
) -> bool:
    """One spooler process; SIGKILL it ``kill_after`` seconds after it is ready (None: let
    it finish). Returns True when it was killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, json.dumps(profile)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + timeout
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            proc.kill()
            _out, err = proc.communicate()
            raise RuntimeError(f"the spooler did not start: {err.decode(errors='replace')[-3000:]}")
        if kill_after is not None:
            try:
                proc.wait(kill_after)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
        _out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        if proc.returncode != 0:
            raise RuntimeError(f"the spooler failed: {err.decode(errors='replace')[-3000:]}")
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def ids_in(data: bytes) -> list[str]:
    return [m.decode() for m in ID_HEADER.findall(data)]


def crash_run(
    workdir: Path,
    servers: Servers,
    *,
    kills: int,
    per_cycle: int = 20,
    inbound_per_cycle: int = 5,
    max_kill_delay: float = 0.4,
    inbound: str = "imap",
    seed: int | None = None,
    progress: bool = False,
) -> Report:
    """Run the bench and return its figures (see the module docstring)."""
    rng = random.Random(seed)
    store_path = workdir / "store.db"
    profile = profile_dict(store_path, servers, inbound)
    env = {
        **os.environ,
        PASSWORD_ENV: servers.user.password,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
        ),
    }
    report = Report()
    recovered: Counter[str] = Counter()
    submitted: list[str] = []
    sent_in: list[str] = []
    started = time.monotonic()
    lifetime = 7 * 24 * 3600.0
    while report.kills < kills:
        batch = [f"o{len(submitted) + i}" for i in range(per_cycle)]
        asyncio.run(_submit_to(store_path, batch, lifetime))
        submitted += batch
        for _ in range(inbound_per_cycle):
            crash_id = f"i{len(sent_in)}"
            servers.dovecot.deliver(servers.user, inbound_message(crash_id))
            sent_in.append(crash_id)
        killed = run_worker(profile, env, rng.uniform(0.0, max_kill_delay), timeout=120)
        report.cycles += 1
        report.kills += int(killed)
        recovered.update(_last_recovery(store_path))
        if progress and report.cycles % 20 == 0:
            print(f"  {report.cycles} runs, {report.kills} kills", file=sys.stderr)
    run_worker(profile, env, None, timeout=600)
    report.cycles += 1
    recovered.update(_last_recovery(store_path))
    report.seconds = time.monotonic() - started
    report.recovered = dict(recovered)
    _check(report, store_path, servers, submitted, sent_in)
    return report


async def _submit_to(store_path: Path, ids: list[str], lifetime: float) -> None:
    store = SqliteStore(store_path)
    try:
        await submit_batch(store, ids, lifetime)
    finally:
        await store.close()


async def _read_back(store_path: Path) -> tuple[dict[str, QueueState], Counter[str]]:
    """Every message's state by crash id, and the crash ids stored in the Inbox."""
    store = SqliteStore(store_path)
    try:
        states: dict[str, QueueState] = {}
        after = None
        while page := await store.queue_page(states=list(QueueState), after=after):
            for entry in page:
                states[entry.subject.removeprefix("crash ")] = entry.state
            after = (page[-1].submit_time, page[-1].seq)
        stored: Counter[str] = Counter()
        seq = None
        while messages := await store.messages("Inbox", after=seq):
            for message in messages:
                stored.update(ids_in(message.content))
            seq = messages[-1].seq
    finally:
        await store.close()
    return states, stored


def _last_recovery(store_path: Path) -> Counter[str]:
    """How the last spooler start repaired the queue (from the events table)."""
    import sqlite3

    conn = sqlite3.connect(store_path)
    try:
        rows = conn.execute(
            "SELECT kind, count(*) FROM events WHERE kind LIKE 'recovered-%'"
            " AND id > coalesce((SELECT max(id) FROM events WHERE kind = 'crash-mark'), 0)"
            " GROUP BY kind"
        ).fetchall()
        conn.execute(
            "INSERT INTO events (entry_id, at, kind) VALUES (x'00', ?, 'crash-mark')",
            (time.time(),),
        )
        conn.commit()
    finally:
        conn.close()
    return Counter({str(kind): int(n) for kind, n in rows})


def _check(
    report: Report, store_path: Path, servers: Servers, submitted: list[str], sent_in: list[str]
) -> None:
    arrived: Counter[str] = Counter()
    for txn in servers.sink.transactions():
        arrived.update(ids_in(txn.data))
    states, stored = asyncio.run(_read_back(store_path))
    on_server: set[str] = set()
    for path in servers.dovecot.message_files(servers.user):
        on_server.update(ids_in(path.read_bytes()))

    report.submitted = len(submitted)
    for crash_id in submitted:
        count = arrived[crash_id]
        state = states.get(crash_id)
        report.delivered += count > 0
        report.delivered_more_than_once += count > 1
        if state is QueueState.UNCERTAIN:
            report.uncertain += 1
            report.uncertain_delivered += count > 0
        elif count > 1:
            report.duplicates_not_uncertain += 1
        if count == 0 and state is not QueueState.UNCERTAIN:
            if state in (
                QueueState.QUEUED,
                QueueState.RETRY,
                QueueState.IN_FLIGHT,
                QueueState.PARKED,
            ):
                report.still_queued += 1
            else:
                report.lost += 1
    report.inbound_sent = len(sent_in)
    report.inbound_stored = sum(1 for i in sent_in if stored[i])
    report.inbound_duplicated = sum(1 for i in sent_in if stored[i] > 1)
    report.inbound_lost = sum(1 for i in sent_in if not stored[i])
    report.inbound_deleted_before_commit = sum(
        1 for i in sent_in if not stored[i] and i not in on_server
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs to deliver (K)")
    parser.add_argument("--per-cycle", type=int, default=20, help="messages submitted per run")
    parser.add_argument("--inbound-per-cycle", type=int, default=5)
    parser.add_argument("--max-kill-delay", type=float, default=0.4, help="seconds")
    parser.add_argument("--inbound", choices=["imap", "pop3"], default="imap")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    from tests.servers.dirs import ServerDirs
    from tests.servers.dovecot import DovecotServer
    from tests.servers.smtp_sink import SmtpSink
    from tests.servers.tls import make_tls_files

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # run the finally below: stop the servers

    signal.signal(signal.SIGTERM, stop)
    dirs = ServerDirs()
    sink = dovecot = None
    try:
        sink = SmtpSink(dirs.make("smtp-sink")).start()
        dovecot = DovecotServer(dirs.make("dovecot"), make_tls_files(dirs.make("tls"))).start()
        servers = Servers(sink, dovecot, dovecot.add_user())
        with tempfile.TemporaryDirectory(prefix="mapispool-crash-") as work:
            report = crash_run(
                Path(work),
                servers,
                kills=args.kills,
                per_cycle=args.per_cycle,
                inbound_per_cycle=args.inbound_per_cycle,
                max_kill_delay=args.max_kill_delay,
                inbound=args.inbound,
                seed=args.seed,
                progress=True,
            )
    finally:
        if sink is not None:
            sink.stop()
        if dovecot is not None:
            dovecot.stop()
        dirs.remove()
    for line in report.lines():
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

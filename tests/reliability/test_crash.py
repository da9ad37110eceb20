"""Crash safety (DESIGN §7): a spooler killed with SIGKILL at any moment loses nothing,
resends only what it marks uncertain, stores inbound mail exactly once, and leaves a store
that the next process opens cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench.crash import Servers, crash_run

from mapispool.mapi import FLUSH_UPLOAD
from mapispool.profile import Profile
from mapispool.session import Session
from mapispool.store import QueueState, SqliteStore
from tests.conftest import StoreBackend
from tests.servers.dovecot import DovecotServer, MailUser
from tests.servers.smtp import SmtpServerFactory
from tests.servers.smtp_sink import SmtpSink
from tests.sync_store import SyncStore

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


def test_random_kills_lose_nothing(
    tmp_path: Path, smtp_sink: SmtpSink, dovecot: DovecotServer, dovecot_user: MailUser
) -> None:
    """Five SIGKILLs at random moments of Send/Receive runs (smtp-sink out, Dovecot in
    with delete): no message lost, duplicates only among uncertain, inbound exactly once."""
    report = crash_run(
        tmp_path, Servers(smtp_sink, dovecot, dovecot_user), kills=5, per_cycle=15, seed=5
    )
    assert report.ok, "\n".join(report.lines())
    assert report.delivered + report.uncertain - report.uncertain_delivered == report.submitted
    assert report.inbound_stored == report.inbound_sent


def after_the_lease(backend: StoreBackend) -> dict[str, int] | None:
    """By design, a PostgreSQL store gives a killed worker's claims back only once their
    lease has run out (many workers share it: only the lease tells a dead worker from a
    slow one), not at the next start as SQLite's one-spooler store does. There, run the
    repair that any worker runs after the lease (with a clock past it) and return its
    counts; None on SQLite, where the next spooler's start repairs."""
    if not backend.is_postgres:
        return None

    async def repair() -> dict[str, int]:
        store = await backend.open()
        try:
            return dict(await store.recover(parked=False, now=time.time() + 3600))
        finally:
            await store.close()

    return asyncio.run(repair())


# Kills the spooler right after the server accepted the message and the transport
# recorded the end of the hand-over, before the spooler committed the outcome.
_KILL_AFTER_REPLY = """
import json, os, signal, sys
from mapispool.mapi import FLUSH_UPLOAD
from mapispool.profile import Profile
from mapispool.session import Session
from mapispool.spi import messages

original = messages.OutboundMessage.end_handoff

def end_handoff(self):
    original(self)
    os.kill(os.getpid(), signal.SIGKILL)

messages.OutboundMessage.end_handoff = end_handoff
with Session.logon(Profile.from_dict(json.loads(sys.argv[1]))) as session:
    session.spooler_status().flush_queues(FLUSH_UPLOAD)
"""


def test_kill_between_server_reply_and_commit_is_uncertain(
    store_backend: StoreBackend, smtp_server_factory: SmtpServerFactory
) -> None:
    """The server said 250 but the process died before recording it: the restarted
    spooler marks the message uncertain instead of sending it a second time."""
    server = smtp_server_factory()
    data = {
        **store_backend.options(),
        "send_immediately": False,
        "transports": {
            "out": {"provider": "smtp", "host": server.host, "port": server.port, "tls": "none"}
        },
    }
    with Session.logon(Profile.from_dict(data)) as session:
        entry_id = session.submit(b"From: a@x.test\r\nTo: b@x.test\r\nSubject: once\r\n\r\nhi\r\n")
    child = subprocess.run(
        [sys.executable, "-c", _KILL_AFTER_REPLY, json.dumps(data)],
        env=ENV,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode(errors="replace")
    server.wait_for(1)
    repaired = after_the_lease(store_backend)
    with Session.logon(Profile.from_dict(data)) as session:
        recovered = session.spooler.recovered if repaired is None else repaired
        assert recovered["uncertain"] == 1
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        entry = session.queue_entry(entry_id)
        assert entry.state is QueueState.UNCERTAIN
        assert entry.last_error is not None
        assert "handed over" in entry.last_error
    assert len(server.messages) == 1


# Commits every recipient's outcome, then dies before the message is finished.
_KILL_AFTER_OUTCOME = """
import json, os, signal, sys
from mapispool.mapi import FLUSH_UPLOAD
from mapispool.profile import Profile
from mapispool.session import Session
from mapispool.store import SqliteStore
from mapispool.store.postgres import PostgresStore

def dying(original):
    async def record(self, outcomes, **kwargs):
        if any(o.recipient_outcomes for o in outcomes):
            # Commit the recipients' outcomes alone, then die before the message is finished.
            await original(self, [o for o in outcomes if o.state is None], **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        return await original(self, outcomes, **kwargs)
    return record

SqliteStore.record = dying(SqliteStore.record)
PostgresStore.record = dying(PostgresStore.record)
with Session.logon(Profile.from_dict(json.loads(sys.argv[1]))) as session:
    session.spooler_status().flush_queues(FLUSH_UPLOAD)
"""


def test_kill_after_outcome_committed_finishes_on_restart(
    store_backend: StoreBackend, smtp_server_factory: SmtpServerFactory
) -> None:
    """Outcomes committed, message not yet moved: the next spooler moves it to Sent Items
    at start, without sending it again and without calling it uncertain."""
    server = smtp_server_factory()
    data = {
        **store_backend.options(),
        "send_immediately": False,
        "transports": {
            "out": {"provider": "smtp", "host": server.host, "port": server.port, "tls": "none"}
        },
    }
    with Session.logon(Profile.from_dict(data)) as session:
        entry_id = session.submit(b"From: a@x.test\r\nTo: b@x.test\r\nSubject: one\r\n\r\nhi\r\n")
    child = subprocess.run(
        [sys.executable, "-c", _KILL_AFTER_OUTCOME, json.dumps(data)],
        env=ENV,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode(errors="replace")
    after_the_lease(store_backend)
    with Session.logon(Profile.from_dict(data)) as session:
        assert session.queue_entry(entry_id).state is QueueState.SENT
        assert [m.entry_id for m in session.folder("Sent Items").messages()] == [entry_id]
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert len(server.messages) == 1


# Submits messages as fast as it can and prints each entry id once submit returned.
_SUBMITTER = """
import sys
from datetime import UTC, datetime
import time
import asyncio
from mapispool.store import SqliteStore
from mapispool.submission import prepare

async def main():
    store = SqliteStore(sys.argv[1])
    n = 0
    while True:
        n += 1
        prepared = prepare(
            b"From: a@x.test\\r\\nTo: b@x.test\\r\\nSubject: s%d\\r\\n\\r\\n" % n + b"x" * 20000,
            recipients=None, now=datetime.now(UTC),
        )
        now = time.time()
        entry_id = await store.submit(prepared.content, prepared.props, prepared.recipients,
                                      submit_time=now, not_before=None, expires_at=now + 3600)
        print(entry_id.hex(), flush=True)

asyncio.run(main())
"""


@pytest.mark.sqlite_only("SQLite's file under a killed writer")
def test_store_survives_kill_during_writes(tmp_path: Path) -> None:
    """SIGKILL while another process writes as fast as it can, five times over: the store
    passes SQLite's integrity check, every acknowledged submit is there, and the store a
    killed process left opens and starts a spooler at once (no stale lock)."""
    path = tmp_path / "store.db"
    SqliteStore(path).close_blocking()
    acknowledged: list[str] = []
    for delay in (0.05, 0.1, 0.2, 0.3, 0.5):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SUBMITTER, str(path)],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline()  # it is writing now
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        out, _err = proc.communicate()
        acknowledged += [line for line in out.decode().split() if line]
    assert len(acknowledged) > 5
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    store = SyncStore(path)
    try:
        assert store.acquire_spooler_lock()
        present = {e.entry_id.hex() for e in store.outgoing_queue()}
    finally:
        store.close()
    assert set(acknowledged) <= present


@pytest.mark.sqlite_only("SQLite's write-ahead log after a kill")
def test_store_left_by_killed_spooler_opens_cleanly(tmp_path: Path) -> None:
    """A spooler process killed while it holds the store (WAL, -shm and lock files left
    behind) does not stop the next one from starting or reading every message."""
    data = {
        "store": str(tmp_path / "store.db"),
        "send_immediately": False,
        "transports": {"a": {"provider": "loopback"}},
    }
    script = (
        "import json, os, signal, sys\n"
        "from mapispool.profile import Profile\n"
        "from mapispool.session import Session\n"
        "s = Session.logon(Profile.from_dict(json.loads(sys.argv[1])))\n"
        "for n in range(20):\n"
        "    s.submit(b'From: a@x.test\\r\\nTo: b@x.test\\r\\nSubject: k\\r\\n\\r\\nhi\\r\\n')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script, json.dumps(data)],
        env=ENV,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode(errors="replace")
    assert (tmp_path / "store.db-wal").exists()
    with Session.logon(Profile.from_dict(data)) as session:
        assert len(session.outgoing_queue()) == 20

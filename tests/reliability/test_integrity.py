"""The store keeps its promises about data (issue #10 item 2 and "Integrity"): a message
sent later than the lifetime is not expired before it is due; a stored message whose bytes
changed is never sent, but visibly failed; a store that lost commits (a truncated WAL) says
so in the status table."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mapispool.mapi import (
    FLUSH_UPLOAD,
    MAPI_E_NETWORK_ERROR,
    PR_MESSAGE_CLASS,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    STATUS_FAILURE,
)
from mapispool.profile import Profile
from mapispool.session import Session
from mapispool.store import QueueState
from mapispool.store.sqlite.schema import migrate
from mapispool.testing import Raise, TransportScript
from tests.conftest import StoreBackend
from tests.servers.smtp import SmtpServer
from tests.sync_store import SyncStore

MESSAGE = b"From: a@x.test\r\nTo: b@x.test\r\nSubject: later\r\n\r\nhello\r\n"


def store_keys(where: Path | StoreBackend) -> dict[str, str]:
    """The profile's store keys: a test's store backend, or a SQLite file in a directory."""
    if isinstance(where, StoreBackend):
        return where.options()
    return {"store": str(where / "store.db")}


def profile(
    where: Path | StoreBackend, script: TransportScript | None = None, **retry: Any
) -> Profile:
    return Profile.from_dict(
        {
            **store_keys(where),
            "send_immediately": False,
            "retry": {"floor": 60, "cap": 600, **retry},
            "transports": {"a": {"provider": "recording", "script": script or TransportScript()}},
        }
    )


# -- item 2: the lifetime counts from when the message becomes due ---------------------------


def test_send_later_beyond_the_lifetime_waits_then_is_sent(store_backend: StoreBackend) -> None:
    """A message deferred further ahead than retry.lifetime is neither expired nor
    reported undeliverable while it waits, and is sent once it is due."""
    script = TransportScript()
    with Session.logon(profile(store_backend, script, lifetime=0.5)) as session:
        due = datetime.now(UTC) + timedelta(seconds=1.0)
        entry_id = session.submit(MESSAGE, deferred_send_time=due)
        entry = session.queue_entry(entry_id)
        assert entry.expires_at >= due.timestamp() + 0.5
        time.sleep(0.6)  # past submit time + lifetime, before the message is due
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert session.folder("Inbox").count() == 0
        if time.time() < due.timestamp():
            assert session.queue_entry(entry_id).state is QueueState.DEFERRED
        while time.time() < due.timestamp():
            time.sleep(0.05)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert session.queue_entry(entry_id).state is QueueState.SENT
        assert session.folder("Inbox").count() == 0


def _version3_store(path: Path) -> sqlite3.Connection:
    """A store as mapispool wrote it before this fix (schema version 3)."""
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=3)
    return conn


@pytest.mark.sqlite_only("a migration of the SQLite schema")
def test_migration_moves_the_expiry_and_reopens_messages_expired_too_early(
    tmp_path: Path,
) -> None:
    """An older store's send-later rows get their expiry counted from the send time; one
    that the old rule already expired while it waited (every recipient failed, still
    'deferred' for ever) is pending again, with an event that says so."""
    path = tmp_path / "store.db"
    with Session.logon(profile(tmp_path, lifetime=100)) as session:
        due = datetime.now(UTC) + timedelta(days=30)
        waiting = session.submit(MESSAGE, deferred_send_time=due)
        stuck = session.submit(MESSAGE, deferred_send_time=due)
        plain = session.submit(MESSAGE)
    conn = sqlite3.connect(path, isolation_level=None)
    # Put the rows back the way version 3 left them: expiry from submission, and one
    # message already "expired" while it waited.
    conn.execute("UPDATE queue SET expires_at = submit_time + 100")
    conn.execute(
        "UPDATE recipients SET outcome = 'failed', ndr_sent = 1, responsibility = 1,"
        " report_text = 'gave up after the message lifetime; last error: not sent in time'"
        " WHERE message_id = (SELECT id FROM messages WHERE entry_id = ?)",
        (stuck,),
    )
    # Version 5's additions go too (claims, the 8-bit flag, status rows per worker).
    for column in ("claim_token", "lease_until", "claimed_by", "claimed_from"):
        conn.execute(f"ALTER TABLE queue DROP COLUMN {column}")
    conn.execute("ALTER TABLE messages DROP COLUMN eight_bit")
    conn.execute("ALTER TABLE messages DROP COLUMN canonical")  # version 6's
    conn.execute("DELETE FROM store_meta WHERE key = 'claim_token'")
    conn.execute("DROP TABLE status_rows_by_worker")
    conn.execute(
        "CREATE TABLE status_rows (name TEXT PRIMARY KEY, position INTEGER NOT NULL,"
        " props TEXT NOT NULL, updated_at REAL NOT NULL)"
    )
    conn.execute("ALTER TABLE queue DROP COLUMN due_at")
    conn.execute("ALTER TABLE contents DROP COLUMN sha256")
    conn.execute("DROP TABLE store_meta")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    store = SyncStore(path)
    try:
        for entry_id in (waiting, stuck):
            entry = store.queue_entry(entry_id)
            assert entry.state is QueueState.DEFERRED
            assert abs(entry.expires_at - (due.timestamp() + 100)) < 1e-3
        assert store.queue_entry(plain).expires_at == store.queue_entry(plain).submit_time + 100
        assert [o for _r, o, _t, _s in store.recipient_outcomes(stuck)] == [None]
        assert "expiry-corrected" in [e.kind for e in store.events(stuck)]
        assert "expiry-corrected" not in [e.kind for e in store.events(waiting)]
    finally:
        store.close()


def test_delay_warning_counts_from_the_send_time(store_backend: StoreBackend) -> None:
    """retry.delay_warning counts from when a send-later message became due, not from its
    submission: a message that failed right after its time came gets no notice yet."""
    script = TransportScript()
    script.on("later", Raise(MAPI_E_NETWORK_ERROR, message="connection refused"))
    with Session.logon(profile(store_backend, script, delay_warning=1.0)) as session:
        due = datetime.now(UTC) + timedelta(seconds=1.05)
        entry_id = session.submit(MESSAGE, deferred_send_time=due)
        while time.time() < due.timestamp():
            time.sleep(0.05)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert session.queue_entry(entry_id).state is QueueState.RETRY
        if time.time() < due.timestamp() + 1.0:  # else the notice is due anyway (a slow run)
            assert session.folder("Inbox").count() == 0
        while time.time() < due.timestamp() + 1.0:
            time.sleep(0.05)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        (notice,) = session.folder("Inbox").messages()
        assert notice.props[PR_MESSAGE_CLASS] == "Report.IPM.Note.DelayedDR"


# -- a checksum of every stored message --------------------------------------------------------


def smtp_profile(where: Path | StoreBackend, server: SmtpServer) -> Profile:
    return Profile.from_dict(
        {
            **store_keys(where),
            "send_immediately": False,
            "transports": {
                "mail": {"provider": "smtp", "host": server.host, "port": server.port,
                         "tls": "none"},
            },
        }
    )  # fmt: skip


def flip_a_byte(where: Path | StoreBackend, entry_id: bytes, offset: int) -> None:
    """Change one byte of a stored content behind the store's back, as a damaged disk
    or a stray write would (a SQLite file, or a test's store backend)."""
    if isinstance(where, StoreBackend):
        if where.is_postgres:
            _flip_a_byte_postgres(where, entry_id, offset)
            return
        where = where.tmp_path / "store.db"
    conn = sqlite3.connect(where, isolation_level=None)
    (data,) = conn.execute(
        "SELECT c.data FROM contents c JOIN messages m ON m.id = c.message_id WHERE m.entry_id = ?",
        (entry_id,),
    ).fetchone()
    changed = bytearray(data)
    changed[offset] ^= 0x20
    conn.execute(
        "UPDATE contents SET data = ? WHERE message_id = (SELECT id FROM messages"
        " WHERE entry_id = ?)",
        (bytes(changed), entry_id),
    )
    conn.close()


def _flip_a_byte_postgres(backend: StoreBackend, entry_id: bytes, offset: int) -> None:
    import psycopg

    assert backend.postgres_url is not None
    with psycopg.connect(backend.postgres_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{backend.schema()}"')
        conn.execute(
            "UPDATE contents c SET data = overlay(c.data PLACING"
            " set_byte('\\x00'::bytea, 0, get_byte(c.data, %s) # 32) FROM %s FOR 1)"
            " FROM messages m WHERE m.id = c.message_id AND m.entry_id = %s",
            (offset, offset + 1, entry_id),
        )


def stored_event_kinds(backend: StoreBackend, entry_id: bytes) -> list[str]:
    """The kinds of the events the store recorded for a message (a handle of our own)."""

    async def read() -> list[str]:
        store = await backend.open()
        try:
            return [e.kind for e in await store.events(entry_id)]
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.mark.parametrize("size", [200, 3 << 20], ids=["small", "streamed"])
def test_a_corrupt_stored_message_is_never_sent_but_visibly_failed(
    store_backend: StoreBackend, smtp_server: SmtpServer, size: int
) -> None:
    """A byte flipped in a stored body: the SMTP server never receives the message (a
    streamed one neither: its last bytes are never handed over); the message ends
    'failed' with a last error naming the corruption, an NDR says why, and a sound
    message beside it is sent."""
    body = (b"x" * 76 + b"\r\n") * (size // 78 + 1)
    corrupt_message = b"From: a@x.test\r\nTo: b@x.test\r\nSubject: damaged\r\n\r\n" + body
    with Session.logon(smtp_profile(store_backend, smtp_server)) as session:
        bad = session.submit(corrupt_message)
        good = session.submit(MESSAGE)
        flip_a_byte(store_backend, bad, len(corrupt_message) - 10)
        result = session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert result is not None
        entry = session.queue_entry(bad)
        assert entry.state is QueueState.FAILED
        assert "corrupt" in (entry.last_error or "")
        assert session.queue_entry(good).state is QueueState.SENT
        (ndr,) = session.folder("Inbox").messages()
        assert ndr.message_class == "Report.IPM.Note.NDR"
        assert b"corrupt" in ndr.content
    assert [b"Subject: later" in t.data for t in smtp_server.messages] == [True]
    assert "corrupt" in stored_event_kinds(store_backend, bad)


@pytest.mark.sqlite_only("SQLite stores written before checksums")
def test_messages_stored_before_checksums_are_sent_unchecked(tmp_path: Path) -> None:
    """A content without a checksum (stored by an older version) is read as it is."""
    script = TransportScript()
    with Session.logon(profile(tmp_path, script)) as session:
        entry_id = session.submit(MESSAGE)
        conn = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
        conn.execute("UPDATE contents SET sha256 = NULL")
        conn.close()
        flip_a_byte(tmp_path / "store.db", entry_id, len(MESSAGE) - 3)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert session.queue_entry(entry_id).state is QueueState.SENT


# -- a store that lost commits ----------------------------------------------------------------

CRASHING_SUBMITTER = """
import os, sqlite3, sys
from mapispool.profile import Profile
from mapispool.session import Session
data = {"store": sys.argv[1], "send_immediately": False,
        "transports": {"a": {"provider": "loopback"}}}
session = Session.logon(Profile.from_dict(data))
message = b"From: a@x.test\\r\\nTo: b@x.test\\r\\nSubject: %d\\r\\n\\r\\nx\\r\\n"
session.submit(message % 1 + b"y" * int(sys.argv[2]) + b"\\r\\n")
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the first submission is in the main file
conn.close()
session.submit(message % 2)
session.submit(message % 3)
os._exit(0)  # a crash: no logoff, the write-ahead log still holds submissions 2 and 3
"""


def spooler_row(session: Session) -> dict[int, Any]:
    return dict(session.status_table()[0])


@pytest.mark.sqlite_only("SQLite's write-ahead log")
def test_a_truncated_wal_is_detected_and_reported(tmp_path: Path) -> None:
    """Submissions lost with a truncated write-ahead log after a crash are noticed at the
    next start: the spooler row shows STATUS_FAILURE with a status string saying how many
    were lost, once; the store's quick_check runs after the unclean stop."""
    store_path = tmp_path / "store.db"
    subprocess.run(
        [sys.executable, "-c", CRASHING_SUBMITTER, str(store_path), "0"], check=True, timeout=60
    )
    wal = Path(f"{store_path}-wal")
    assert wal.stat().st_size > 0
    wal.write_bytes(b"")  # what a crash of the machine can leave, or a careless copy
    Path(f"{store_path}-shm").unlink()
    loopback = Profile.from_dict(
        {"store": str(store_path), "send_immediately": False,
         "transports": {"a": {"provider": "loopback"}}}
    )  # fmt: skip
    with Session.logon(loopback) as session:
        assert [e.subject for e in session.outgoing_queue()] == ["1"]
        row = spooler_row(session)
        assert row[PR_STATUS_CODE] & STATUS_FAILURE
        assert "lost its last 2 submission(s)" in row[PR_STATUS_STRING]
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert spooler_row(session)[PR_STATUS_CODE] & STATUS_FAILURE  # still shown
    with Session.logon(loopback) as session:  # reported once; a clean store is quiet
        assert not spooler_row(session)[PR_STATUS_CODE] & STATUS_FAILURE


@pytest.mark.sqlite_only("SQLite's write-ahead log")
def test_an_intact_store_after_a_crash_is_not_reported(tmp_path: Path) -> None:
    """A crash that lost nothing (the write-ahead log intact) raises no alarm."""
    store_path = tmp_path / "store.db"
    subprocess.run(
        [sys.executable, "-c", CRASHING_SUBMITTER, str(store_path), "0"], check=True, timeout=60
    )
    loopback = Profile.from_dict(
        {"store": str(store_path), "send_immediately": False,
         "transports": {"a": {"provider": "loopback"}}}
    )  # fmt: skip
    with Session.logon(loopback) as session:
        assert [e.subject for e in session.outgoing_queue()] == ["1", "2", "3"]
        assert not spooler_row(session)[PR_STATUS_CODE] & STATUS_FAILURE


@pytest.mark.sqlite_only("SQLite's write-ahead log")
def test_a_damaged_store_after_a_crash_is_reported(tmp_path: Path) -> None:
    """After an unclean stop the next spooler runs PRAGMA quick_check: a damaged page in
    the store (here in the middle of a large message) shows on the spooler row, with
    what to do."""
    store_path = tmp_path / "store.db"
    subprocess.run(
        [sys.executable, "-c", CRASHING_SUBMITTER, str(store_path), str(400_000)],
        check=True,
        timeout=60,
    )
    size = store_path.stat().st_size
    with store_path.open("r+b") as out:
        out.seek(size // 2 // 4096 * 4096)
        out.write(b"\xde\xad" * 4096)
    loopback = Profile.from_dict(
        {"store": str(store_path), "send_immediately": False,
         "transports": {"a": {"provider": "loopback"}}}
    )  # fmt: skip
    with Session.logon(loopback) as session:
        row = spooler_row(session)
        assert row[PR_STATUS_CODE] & STATUS_FAILURE
        assert "damaged" in row[PR_STATUS_STRING]
        assert ".recover" in row[PR_STATUS_STRING]

"""The store: the queue's state machine, submit order, recovery after a crash, migrations."""

from __future__ import annotations

import sqlite3
import time

import pytest

from mapispool.mapi import MAPI_E_VERSION, PR_SUBJECT, MapiError
from mapispool.session import all_entries
from mapispool.spi import Recipient
from mapispool.store import (
    TRANSITIONS,
    Delivery,
    InvalidTransition,
    Outcome,
    QueueState,
    SqliteStore,
    Store,
)
from mapispool.store.sqlite.schema import latest_version, migrate


async def submit(store: Store, subject: str, when: float | None = None) -> bytes:
    now = time.time() if when is None else when
    return await store.submit(
        b"Subject: " + subject.encode() + b"\r\n\r\nx\r\n",
        {PR_SUBJECT: subject},
        [Recipient("bob@example.test")],
        submit_time=now,
        not_before=None,
        expires_at=now + 3600,
    )


@pytest.fixture
async def store(tmp_path):
    s = await SqliteStore.open(str(tmp_path / "store.db"))
    yield s
    await s.close()


async def transition(store: Store, entry_id: bytes, state: QueueState, **changes) -> None:
    await store.record_one(Outcome(entry_id, state, **changes))


async def test_submit_writes_message_and_queue_entry_in_submit_order(store):
    """Queue order is PR_CLIENT_SUBMIT_TIME order, not insertion order."""
    late = await submit(store, "late", when=200.0)
    early = await submit(store, "early", when=100.0)
    assert [e.entry_id for e in await all_entries(store)] == [early, late]
    assert [e.entry_id for e in await store.due_entries(time.time())] == [early, late]
    assert (await store.message(late)).folder == "Outbox"
    assert (await store.queue_entry(early)).state is QueueState.QUEUED


async def test_state_machine_refuses_illegal_transitions(store):
    """Finished states are final; every transition is checked against the table."""
    entry_id = await submit(store, "m")
    await transition(store, entry_id, QueueState.IN_FLIGHT)
    await transition(store, entry_id, QueueState.RETRY, not_before=time.time() + 60, error="451")
    assert (await store.queue_entry(entry_id)).last_error == "451"
    with pytest.raises(InvalidTransition):
        await transition(store, entry_id, QueueState.PARKED)
    await transition(store, entry_id, QueueState.IN_FLIGHT)
    await transition(store, entry_id, QueueState.SENT, folder="Sent Items")
    for state in QueueState:
        with pytest.raises(InvalidTransition):
            await transition(store, entry_id, state)
    assert TRANSITIONS[QueueState.SENT] == frozenset()
    events = await store.events(entry_id)
    assert [e.kind for e in events][:3] == ["submitted", "in_flight", "retry"]


async def test_recovery_requeues_or_marks_uncertain(tmp_path):
    """Closing the store with messages in flight: the one not yet handed over is queued
    again, the one whose hand-over had begun becomes uncertain; nothing is lost."""
    store = SqliteStore(tmp_path / "store.db")
    before = await submit(store, "before")
    after = await submit(store, "after")
    for entry_id in (before, after):
        await transition(store, entry_id, QueueState.IN_FLIGHT)
    await store.mark_handoff(after, None, True)
    await store.close()  # the process dies here
    reopened = SqliteStore(tmp_path / "store.db")
    counts = await reopened.recover()
    assert counts == {"requeued": 1, "uncertain": 1, "unparked": 0}
    assert (await reopened.queue_entry(before)).state is QueueState.QUEUED
    assert (await reopened.queue_entry(after)).state is QueueState.UNCERTAIN
    assert "handed over" in ((await reopened.queue_entry(after)).last_error or "")
    await reopened.close()


async def test_dedupe_keys_make_delivery_exactly_once(store):
    """A second delivery with the same dedupe key stores nothing."""
    item = Delivery("Inbox", b"Subject: a\r\n\r\n", {}, dedupe_key="imap:1:7")
    (first,) = await store.deliver([item])
    (again,) = await store.deliver([item])
    assert first is not None
    assert again is None
    assert await store.message_count("Inbox") == 1
    assert await store.has_dedupe_key("imap:1:7")


def test_migrating_an_old_store_gives_the_current_schema(tmp_path):
    """A store created at version 1 opens, migrates, and matches a fresh store's schema."""
    old = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    migrate(old, target=1)
    old.close()
    SqliteStore(tmp_path / "old.db").close_blocking()
    SqliteStore(tmp_path / "new.db").close_blocking()

    def schema(path):
        conn = sqlite3.connect(path)
        rows = conn.execute(
            "SELECT type, name, tbl_name FROM sqlite_master ORDER BY name"
        ).fetchall()
        columns = {t: conn.execute(f"PRAGMA table_info({t})").fetchall()
                   for _k, t, _n in rows if _k == "table"}  # fmt: skip
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.close()
        return rows, columns, version

    assert schema(tmp_path / "old.db") == schema(tmp_path / "new.db")
    assert schema(tmp_path / "new.db")[2] == latest_version()


def test_store_from_a_newer_version_is_refused(tmp_path):
    """A schema newer than this mapispool knows is MAPI_E_VERSION with an explanation."""
    SqliteStore(tmp_path / "s.db").close_blocking()
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute(f"PRAGMA user_version = {latest_version() + 1}")
    conn.close()
    with pytest.raises(MapiError) as error:
        SqliteStore(tmp_path / "s.db")
    assert error.value.hresult == MAPI_E_VERSION
    assert "upgrade mapispool" in str(error.value)


def test_store_file_is_private(tmp_path):
    """The store is created mode 0600."""
    SqliteStore(tmp_path / "p.db").close_blocking()
    assert (tmp_path / "p.db").stat().st_mode & 0o777 == 0o600


async def test_only_one_spooler_per_store(tmp_path):
    """The spooler lock is exclusive."""
    one, two = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "s.db")
    assert await one.acquire_spooler_lock()
    assert not await two.acquire_spooler_lock()
    await one.close()
    assert await two.acquire_spooler_lock()
    await two.close()


async def test_transport_state_keeps_json_values(store):
    """Support.set_state promises JSON values: dicts, lists, numbers and strings survive."""
    value = {"INBOX": {"uidvalidity": 7, "seen": [1, 2]}, "name": "x", "n": 1.5}
    await store.set_transport_state("imap", "folders", value)
    assert await store.get_transport_state("imap", "folders") == value
    assert await store.get_transport_state("imap", "absent") is None

"""The SQLite store's group commit of submissions (``store.sqlite.submits``) and the
synchronous ``Session.submit`` that feeds it from the caller's own thread."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mapispool.mapi import PR_SUBJECT, MapiError
from mapispool.profile import Profile
from mapispool.session import Session
from mapispool.store.model import QueueState, Recipient
from mapispool.store.sqlite import SqliteStore
from mapispool.store.sqlite.integrity import read_seq
from mapispool.store.sqlite.submits import SUBMIT_GROUP_LIMIT
from mapispool.store.types import Submission


def item(subject: str, address: str = "bob@example.test") -> Submission:
    now = time.time()
    body = b"Subject: " + subject.encode() + b"\r\nTo: bob@example.test\r\n\r\nhi\r\n"
    return Submission(body, {PR_SUBJECT: subject}, [Recipient(address)], now, None, now + 3600)


def test_submissions_queued_while_the_writer_is_busy_commit_together(tmp_path: Path):
    """Five submissions handed in while the writer thread is held up are stored by one
    transaction and each caller gets its
    own entry id; one refused submission fails alone."""
    store = SqliteStore(tmp_path / "store.db")
    try:
        gate = threading.Event()
        store._write_thread.submit(gate.wait)  # the writer is busy until the gate opens
        futures = [store._submits.submit(item(f"m{i}")) for i in range(4)]
        # A recipient without an address breaks a NOT NULL constraint of the store.
        refused = store._submits.submit(item("bad", address=None))  # type: ignore[arg-type]
        futures.append(store._submits.submit(item("m4")))
        statements: list[str] = []
        store._writer.conn.set_trace_callback(statements.append)
        gate.set()
        ids = [f.result(timeout=30) for f in futures]
        with pytest.raises(MapiError):
            refused.result(timeout=30)
        store._write_thread.run_blocking(lambda: store._writer.conn.set_trace_callback(None))
        assert statements.count("COMMIT") == 1  # one fsync'd transaction for all six
        assert read_seq(store.path) == 5
        assert len(set(ids)) == 5
        for entry_id in ids:
            assert store._read_thread.run_blocking(lambda e=entry_id: store._reader.message_id(e))
    finally:
        store.close_blocking()


def test_session_submit_from_many_threads(tmp_path: Path):
    """The synchronous ``Session.submit`` stores from the caller's thread: threads that
    submit at once each get their message queued, durable and in order of their own
    calls."""
    profile = Profile.from_dict(
        {"store": str(tmp_path / "store.db"), "send_immediately": False,
         "transports": {"out": {"provider": "loopback"}}}
    )  # fmt: skip
    raw = b"From: a@example.test\r\nTo: bob@example.test\r\nSubject: %d\r\n\r\nhi\r\n"
    with Session.logon(profile) as session:

        def submit_ten(worker: int) -> list[bytes]:
            return [session.submit(raw % (worker * 10 + i)) for i in range(10)]

        with ThreadPoolExecutor(4) as pool:
            ids = [entry for batch in pool.map(submit_ten, range(4)) for entry in batch]
        queue = session.outgoing_queue()
    assert sorted(e.entry_id for e in queue) == sorted(ids)
    assert {e.state for e in queue} == {QueueState.QUEUED}
    assert read_seq(tmp_path / "store.db") == 40


def test_submissions_left_when_the_store_closes_get_an_error_not_a_hang(tmp_path: Path):
    """More submissions than one batch takes, and the writer thread stops taking work
    after the first batch: the first batch is stored, every caller left gets a
    ``MapiError`` at once."""
    store = SqliteStore(tmp_path / "store.db")
    try:
        gate = threading.Event()
        store._write_thread.submit(gate.wait)
        futures = [store._submits.submit(item(f"m{i}")) for i in range(SUBMIT_GROUP_LIMIT + 5)]
        store._write_thread._pool.shutdown(wait=False)  # the store is closing
        gate.set()
        stored = [f for f in futures[:SUBMIT_GROUP_LIMIT] if f.result(timeout=60)]
        assert len(stored) == SUBMIT_GROUP_LIMIT
        for future in futures[SUBMIT_GROUP_LIMIT:]:
            with pytest.raises(MapiError, match="closed before"):
                future.result(timeout=60)
    finally:
        store.close_blocking()

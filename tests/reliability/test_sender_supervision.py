"""Issue #10 item 3: an error in the background sender (here a real store fault: an SQLite
trigger that aborts marking a message sent, as a full disk would) never ends sending
silently. The error is logged and shown on the spooler's status row, the sender starts
again after a back-off, and the message the error left in flight goes back to the queue,
at the latest when the spooler stops."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mapispool.mapi import (
    FLUSH_FORCE,
    FLUSH_UPLOAD,
    PR_ENTRYID,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    STATUS_AVAILABLE,
    STATUS_FAILURE,
)
from mapispool.profile import Profile
from mapispool.session import AsyncSession
from mapispool.spooler import supervision
from mapispool.store import QueueState
from mapispool.testing import TransportScript
from tests.acceptance.test_cli_daemon import Daemon, _wait
from tests.acceptance.test_cli_support import message as cli_message
from tests.acceptance.test_cli_support import run, smtp_profile
from tests.conformance.conftest import message
from tests.conftest import StoreBackend
from tests.servers.smtp import SmtpServer

FAULT = "injected fault: the disk is full"


#: A store's location for the fault helpers: a SQLite file, or a test's store backend.
Where = Path | StoreBackend


def _sqlite_path(store: Where) -> Path | None:
    if isinstance(store, StoreBackend):
        return None if store.is_postgres else store.tmp_path / "store.db"
    return store


def _on_postgres(store: StoreBackend, *statements: str) -> list[Any]:
    """Run ``statements`` in the store's schema (from another connection, as another
    process would); the rows of the last one, if any. An async test calls the fault
    helpers through ``asyncio.to_thread``: their DDL waits for the table locks of the
    store's open transactions, which end only while the test's event loop runs."""
    import psycopg

    assert store.postgres_url is not None
    with psycopg.connect(store.postgres_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{store.schema()}"')
        cur = None
        for statement in statements:
            cur = conn.execute(statement)
        return cur.fetchall() if cur is not None and cur.description else []


def _pg_fault(store: StoreBackend, table: str, column: str, condition: str) -> None:
    _on_postgres(
        store,
        "CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF {condition} THEN RAISE EXCEPTION '{FAULT}'; END IF; RETURN NEW; END $$",
        f"CREATE TRIGGER inject_fault BEFORE UPDATE OF {column} ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION inject_fault()",
    )


def inject_fault(store: Where, state: str = "sent") -> None:
    """From another connection, as another process would: make every change of a queue
    entry to ``state`` fail inside the store, as SQLITE_FULL would. 'sent' hits the
    recording of an attempt's outcome (the outbound runner survives it and shows it on
    the spooler's row); 'in_flight' hits the start of an offer, outside any attempt, so
    the failure ends the background task that offered it. On PostgreSQL the same with a
    trigger that raises."""
    path = _sqlite_path(store)
    if path is None:
        assert isinstance(store, StoreBackend)
        _pg_fault(store, "queue", "state", f"NEW.state = '{state}'")
        return
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TRIGGER inject_fault BEFORE UPDATE OF state ON queue"
            f" WHEN NEW.state = '{state}' BEGIN SELECT RAISE(ABORT, '{FAULT}'); END"
        )


def poison(store: Where, subject: str) -> None:
    """Make recording any recipient's outcome fail for the message with this subject
    only: the store error hits that message every time it is sent."""
    path = _sqlite_path(store)
    if path is None:
        assert isinstance(store, StoreBackend)
        _pg_fault(
            store, "recipients", "outcome",
            f"NEW.message_id = (SELECT id FROM messages WHERE subject = '{subject}')",
        )  # fmt: skip
        return
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TRIGGER inject_fault BEFORE UPDATE OF outcome ON recipients"
            f" WHEN NEW.message_id = (SELECT id FROM messages WHERE subject = '{subject}')"
            f" BEGIN SELECT RAISE(ABORT, '{FAULT}'); END"
        )


def clear_fault(store: Where) -> None:
    path = _sqlite_path(store)
    if path is None:
        assert isinstance(store, StoreBackend)
        _on_postgres(store, "DROP FUNCTION inject_fault() CASCADE")
        return
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER inject_fault")


def queue_states(store: Where) -> dict[str, str]:
    """Subject -> queue state, read straight from the store."""
    query = "SELECT m.subject, q.state FROM queue q JOIN messages m ON m.id = q.message_id"
    path = _sqlite_path(store)
    if path is None:
        assert isinstance(store, StoreBackend)
        rows = _on_postgres(store, query)
    else:
        with sqlite3.connect(path) as conn:
            rows = conn.execute(query).fetchall()
    return {str(subject): str(state) for subject, state in rows}


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    """Wait until ``check()`` holds; the limit only keeps a broken run from hanging."""
    deadline = time.monotonic() + 30
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restart failed tasks after 50-200 ms instead of 1-60 s (the test waits for them)."""
    monkeypatch.setattr(supervision, "RESTART_FIRST_DELAY", 0.05)
    monkeypatch.setattr(supervision, "RESTART_MAX_DELAY", 0.2)


async def logon(
    store: StoreBackend, script: TransportScript, *, send_immediately: bool = True
) -> AsyncSession:
    profile = Profile.from_dict(
        {
            **store.options(),
            "send_immediately": send_immediately,
            "transports": {"a": {"provider": "recording", "script": script}},
        }
    )
    return await AsyncSession.logon(profile)


@pytest.mark.parametrize("max_in_flight", [1, 2])
async def test_a_store_error_in_the_sender_is_reported_and_sending_goes_on(
    store_backend: StoreBackend,
    quick_restarts: None,
    caplog: pytest.LogCaptureFixture,
    max_in_flight: int,
) -> None:
    """While the store fails, the spooler's row shows STATUS_FAILURE naming the error and
    the log has it; once the store works again, the message caught by the fault and one
    submitted meanwhile are both sent (each handed to the transport once), and the row is
    available again. With two offers at once the error still reads as the store's."""
    caplog.set_level(logging.ERROR, logger="mapispool.spooler")
    script = TransportScript(max_in_flight=max_in_flight)
    session = await logon(store_backend, script)
    store = store_backend
    try:
        await asyncio.to_thread(inject_fault, store)
        first = await session.submit(message("first"))

        async def failure_shown() -> bool:
            # The failed recording shows first; the sender's own failure follows once it
            # tries to finish the message again (the store's calls take turns with this
            # check, so wait for the sender's part of the row).
            row = (await session.status_table())[0]
            text = str(row.get(PR_STATUS_STRING) or "")
            return bool(row[PR_STATUS_CODE] & STATUS_FAILURE) and "Background sending" in text

        await eventually(failure_shown, "the spooler's row shows the failure")
        row = (await session.status_table())[0]
        assert "Background sending failed" in row[PR_STATUS_STRING]
        assert FAULT in row[PR_STATUS_STRING]
        assert any(
            "background task sender failed" in r.getMessage() and FAULT in r.getMessage()
            for r in caplog.records
        )
        second = await session.submit(message("second"))
        await asyncio.to_thread(clear_fault, store)

        async def both_sent() -> bool:
            states = [(await session.queue_entry(e)).state for e in (first, second)]
            return states == [QueueState.SENT, QueueState.SENT]

        await eventually(both_sent, "both messages sent after the fault")
        assert sorted(subject for subject, _to in script.sent) == ["first", "second"]

        async def recovered() -> bool:
            code = (await session.status_table())[0][PR_STATUS_CODE]
            return bool(code & STATUS_AVAILABLE) and not code & STATUS_FAILURE

        await eventually(recovered, "the spooler's row is available again")
    finally:
        await session.logoff()


async def test_the_request_server_survives_a_store_error_in_a_requested_flush(
    store_backend: StoreBackend, quick_restarts: None
) -> None:
    """FlushQueues on the transport's own status object runs into the store fault: the
    spooler's row names the failed request server, and the request is not dropped: once
    the store works again it is served and the message is sent."""
    script = TransportScript()
    session = await logon(store_backend, script, send_immediately=False)
    store = store_backend
    try:
        await asyncio.to_thread(inject_fault, store, "in_flight")
        entry_id = await session.submit(message("requested"))
        transport = session.open_status((await session.status_table())[1][PR_ENTRYID])
        await transport.flush_queues(FLUSH_UPLOAD)

        async def failure_shown() -> bool:
            row = (await session.status_table())[0]
            return "Serving flush requests failed" in str(row[PR_STATUS_STRING])

        await eventually(failure_shown, "the spooler's row names the request server")
        await asyncio.to_thread(clear_fault, store)
        # The message that met the error waits its retry delay (one failing message never
        # blocks the others); a forced Send/Receive sends it now.
        await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE, wait=True)
        assert (await session.queue_entry(entry_id)).state is QueueState.SENT
        assert script.sent == [("requested", ("bob@example.test",))]

        async def recovered() -> bool:
            return not (await session.status_table())[0][PR_STATUS_CODE] & STATUS_FAILURE

        await eventually(recovered, "the spooler's row is available again")
    finally:
        await session.logoff()


async def test_a_message_that_always_fails_in_the_store_does_not_block_the_others(
    store_backend: StoreBackend, quick_restarts: None
) -> None:
    """The store fails every time it records the outcome of one message (the first in the
    queue): that message is put back and waits its retry delay while the messages after
    it are sent; its history names the error; a forced Send/Receive sends it once the
    store works."""
    script = TransportScript()
    session = await logon(store_backend, script)
    store = store_backend
    try:
        await asyncio.to_thread(poison, store, "poison")
        bad = await session.submit(message("poison"))
        good = [await session.submit(message(f"good {n}")) for n in range(2)]

        async def good_sent() -> bool:
            states = {(await session.queue_entry(e)).state for e in good}
            return states == {QueueState.SENT}

        async def bad_put_back() -> bool:
            return (await session.queue_entry(bad)).state is QueueState.RETRY

        await eventually(good_sent, "the messages after the failing one were sent")
        # Outcomes are recorded after the transport's slot is free, so the later messages
        # may be recorded before the failing one is put back: wait for both.
        await eventually(bad_put_back, "the failing message was put back to wait its retry")
        entry = await session.queue_entry(bad)
        assert FAULT in (entry.last_error or "")
        await asyncio.to_thread(clear_fault, store)
        await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE, wait=True)
        assert (await session.queue_entry(bad)).state is QueueState.SENT
    finally:
        await session.logoff()


async def test_a_message_left_in_flight_is_back_in_the_queue_after_shutdown(
    store_backend: StoreBackend, quick_restarts: None
) -> None:
    """The spooler stops while the fault lasts: the message is queued, not in_flight; the
    next start finishes it as sent without handing it to the transport again."""
    script = TransportScript()
    session = await logon(store_backend, script)
    store = store_backend
    try:
        await asyncio.to_thread(inject_fault, store)
        entry_id = await session.submit(message("caught"))

        async def tried() -> bool:
            return bool(script.sent)

        await eventually(tried, "the transport took the message")
    finally:
        await session.logoff()
    # The outcome could not be recorded: back on the retry schedule, never in flight.
    assert queue_states(store) == {"caught": "retry"}
    await asyncio.to_thread(clear_fault, store)
    again = await logon(store_backend, script)
    try:
        assert (await again.queue_entry(entry_id)).state is QueueState.SENT
        assert script.sent == [("caught", ("bob@example.test",))]
    finally:
        await again.logoff()


def test_daemon_reports_the_failure_and_sigterm_leaves_nothing_in_flight(tmp_path: Path) -> None:
    """``mapispool serve`` sending over SMTP while the store fails: ``status`` shows the
    failure on the spooler row, and after SIGTERM (exit 0) the message is queued, not
    in_flight; a later Send/Receive finishes it without sending it twice."""
    server = SmtpServer()
    server.start()
    try:
        profile = smtp_profile(tmp_path, server.port, send_immediately=True)
        store = tmp_path / "store.db"
        daemon = Daemon(profile)
        try:
            inject_fault(store)
            done = run(profile, "submit", stdin=cli_message("caught"))
            assert done.returncode == 0, done.stderr
            server.wait_for(1, timeout=20)
            _wait(lambda: "could not record the outcome" in daemon.log.read_text(), 20)
            rows = json.loads(run(profile, "status", "--json").stdout)
            assert "FAILURE" in " ".join(rows[0]["status_bits"])
            assert FAULT in rows[0]["status_string"]
        finally:
            assert daemon.stop() == 0, daemon.log.read_text()  # SIGTERM
        assert queue_states(store) == {"caught": "retry"}
        clear_fault(store)
        flushed = run(profile, "flush", "--json")
        assert flushed.returncode == 0, flushed.stderr
        assert queue_states(store) == {"caught": "sent"}
        assert len(server.messages) == 1
    finally:
        server.stop()

"""The Python API beside a running ``mapispool serve`` (issue #10 item 11):
``Session.logon`` becomes the daemon's client instead of failing with ``MAPI_E_BUSY``, and
``Session.open`` works on the store alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from mapispool import AsyncSession, MapiError, Session
from mapispool.mapi import (
    FLUSH_ASYNC_OK,
    FLUSH_UPLOAD,
    MAPI_E_BUSY,
    MAPI_E_NO_SUPPORT,
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    PR_STATUS_CODE,
)
from mapispool.spooler.flush import FlushProgress, FlushResult
from mapispool.store import QueueState
from tests.acceptance.test_cli_support import message
from tests.acceptance.test_daemon_support import Serve, write_profile
from tests.servers.smtp import SmtpServer, SmtpTransaction


@pytest.fixture
def daemon(tmp_path: Path, smtp: SmtpServer) -> Iterator[tuple[Path, Serve]]:
    """A daemon that waits for a Send/Receive (so the queue can be looked at)."""
    profile = write_profile(tmp_path, "store.db", smtp.port, eager=False)
    serve = Serve(profile).wait_started()
    try:
        yield profile, serve
    finally:
        assert serve.stop() == 0, serve.text()
        assert "Traceback" not in serve.text()


def _email(subject: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "me@example.test"
    mail["To"] = "carol@example.test"
    mail["Subject"] = subject
    mail.set_content("Hello, Carol.")
    return mail


def test_logon_while_serve_runs_is_a_client_of_the_daemon(
    daemon: tuple[Path, Serve], smtp: SmtpServer
) -> None:
    """submit, queue, status and flush work through the daemon; Sent Items shows the
    result; the daemon sent each message once."""
    profile, serve = daemon
    with Session.logon(profile) as session:
        assert session.mode == "client"
        first = session.submit(message("one"))
        second = session.submit(_email("two"), recipients=["SMTP:carol@example.test"])
        queue = session.outgoing_queue()
        assert [e.entry_id for e in queue] == [first, second]
        assert {e.state for e in queue} == {QueueState.QUEUED}
        rows = session.status_table()
        assert [row[PR_DISPLAY_NAME] for row in rows] == ["Spooler", "out"]
        assert all(PR_STATUS_CODE in row and PR_ENTRYID in row for row in rows)
        events: list[FlushProgress] = []
        result = session.spooler_status().flush_queues(FLUSH_UPLOAD, progress=events.append)
        assert isinstance(result, FlushResult)
        assert result.transports["out"].sent == 2
        assert result.ok
        assert any(e.transport == "out" for e in events)
        assert session.outgoing_queue() == []
        sent = {m.entry_id for m in session.folder("Sent Items").messages()}
        assert sent == {first, second}
    assert "op=flush" in serve.text()
    assert sorted(t.rcpt_tos for t in smtp.messages) == [
        ("bob@example.test",),
        ("carol@example.test",),
    ]


def test_client_mode_async_flush_busy_and_queue_actions(
    daemon: tuple[Path, Serve], smtp: SmtpServer
) -> None:
    """FLUSH_ASYNC_OK returns a handle that waits for the daemon's flush, and a second
    request meanwhile is MAPI_E_BUSY; hold and release run in the daemon; a transport's
    status object stays in the daemon."""
    profile, _serve = daemon
    with Session.logon(profile) as session:
        entry = session.submit(message("later"))
        session.hold(entry)
        assert session.queue_entry(entry).state is QueueState.HELD
        held = session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert isinstance(held, FlushResult)
        assert held.transports["out"].sent == 0
        session.release(entry)
        gate = threading.Event()

        def held_open(transaction: SmtpTransaction) -> str:
            gate.wait(60)  # keeps the daemon's flush running until the test has looked
            return "250 2.0.0 OK"

        smtp.set_data_answer(held_open)
        handle = session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_ASYNC_OK)
        assert handle is not None
        assert not isinstance(handle, FlushResult)
        with pytest.raises(MapiError) as busy:
            session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_ASYNC_OK)
        assert busy.value.hresult == MAPI_E_BUSY
        gate.set()
        assert handle.wait(timeout=60).transports["out"].sent == 1
        transport_row = session.status_table()[1]
        with pytest.raises(MapiError) as refused:
            session.open_status(bytes(transport_row[PR_ENTRYID]))
        assert refused.value.hresult == MAPI_E_NO_SUPPORT
    assert len(smtp.messages) == 1


def test_open_works_on_the_store_alone(daemon: tuple[Path, Serve], smtp: SmtpServer) -> None:
    """Session.open submits and reads the queue while the daemon runs; it cannot flush."""
    profile, _serve = daemon
    with Session.open(profile) as session:
        assert session.mode == "store"
        entry = session.submit(message("stored"))
        assert [e.entry_id for e in session.outgoing_queue()] == [entry]
        with pytest.raises(MapiError) as refused:
            session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert refused.value.hresult == MAPI_E_NO_SUPPORT
    with Session.logon(profile) as client:
        result = client.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert isinstance(result, FlushResult)
        assert result.transports["out"].sent == 1
    assert len(smtp.messages) == 1


def test_logon_beside_a_spooler_without_a_daemon_is_busy(tmp_path: Path, smtp: SmtpServer) -> None:
    """Another session's in-process spooler has no socket: logon is MAPI_E_BUSY as before."""
    profile = write_profile(tmp_path, "store.db", smtp.port, eager=False)
    with Session.logon(profile) as first:
        assert first.mode == "spooler"
        with pytest.raises(MapiError) as busy:
            Session.logon(profile)
        assert busy.value.hresult == MAPI_E_BUSY


def test_async_logon_while_serve_runs_is_a_client_too(
    daemon: tuple[Path, Serve], smtp: SmtpServer
) -> None:
    """AsyncSession.logon attaches the same way (Session is its façade)."""
    profile, _serve = daemon

    async def scenario() -> int:
        async with await AsyncSession.logon(profile) as session:
            assert session.mode == "client"
            await session.submit(message("async"))
            result = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
            assert isinstance(result, FlushResult)
            return result.transports["out"].sent

    assert asyncio.run(scenario()) == 1
    assert len(smtp.messages) == 1


def test_logoff_during_an_async_flush_leaves_the_daemon_flushing(
    daemon: tuple[Path, Serve], smtp: SmtpServer
) -> None:
    """A client that logs off without waiting stops only its own wait; the daemon's
    flush goes on and sends the message."""
    profile, _serve = daemon
    gate = threading.Event()

    def held_open(transaction: SmtpTransaction) -> str:
        gate.wait(60)
        return "250 2.0.0 OK"

    smtp.set_data_answer(held_open)
    with Session.logon(profile) as session:
        session.submit(message("goes on"))
        handle = session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_ASYNC_OK)
        assert handle is not None
    gate.set()
    [sent] = smtp.wait_for(1, timeout=60)
    assert b"Subject: goes on" in sent.data

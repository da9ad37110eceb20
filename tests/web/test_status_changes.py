"""session.status_changes() and advise_status(): MAPI's Advise on the status table, in a
session that runs the spooler and in one that is a running daemon's client."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from mapispool import AsyncSession, Session
from mapispool.mapi import FLUSH_UPLOAD, PR_STATUS_CODE, STATUS_OUTBOUND_FLUSH
from mapispool.profile import Profile
from mapispool.status_changes import StatusChange
from tests.servers.smtp import ACCEPTED, SmtpServer
from tests.web.conftest import WebDaemon, post, wait_until


def _profile(tmp_path: Path, port: int) -> Profile:
    return Profile.from_dict(
        {
            "store": str(tmp_path / "store.db"),
            "send_immediately": False,
            "transports": {"out": {"provider": "smtp", "host": "127.0.0.1", "port": port,
                                   "tls": "none"}},
        }
    )  # fmt: skip


async def test_status_changes_follow_a_flush(tmp_path: Path, smtp_server: SmtpServer) -> None:
    """The async iterator yields the transport's row as the flush sets and clears
    STATUS_OUTBOUND_FLUSH, in order."""
    async with await AsyncSession.logon(_profile(tmp_path, smtp_server.port)) as session:
        await session.submit(b"From: a@x.test\r\nTo: b@x.test\r\nSubject: s\r\n\r\nhi\r\n")
        seen: list[StatusChange] = []
        changes = session.status_changes()

        async def collect() -> None:
            async for change in changes:
                seen.append(change)
                flushing = int(change.row[PR_STATUS_CODE]) & STATUS_OUTBOUND_FLUSH
                if change.name == "spooler" and not flushing and len(seen) > 2:
                    return

        collector = asyncio.create_task(collect())
        await asyncio.sleep(0)  # the iterator is subscribed from its first step
        await session.spooler_status().flush_queues(FLUSH_UPLOAD)
        await asyncio.wait_for(collector, 30)
        await changes.aclose()
    out = [int(c.row[PR_STATUS_CODE]) & STATUS_OUTBOUND_FLUSH for c in seen if c.name == "out"]
    assert out[0]
    assert not out[-1]


def test_advise_status_calls_back_until_unadvise(tmp_path: Path, smtp_server: SmtpServer) -> None:
    """The sync Session's callback form: called on every change, not after Unadvise."""
    calls: list[str] = []
    lock = threading.Lock()

    def callback(change: StatusChange) -> None:
        with lock:
            calls.append(change.name)

    with Session.logon(_profile(tmp_path, smtp_server.port)) as session:
        unadvise = session.advise_status(callback)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert "spooler" in calls
        assert "out" in calls
        unadvise()
        unadvise()  # twice is harmless
        count = len(calls)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert len(calls) == count


def test_a_daemon_client_session_sees_the_daemons_changes(
    web_daemon: WebDaemon, smtp_server: SmtpServer
) -> None:
    """In client mode (a running `mapispool serve` holds the store) the callback reports
    the daemon's rows that changed, named as in the spooler's own table: here the
    spooler's and the transport's, while a flush through the daemon waits on the server
    (the rows are read once a second: a change undone within it is not seen)."""
    web_daemon.submit(1)
    release = threading.Event()
    smtp_server.set_data_answer(lambda _t: ACCEPTED if release.wait(30) else "451 4.0.0 late")
    calls: list[StatusChange] = []
    with Session.logon(web_daemon.profile) as session:
        assert session.mode == "client"
        unadvise = session.advise_status(calls.append)
        try:
            with web_daemon.client() as client:
                assert post(client, "/api/flush", {}).status_code == 202
            wait_until(lambda: {c.name for c in calls} == {"spooler", "out"})
        finally:
            release.set()
            unadvise()
    flushing = [c for c in calls if int(c.row[PR_STATUS_CODE]) & STATUS_OUTBOUND_FLUSH]
    assert {c.name for c in flushing} == {"spooler", "out"}

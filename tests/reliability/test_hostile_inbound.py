"""IMAP and POP3 against hostile servers (issue #10, item 8): every response is bounded in
lines, bytes and time, and crossing a bound is a clear ``MapiError`` that drops the
connection, never a hang or unbounded memory. Nothing is stored partially, and a message
that lied about its size is left on the server and reported while the others flow.

The servers are small fakes on loopback (``tests/servers/hostile_inbound.py``); the
transports are driven through the SPI as the spooler drives them. Memory is checked with
``tracemalloc`` (Python allocations of every thread), not wall-clock time.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from mapispool.mapi import (
    MAPI_E_TIMEOUT,
    MAPI_E_TOO_BIG,
    STATUS_AVAILABLE,
    STATUS_OFFLINE,
    MapiError,
)
from mapispool.spi import TransportLogon
from mapispool.transports.imap import ImapLogon, ImapSettings
from mapispool.transports.pop3 import Pop3Logon, Pop3Settings
from tests.integration.test_imap_support import MemorySupport, drive_flush
from tests.servers.hostile_inbound import HostileServer, hostile_server, message

PASSWORD_ENV = "MAPISPOOL_TEST_HOSTILE_PASSWORD"
MiB = 1024 * 1024
T = TypeVar("T")


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "secret")


def section(server: HostileServer, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "tls": "none",
        "allow_plaintext_auth": True,
        "username": "me",
        "password_env": PASSWORD_ENV,
        "timeout": 10,
        "connect_timeout": 5,
    }
    base.update(over)
    return base


def imap(support: MemorySupport, server: HostileServer, **over: Any) -> ImapLogon:
    return ImapLogon(support, ImapSettings.parse(section(server, idle=False, **over)))


def pop3(support: MemorySupport, server: HostileServer, **over: Any) -> Pop3Logon:
    return Pop3Logon(support, Pop3Settings.parse(section(server, **over)))


async def peak_of(work: Awaitable[T]) -> tuple[T | BaseException, int]:
    """(result or raised exception, peak bytes Python allocated meanwhile)."""
    tracemalloc.start()
    try:
        try:
            result: T | BaseException = await work
        except Exception as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def failed_flush(logon: TransportLogon, support: MemorySupport) -> tuple[MapiError, int]:
    outcome, peak = await peak_of(drive_flush(logon, support))
    assert isinstance(outcome, MapiError), outcome
    return outcome, peak


def assert_reported(support: MemorySupport, error: MapiError) -> None:
    """The pass failed visibly: the row is OFFLINE with the error as its status."""
    assert support.status_code & STATUS_OFFLINE
    assert not support.status_code & STATUS_AVAILABLE
    assert str(error) in support.status_string


async def test_endless_imap_select_is_cut_off() -> None:
    """A SELECT answer that never ends: MAPI_E_TOO_BIG naming max_response_lines after
    that many lines, the connection dropped, memory bounded, nothing stored."""
    support = MemorySupport()
    with hostile_server("imap", "endless-select") as server:
        logon = imap(support, server, max_response_lines=5000)
        error, peak = await failed_flush(logon, support)
        assert not logon._conn.connected  # dropped, not left to read on
        await logon.logoff(0)
    assert error.hresult == MAPI_E_TOO_BIG
    assert "more than 5000 lines" in str(error)
    assert "max_response_lines" in str(error)
    assert "the connection was dropped" in str(error)
    assert_reported(support, error)
    assert support.messages == []
    assert peak < 16 * MiB, peak


async def test_endless_imap_select_of_long_lines_is_cut_off_by_bytes() -> None:
    """The byte bound holds too when the line count would not be reached."""
    support = MemorySupport()
    with hostile_server("imap", "endless-select") as server:
        logon = imap(support, server, max_response_bytes=256 * 1024)
        error, peak = await failed_flush(logon, support)
        await logon.logoff(0)
    assert error.hresult == MAPI_E_TOO_BIG
    assert "max_response_bytes" in str(error)
    assert peak < 16 * MiB, peak


async def test_trickling_imap_select_times_out() -> None:
    """A SELECT answer that trickles a line at a time never trips the socket timeout;
    the operation's deadline (timeout, plus timeout per 64 KiB) ends it."""
    support = MemorySupport()
    with hostile_server("imap", "trickle-select") as server:
        logon = imap(support, server, timeout=0.5)
        error, _ = await failed_flush(logon, support)
        await logon.logoff(0)
    assert error.hresult == MAPI_E_TIMEOUT
    assert "took too long" in str(error)
    assert "raise timeout" in str(error)
    assert_reported(support, error)


async def test_imap_literal_over_max_message_size_is_refused_then_left() -> None:
    """RFC822.SIZE says 100 bytes, the FETCH announces a 3 GB literal: refused before
    reading it; the next pass leaves that message on the server, reports it, and
    downloads the other one."""
    support = MemorySupport()
    messages = [message(1, announced=100), message(2)]
    with hostile_server("imap", "lying-literal", messages) as server:
        logon = imap(support, server, max_message_size=MiB, batch_size=1)
        error, peak = await failed_flush(logon, support)
        assert error.hresult == MAPI_E_TOO_BIG
        assert "max_message_size" in str(error)
        assert peak < 16 * MiB, peak
        assert support.messages == []
        server.mode = "normal"
        server.messages[0] = message(1, announced=100)
        assert await drive_flush(logon, support) == 1
        await logon.logoff(0)
    assert [key for key, _ in support.messages] == ["imap:me@127.0.0.1/INBOX:7:2"]
    assert "message UID 1 in INBOX although RFC822.SIZE said 100" in support.status_string


async def test_imap_message_over_max_message_size_is_left_and_reported() -> None:
    """An honest RFC822.SIZE over the limit: never fetched, reported, the rest flows."""
    support = MemorySupport()
    messages = [message(1, body_size=200_000), message(2)]
    with hostile_server("imap", "normal", messages) as server:
        logon = imap(support, server, max_message_size=100_000)
        assert await drive_flush(logon, support) == 1
        assert await logon.poll() == 0  # the big one is not "waiting" for ever
        await logon.logoff(0)
    assert [key for key, _ in support.messages] == ["imap:me@127.0.0.1/INBOX:7:2"]
    assert "over max_message_size (100000): left on the server" in support.status_string
    fetches = [c for c in server.commands if "BODY.PEEK[]" in c.upper()]
    assert fetches
    assert all(" FETCH 1 " not in c.upper() for c in fetches)


async def test_endless_pop3_uidl_is_cut_off() -> None:
    """A UIDL listing that never ends: MAPI_E_TOO_BIG, dropped, bounded, nothing stored."""
    support = MemorySupport()
    with hostile_server("pop3", "endless-uidl") as server:
        logon = pop3(support, server, max_response_lines=5000)
        error, peak = await failed_flush(logon, support)
        assert not logon._conn.connected
        await logon.logoff(0)
    assert error.hresult == MAPI_E_TOO_BIG
    assert "max_response_lines" in str(error)
    assert_reported(support, error)
    assert support.messages == []
    assert peak < 16 * MiB, peak


@pytest.mark.parametrize("mode", ["endless-retr", "normal"], ids=["never-ends", "much-more"])
async def test_pop3_message_larger_than_listed_is_refused_then_left(mode: str) -> None:
    """LIST says 100 bytes; RETR sends 3 MiB (or never ends). The download stops at
    max_message_size with MAPI_E_TOO_BIG, nothing of it is stored, no DELE is sent; the
    next pass leaves it on the server (reported, never RETR'd again) and stores the rest.
    """
    support = MemorySupport()
    messages = [message(1, body_size=3 * MiB, announced=100), message(2)]
    with hostile_server("pop3", mode, messages) as server:
        logon = pop3(support, server, max_message_size=MiB, action="delete")
        error, peak = await failed_flush(logon, support)
        assert error.hresult == MAPI_E_TOO_BIG
        assert "message 1 is larger than max_message_size" in str(error)
        assert_reported(support, error)
        assert support.messages == []
        assert peak < 3 * MiB, peak
        assert not server.saw("DELE")
        retrs = len(server.saw("RETR 1"))
        assert await drive_flush(logon, support) == 1
        await logon.logoff(0)
    assert [key for key, _ in support.messages] == ["pop3:me@127.0.0.1:uid-2"]
    assert len(server.saw("RETR 1")) == retrs  # not downloaded again
    assert server.saw("DELE") == ["DELE 2"]
    assert "sent more than max_message_size" in support.status_string
    assert "although LIST said 100" in support.status_string


async def test_pop3_long_lines_and_dot_stuffing_arrive_intact() -> None:
    """The bounded RETR keeps what poplib did right (dot-stuffing undone, CRLF line
    ends) and accepts lines longer than poplib's 2048 bytes."""
    body = b"a" * 5000 + b"\r\n..leading dot\r\n.\r\nend\r\n"
    data = b"From: a@example.test\r\nSubject: long\r\n\r\n" + body
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    support = MemorySupport()
    mailbox = message(1)
    mailbox.data = stuffed
    with hostile_server("pop3", "normal", [mailbox]) as server:
        logon = pop3(support, server)
        assert await drive_flush(logon, support) == 1
        await logon.logoff(0)
    assert support.messages[0][1] == data


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
async def test_a_large_message_is_held_about_once(protocol: str) -> None:
    """A 16 MiB message costs about its size while it is downloaded and stored (the
    store here is memory, so one copy stays): imaplib's debug repr of each literal and
    poplib's list of lines made it three to four times that."""
    size = 16 * MiB
    support = MemorySupport()
    with hostile_server(protocol, "normal", [message(1, size)]) as server:
        make = imap if protocol == "imap" else pop3
        logon = make(support, server)
        outcome, peak = await peak_of(drive_flush(logon, support))
        await logon.logoff(0)
    assert outcome == 1
    assert len(support.messages[0][1]) > size
    assert peak < 2.5 * size, peak / size


def test_a_flush_reports_the_crossed_bound(tmp_path: Any) -> None:
    """Through the public API: Send/Receive against an endless POP3 listing returns, its
    result names the error for the transport, and the status row shows it."""
    from mapispool import Profile, Session
    from mapispool.mapi import FLUSH_DOWNLOAD, PR_DISPLAY_NAME, PR_STATUS_CODE, PR_STATUS_STRING

    with hostile_server("pop3", "endless-uidl") as server:
        profile = Profile.from_dict(
            {
                "store": str(tmp_path / "store.db"),
                "send_immediately": False,
                "transports": {
                    "hostile": {"provider": "pop3", **section(server, max_response_lines=2000)}
                },
            }
        )
        with Session.logon(profile) as session:
            result = session.spooler_status().flush_queues(FLUSH_DOWNLOAD)
            [row] = [r for r in session.status_table() if r[PR_DISPLAY_NAME] == "hostile"]
            inbox = list(session.folder("Inbox").messages())
    error = result.transports["hostile"].error
    assert error is not None
    assert "max_response_lines" in error
    assert row[PR_STATUS_CODE] & STATUS_OFFLINE
    assert "max_response_lines" in str(row[PR_STATUS_STRING])
    assert inbox == []

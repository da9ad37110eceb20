"""Bounces reach the sender: an NDR for mail that came in through the SMTP listener or
sendmail is also mailed to the envelope sender as an RFC 3464 DSN, with the null reverse
path; never for a null sender, never for a DSN; ``bounce_to_sender = false`` keeps NDRs in
the Inbox only. Against aiosmtpd refusing recipients with 550."""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import smtplib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mapispool.cli.sendmail import run as sendmail_run
from mapispool.listener.server import SmtpListener
from mapispool.listener.settings import ListenSettings
from mapispool.mapi import FLUSH_UPLOAD, PR_MESSAGE_CLASS
from mapispool.profile import Profile
from mapispool.session import AsyncSession
from tests.servers._util import HOST, free_port

REFUSE = "550 5.1.1 no such user"
MESSAGE = (
    b"From: App <app@example.test>\r\nTo: bad@example.test\r\nSubject: report\r\n\r\n"
    b"the nightly report\r\n"
)


def _profile_text(store: Path, relay_port: int, *, bounce: bool = True) -> str:
    return (
        f'store = "{store}"\nsend_immediately = false\n'
        f"bounce_to_sender = {str(bounce).lower()}\n\n"
        f'[transports.out]\nprovider = "smtp"\nhost = "{HOST}"\nport = {relay_port}\n'
        'tls = "none"\n'
    )


Logon = Callable[..., Any]


@pytest.fixture
async def logon(tmp_path: Path, smtp_server: Any) -> AsyncIterator[Logon]:
    sessions: list[AsyncSession] = []
    smtp_server.rcpt_answers.update({"bad@example.test": REFUSE, "gone@example.test": REFUSE})

    async def make(*, bounce: bool = True) -> AsyncSession:
        text = _profile_text(tmp_path / "store.db", smtp_server.port, bounce=bounce)
        path = tmp_path / "profile.toml"
        path.write_text(text, encoding="utf-8")
        session = await AsyncSession.logon(Profile.load(path), attach=False)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        await session.logoff()


async def _through_listener(session: AsyncSession, sender: str, rcpt: str) -> None:
    listener = SmtpListener(session, ListenSettings(host=HOST, port=free_port()))
    await listener.start()

    def send() -> None:
        with smtplib.SMTP(HOST, listener.port, timeout=30) as client:
            client.sendmail(sender, [rcpt], MESSAGE)

    try:
        await asyncio.to_thread(send)
    finally:
        await listener.stop()


async def _flush_until_idle(session: AsyncSession) -> None:
    """Send/Receive until the queue is empty (a DSN is queued by the first one)."""
    for _ in range(4):
        await session.spooler_status().flush_queues(FLUSH_UPLOAD)
        if all(e.state.finished for e in await session.outgoing_queue()):
            return
    raise AssertionError(f"the queue did not empty: {await session.outgoing_queue()}")


def _ndrs(messages: list[Any]) -> list[Any]:
    return [m for m in messages if str(m.props.get(PR_MESSAGE_CLASS, "")).endswith(".NDR")]


async def test_listener_bounce_reaches_the_envelope_sender(logon: Logon, smtp_server: Any) -> None:
    session = await logon()
    await _through_listener(session, "app@example.test", "bad@example.test")
    await _flush_until_idle(session)

    (dsn,) = smtp_server.messages
    assert dsn.mail_from == "<>"  # the null reverse path: a DSN never bounces back
    assert dsn.rcpt_tos == ("app@example.test",)
    parsed = email.message_from_bytes(dsn.data, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    status = parsed.get_payload()[1]
    assert status.get_content_type() == "message/delivery-status"
    text = dsn.data.decode()
    assert "Final-Recipient: rfc822; bad@example.test" in text
    assert "Action: failed" in text
    assert "Status: 5.1.1" in text
    assert "MAILER-DAEMON@" in str(parsed["From"])
    assert len(_ndrs(await session.folder("Inbox").messages())) == 1  # the Inbox keeps its copy


async def test_no_dsn_for_a_null_sender_or_for_a_failed_dsn(logon: Logon, smtp_server: Any) -> None:
    """MAIL FROM:<> gets no DSN; a DSN to a sender that is refused too gets no report
    of its own (loop protection): the server sees each refused address exactly once."""
    session = await logon()
    await _through_listener(session, "", "bad@example.test")
    await _through_listener(session, "gone@example.test", "bad@example.test")
    await _flush_until_idle(session)

    assert smtp_server.messages == []
    refused = sorted(address for address, _reply in smtp_server.refused_rcpts)
    assert refused == ["bad@example.test", "bad@example.test", "gone@example.test"]
    assert len(_ndrs(await session.folder("Inbox").messages())) == 2


async def test_bounce_to_sender_false_keeps_ndrs_in_the_inbox(
    logon: Logon, smtp_server: Any
) -> None:
    session = await logon(bounce=False)
    await _through_listener(session, "app@example.test", "bad@example.test")
    await _flush_until_idle(session)
    assert smtp_server.messages == []
    assert len(_ndrs(await session.folder("Inbox").messages())) == 1


async def test_sendmail_bounce_reaches_the_sender(
    logon: Logon, smtp_server: Any, tmp_path: Path
) -> None:
    """``mapispool sendmail -f app@example.test`` (no daemon: it writes the store), then
    a Send/Receive: the DSN goes to the -f address."""
    session = await logon()
    await session.logoff()
    code = await asyncio.to_thread(
        sendmail_run, ["-f", "app@example.test", "bad@example.test"], io.BytesIO(MESSAGE),
        tmp_path / "profile.toml",
    )  # fmt: skip
    assert code == 0
    session = await logon()
    await _flush_until_idle(session)
    (dsn,) = smtp_server.messages
    assert (dsn.mail_from, dsn.rcpt_tos) == ("<>", ("app@example.test",))


async def test_api_submissions_keep_their_ndr_in_the_inbox(logon: Logon, smtp_server: Any) -> None:
    """Session.submit is the store owner's own mail: its NDR stays in the Inbox."""
    session = await logon()
    await session.submit(MESSAGE, sender="app@example.test")
    await _flush_until_idle(session)
    assert smtp_server.messages == []
    assert len(_ndrs(await session.folder("Inbox").messages())) == 1

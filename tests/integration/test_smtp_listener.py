"""The SMTP listener of ``mapispool serve`` against real clients: smtplib (plain, AUTH,
STARTTLS, SIZE) and Postfix's smtp-source, on the daemon's own event loop and store."""

from __future__ import annotations

import asyncio
import smtplib
import subprocess
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest

from mapispool.listener.server import SmtpListener
from mapispool.listener.settings import ListenSettings
from mapispool.mapi import MAPI_BCC, MAPI_CC, MAPI_TO, PR_SENDER_EMAIL_ADDRESS
from mapispool.profile import Profile
from mapispool.session import AsyncSession
from mapispool.store import SqliteStore
from tests.servers._util import HOST, free_port, need


def _profile(tmp_path: Path, relay_port: int) -> Profile:
    return Profile.from_dict(
        {
            "store": str(tmp_path / "store.db"),
            "send_immediately": False,
            "transports": {
                "out": {"provider": "smtp", "host": HOST, "port": relay_port, "tls": "none"}
            },
        }
    )


@pytest.fixture
async def session(tmp_path: Path, smtp_server: Any) -> AsyncIterator[AsyncSession]:
    s = await AsyncSession.logon(_profile(tmp_path, smtp_server.port), attach=False)
    try:
        yield s
    finally:
        await s.logoff()


async def _listening(session: AsyncSession, **options: Any) -> SmtpListener:
    listener = SmtpListener(session, ListenSettings(host=HOST, port=free_port(), **options))
    await listener.start()
    return listener


def _message(subject: str = "hello", size: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"] = "app@example.test"
    msg["To"] = "bob@example.test"
    msg["Cc"] = "carol@example.test"
    msg["Bcc"] = "dave@example.test"
    msg["Subject"] = subject
    msg.set_content("hi\n" + ("x" * 75 + "\n") * (size // 76))
    return msg.as_bytes(policy=SMTP)  # CRLF: smtplib sends bytes as they are


def _send(port: int, rcpts: list[str], data: bytes, **login: Any) -> dict[str, Any]:
    with smtplib.SMTP(HOST, port, timeout=30) as client:
        client.ehlo()
        if login.get("tls"):
            client.starttls(context=login["tls"])
            client.ehlo()
        if login.get("user"):
            client.login(login["user"], login["password"])
        return client.sendmail("app@example.test", rcpts, data)


async def test_a_message_is_in_the_store_before_the_250(session: AsyncSession) -> None:
    """After the 250 to the final dot, another connection to the store file sees the
    message queued with the envelope's sender and recipients: To and Cc from the
    header, the envelope-only recipient blind, and no Bcc field in the stored bytes."""
    listener = await _listening(session)
    try:
        rcpts = ["bob@example.test", "carol@example.test", "erin@example.test"]
        refused = await asyncio.to_thread(_send, listener.port, rcpts, _message())
    finally:
        await listener.stop()
    assert refused == {}
    # A second store object on the file (its own connections): committed data only.
    other = await SqliteStore.open(str(session.profile.store_path()))
    try:
        (entry,) = await other.queue_page()
        stored = await other.message(entry.entry_id, content=False)
        props, recipients = stored.props, stored.recipients
        with other.open_content(entry.entry_id) as stream:
            content = stream.read()
    finally:
        await other.close()
    assert props[PR_SENDER_EMAIL_ADDRESS] == "app@example.test"
    types = {r.address: r.recipient_type for r in recipients}
    assert types == {"bob@example.test": MAPI_TO, "carol@example.test": MAPI_CC,
                     "erin@example.test": MAPI_BCC}  # fmt: skip
    assert b"\nBcc:" not in content
    assert b"dave@example.test" not in content


async def test_size_is_announced_and_enforced(session: AsyncSession) -> None:
    listener = await _listening(session, max_size=2048)

    def probe() -> tuple[str | None, int]:
        with smtplib.SMTP(HOST, listener.port, timeout=30) as client:
            client.ehlo()
            announced = client.esmtp_features.get("size")
            try:
                client.sendmail("app@example.test", ["bob@example.test"], _message(size=4096))
            except smtplib.SMTPSenderRefused as exc:
                return announced, exc.smtp_code
            return announced, 250

    try:
        announced, code = await asyncio.to_thread(probe)
    finally:
        await listener.stop()
    assert announced == "2048"
    assert code == 552
    assert await session.outgoing_queue() == []


async def test_auth_is_required_when_credentials_are_set(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LISTENER_PW", "s3cret")
    listener = await _listening(session, username="app", password_env="LISTENER_PW")

    def without_auth() -> int:
        try:
            _send(listener.port, ["bob@example.test"], _message())
        except smtplib.SMTPSenderRefused as exc:
            return exc.smtp_code
        return 250

    def wrong_password() -> int:
        try:
            _send(listener.port, ["bob@example.test"], _message(), user="app", password="nope")
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code
        return 250

    try:
        assert await asyncio.to_thread(without_auth) == 530
        assert await asyncio.to_thread(wrong_password) == 535
        await asyncio.to_thread(
            _send, listener.port, ["bob@example.test"], _message(), user="app", password="s3cret"
        )
    finally:
        await listener.stop()
    assert len(await session.outgoing_queue()) == 1


async def test_starttls_then_auth(
    session: AsyncSession, tls_ca: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a certificate the listener offers STARTTLS and takes AUTH only inside it."""
    monkeypatch.setenv("LISTENER_PW", "s3cret")
    listener = await _listening(
        session, username="app", password_env="LISTENER_PW",
        tls_cert=str(tls_ca.cert_pem), tls_key=str(tls_ca.key_pem),
    )  # fmt: skip

    def auth_in_clear() -> bool:
        with smtplib.SMTP(HOST, listener.port, timeout=30) as client:
            client.ehlo()
            return client.has_extn("auth")

    try:
        assert not await asyncio.to_thread(auth_in_clear)
        await asyncio.to_thread(
            _send, listener.port, ["bob@example.test"], _message(),
            user="app", password="s3cret", tls=tls_ca.client_context(),
        )  # fmt: skip
    finally:
        await listener.stop()
    assert len(await session.outgoing_queue()) == 1


async def test_a_full_store_answers_4xx_and_keeps_nothing(session: AsyncSession) -> None:
    """SQLite refusing to grow (its page limit: what a full disk looks like to it) makes
    the listener answer 452, so the client keeps the message and retries."""
    listener = await _listening(session)
    store = session.store
    assert isinstance(store, SqliteStore)

    def limit(db: Any) -> None:
        pages = db.conn.execute("PRAGMA page_count").fetchone()[0]
        db.conn.execute(f"PRAGMA max_page_count = {pages + 2}")

    await store._write(limit)

    def send_big() -> int:
        try:
            _send(listener.port, ["bob@example.test"], _message(size=200_000))
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code
        return 250

    try:
        code = await asyncio.to_thread(send_big)
    finally:
        await listener.stop()
    assert code == 452
    assert await session.outgoing_queue() == []


async def test_smtp_source_feeds_the_listener(session: AsyncSession) -> None:
    """Postfix's load generator: 40 messages over 4 sessions, every one queued."""
    tool = need("smtp-source")
    listener = await _listening(session)
    try:
        proc = await asyncio.create_subprocess_exec(
            tool, "-s", "4", "-m", "40", "-f", "app@example.test", "-t", "bob@example.test",
            f"{HOST}:{listener.port}",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await listener.stop()
    assert proc.returncode == 0, out.decode(errors="replace")
    queued = await session.outgoing_queue()
    assert len(queued) == 40
    assert {e.recipients for e in queued} == {("SMTP:bob@example.test",)}


async def test_require_tls_refuses_mail_before_starttls(session: AsyncSession, tls_ca: Any) -> None:
    listener = await _listening(
        session, tls_cert=str(tls_ca.cert_pem), tls_key=str(tls_ca.key_pem), require_tls=True
    )

    def in_clear() -> int:
        with smtplib.SMTP(HOST, listener.port, timeout=30) as client:
            client.ehlo()
            code, _text = client.mail("app@example.test")
            return code

    try:
        assert await asyncio.to_thread(in_clear) == 530
        await asyncio.to_thread(
            _send, listener.port, ["bob@example.test"], _message(), tls=tls_ca.client_context()
        )
    finally:
        await listener.stop()
    assert len(await session.outgoing_queue()) == 1

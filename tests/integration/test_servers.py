"""Smoke tests for the real-server fixtures in tests/servers, driven by stdlib clients."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from tests.servers.smtp import SmtpServer, SmtpServerFactory
from tests.servers.tls import TlsFiles

MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.test>\r\n"
    b"Subject: smoke\r\n"
    b"Message-ID: <smoke-1@example.test>\r\n"
    b"\r\n"
    b"Hello, Bob.\r\n"
    b".leading dot survives\r\n"
)


# -- aiosmtpd -------------------------------------------------------------------------


def test_aiosmtpd_records_envelope_and_exact_bytes(smtp_server: SmtpServer) -> None:
    """The aiosmtpd fixture records MAIL FROM, RCPT TOs, the exact DATA bytes and the peer."""
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        client.sendmail("alice@example.test", ["bob@example.test", "carol@example.test"], MESSAGE)
        local_port = client.sock.getsockname()[1]
    (got,) = smtp_server.wait_for(1)
    assert got.mail_from == "alice@example.test"
    assert got.rcpt_tos == ("bob@example.test", "carol@example.test")
    assert got.data == MESSAGE
    assert got.peer == ("127.0.0.1", local_port)
    assert not got.tls


def test_aiosmtpd_per_recipient_answers(smtp_server_factory: SmtpServerFactory) -> None:
    """Configured per-recipient 550/450 answers refuse just those recipients."""
    server = smtp_server_factory(
        rcpt_answers={
            "bad@x.test": "550 5.1.1 no such user",
            "later@x.test": "450 4.2.0 try later",
        }
    )
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        refused = client.sendmail("a@x.test", ["ok@x.test", "bad@x.test", "later@x.test"], MESSAGE)
    assert refused == {
        "bad@x.test": (550, b"5.1.1 no such user"),
        "later@x.test": (450, b"4.2.0 try later"),
    }
    (got,) = server.wait_for(1)
    assert got.rcpt_tos == ("ok@x.test",)
    assert server.refused_rcpts == [
        ("bad@x.test", "550 5.1.1 no such user"),
        ("later@x.test", "450 4.2.0 try later"),
    ]


def test_aiosmtpd_data_answers_in_order(smtp_server_factory: SmtpServerFactory) -> None:
    """Queued DATA answers are used once each, in order, before the default 250."""
    server = smtp_server_factory(data_answers=["451 4.3.0 disk full"])
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
        assert info.value.smtp_code == 451
        client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
    assert [t.reply[:3] for t in server.transactions] == ["451", "250"]
    assert len(server.messages) == 1


def test_aiosmtpd_starttls_with_test_ca(
    smtp_server_factory: SmtpServerFactory, tls_ca: TlsFiles
) -> None:
    """STARTTLS verifies against the fixture's CA (hostname checked) and is recorded as TLS."""
    server = smtp_server_factory(tls="starttls", require_starttls=True)
    assert server.ca_file == tls_ca.ca_pem
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        client.starttls(context=context)
        client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
    (got,) = server.wait_for(1)
    assert got.tls


def test_aiosmtpd_implicit_tls_and_auth(smtp_server_factory: SmtpServerFactory) -> None:
    """Implicit TLS with AUTH required accepts the right password and records the user."""
    server = smtp_server_factory(tls="implicit", auth=("joe", "s3cret"), auth_required=True)
    assert server.ca_file is not None
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with smtplib.SMTP_SSL(server.host, server.port, timeout=5, context=context) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("joe", "wrong")
        client.login("joe", "s3cret")
        client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
    (got,) = server.wait_for(1)
    assert got.tls
    assert got.auth_user == "joe"


def test_aiosmtpd_auth_login_over_plaintext(smtp_server_factory: SmtpServerFactory) -> None:
    """With auth_require_tls=False, AUTH LOGIN works without TLS and unauthenticated MAIL fails."""
    server = smtp_server_factory(auth=("joe", "pw"), auth_required=True, auth_require_tls=False)
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
        client.user, client.password = "joe", "pw"
        code, _ = client.auth("LOGIN", client.auth_login)
        assert code == 235
        client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
    (got,) = server.wait_for(1)
    assert got.auth_user == "joe"


async def test_aiosmtpd_wait_for_async(smtp_server: SmtpServer) -> None:
    """wait_for_async lets an async test wait without blocking its own event loop."""
    import asyncio

    def send() -> None:
        with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
            client.sendmail("a@x.test", ["b@x.test"], MESSAGE)

    sender = asyncio.get_running_loop().run_in_executor(None, send)
    got = await smtp_server.wait_for_async(1)
    await sender
    assert got[0].data == MESSAGE

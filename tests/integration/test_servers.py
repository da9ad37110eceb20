"""Smoke tests for the real-server fixtures in tests/servers, driven by stdlib clients."""

from __future__ import annotations

import asyncio
import imaplib
import poplib
import smtplib
import ssl

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.servers._util import need
from tests.servers.dovecot import DovecotServer, MailUser
from tests.servers.postfix import PostfixServer
from tests.servers.smtp import SmtpServer, SmtpServerFactory
from tests.servers.smtp_sink import SmtpSink, SmtpSinkFactory
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


# -- need() ---------------------------------------------------------------------------


def test_need_skips_locally_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing server binary skips the test, except under CI=true where it fails it."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install"):
        need("no-such-mail-server-binary")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        need("no-such-mail-server-binary")
    assert need("sh").endswith("/sh")


# -- aiosmtpd -------------------------------------------------------------------------


def test_aiosmtpd_records_envelope_and_exact_bytes(smtp_server: SmtpServer) -> None:
    """The aiosmtpd fixture records MAIL FROM, RCPT TOs, the exact DATA bytes and the peer."""
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        client.sendmail("alice@example.test", ["bob@example.test", "carol@example.test"], MESSAGE)
        assert client.sock is not None
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

    def send() -> None:
        with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
            client.sendmail("a@x.test", ["b@x.test"], MESSAGE)

    sender = asyncio.get_running_loop().run_in_executor(None, send)
    got = await smtp_server.wait_for_async(1)
    await sender
    assert got[0].data == MESSAGE


# -- smtp-sink ------------------------------------------------------------------------


def test_smtp_sink_dump_gives_envelope_and_body(smtp_sink: SmtpSink) -> None:
    """smtp-sink's dump files give back MAIL FROM, every RCPT TO and the unstuffed body."""
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=5) as client:
        client.sendmail("alice@example.test", ["bob@example.test", "carol@example.test"], MESSAGE)
        client.sendmail("second@example.test", ["bob@example.test"], MESSAGE)
    by_sender = {t.mail_from: t for t in smtp_sink.wait_for(2)}
    assert by_sender.keys() == {"alice@example.test", "second@example.test"}
    first = by_sender["alice@example.test"]
    assert first.rcpt_tos == ("bob@example.test", "carol@example.test")
    assert first.data == MESSAGE
    assert first.client_addr == "127.0.0.1"


def test_smtp_sink_soft_rejects_rcpt(smtp_sink_factory: SmtpSinkFactory) -> None:
    """soft_reject=["RCPT"] answers every RCPT TO with 4xx, so nothing is accepted."""
    sink = smtp_sink_factory(soft_reject=["RCPT"], soft_bounce_reply="451 4.3.0 come back later")
    client = smtplib.SMTP(sink.host, sink.port, timeout=5)
    with client, pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
    assert info.value.recipients == {"b@x.test": (451, b"4.3.0 come back later")}


def test_smtp_sink_421_on_data(smtp_sink_factory: SmtpSinkFactory) -> None:
    """reply_421=["DATA"] sends 421 to DATA and closes the connection."""
    sink = smtp_sink_factory(reply_421=["DATA"])
    client = smtplib.SMTP(sink.host, sink.port, timeout=5)
    try:
        with pytest.raises((smtplib.SMTPDataError, smtplib.SMTPServerDisconnected)) as info:
            client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
        if isinstance(info.value, smtplib.SMTPDataError):
            assert info.value.smtp_code == 421
    finally:
        client.close()


# -- Dovecot --------------------------------------------------------------------------


def test_dovecot_imap_plain_fetches_delivered_message(
    dovecot: DovecotServer, dovecot_user: MailUser
) -> None:
    """A message written by deliver() is fetched byte-for-byte (as CRLF) over plain IMAP."""
    dovecot.deliver(dovecot_user, MESSAGE.replace(b"\r\n", b"\n"))
    client = imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=5)
    try:
        client.login(dovecot_user.name, dovecot_user.password)
        status, data = client.select("INBOX")
        assert (status, data) == ("OK", [b"1"])
        status, fetched = client.fetch("1", "(BODY.PEEK[])")
        assert status == "OK"
        assert isinstance(fetched[0], tuple)
        assert fetched[0][1] == MESSAGE
    finally:
        client.logout()


def test_dovecot_imaps_and_starttls_with_test_ca(
    dovecot: DovecotServer, dovecot_user: MailUser
) -> None:
    """IMAPS and IMAP STARTTLS both verify against the fixture's CA and serve the same mailbox."""
    dovecot.deliver(dovecot_user, MESSAGE)
    dovecot.deliver(dovecot_user, MESSAGE, folder="Archive")
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    with IMAPClient(dovecot.host, dovecot.imaps_port, ssl=True, ssl_context=context) as client:
        client.login(dovecot_user.name, dovecot_user.password)
        client.select_folder("INBOX", readonly=True)
        (uid,) = client.search()
        assert client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"] == MESSAGE
        assert client.folder_exists("Archive")
    with IMAPClient(dovecot.host, dovecot.imap_port, ssl=False) as client:
        client.starttls(context)
        client.login(dovecot_user.name, dovecot_user.password)
        assert client.select_folder("Archive")[b"EXISTS"] == 1


def test_dovecot_pop3_uidl_retr_plain_stls_and_pop3s(
    dovecot: DovecotServer, dovecot_user: MailUser
) -> None:
    """POP3 (with STLS) and POP3S list stable UIDLs and RETR the delivered bytes."""
    dovecot.deliver(dovecot_user, MESSAGE)
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    plain = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=5)
    try:
        plain.stls(context)
        plain.user(dovecot_user.name)
        plain.pass_(dovecot_user.password)
        _, listing, _ = plain.uidl()
        _, lines, _ = plain.retr(1)
    finally:
        plain.quit()
    assert b"\r\n".join(lines) + b"\r\n" == MESSAGE
    secure = poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, timeout=5, context=context)
    try:
        secure.user(dovecot_user.name)
        secure.pass_(dovecot_user.password)
        assert secure.uidl()[1] == listing
    finally:
        secure.quit()


def test_dovecot_users_are_isolated_and_passwords_checked(dovecot: DovecotServer) -> None:
    """Users added at run time log in at once, see only their own mail; bad passwords fail."""
    first = dovecot.add_user()
    second = dovecot.add_user("second-user", "pw-2")
    dovecot.deliver(first, MESSAGE)
    with IMAPClient(dovecot.host, dovecot.imap_port, ssl=False) as client:
        with pytest.raises(LoginError):
            client.login(second.name, "wrong")
        client.login(second.name, "pw-2")
        assert client.select_folder("INBOX")[b"EXISTS"] == 0


def test_dovecot_restart_keeps_mail(dovecot: DovecotServer, dovecot_user: MailUser) -> None:
    """restart() brings Dovecot back on the same ports with the mail still there."""
    dovecot.deliver(dovecot_user, MESSAGE)
    dovecot.restart()
    with IMAPClient(dovecot.host, dovecot.imap_port, ssl=False) as client:
        client.login(dovecot_user.name, dovecot_user.password)
        assert client.select_folder("INBOX")[b"EXISTS"] == 1


# -- Postfix --------------------------------------------------------------------------


def test_postfix_delivers_into_dovecot_maildir(
    postfix: PostfixServer, dovecot: DovecotServer
) -> None:
    """Mail sent into the full Postfix lands in the Dovecot Maildir and is fetched over IMAP
    intact, while a foreign domain is refused at RCPT."""
    user = postfix.user
    with smtplib.SMTP(postfix.host, postfix.port, timeout=5) as client:
        refused = client.sendmail(
            "alice@other.test", [user.address, "gone@discard.test", "x@elsewhere.test"], MESSAGE
        )
    assert refused.keys() == {"x@elsewhere.test"}
    assert refused["x@elsewhere.test"][0] == 554
    postfix.wait_for_messages(1)
    with IMAPClient(dovecot.host, dovecot.imap_port, ssl=False) as client:
        client.login(user.name, user.password)
        client.select_folder("INBOX", readonly=True)
        (uid,) = client.search()
        fetched = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
    headers, _, body = fetched.partition(b"\r\n\r\n")
    assert body == MESSAGE.partition(b"\r\n\r\n")[2]
    assert b"Return-Path: <alice@other.test>" in headers
    assert b"Subject: smoke" in headers

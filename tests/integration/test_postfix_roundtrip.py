"""The whole path through real servers: mapispool's smtp transport submits to a full
Postfix, Postfix delivers into Dovecot, and mapispool's imap or pop3 transport downloads
each message exactly once, across repeated flushes and a restart of the session."""

from __future__ import annotations

from typing import Any

import pytest

from mapispool import Profile, Session
from mapispool.mapi import FLUSH_DOWNLOAD, FLUSH_UPLOAD
from tests.conftest import StoreBackend
from tests.servers.dovecot import DovecotServer, MailUser
from tests.servers.postfix import PostfixServer

PASSWORD_ENV = "MAPISPOOL_TEST_ROUNDTRIP_PASSWORD"


def profile(
    backend: StoreBackend,
    postfix: PostfixServer,
    dovecot: DovecotServer,
    user: MailUser,
    inbound: str,
) -> Profile:
    receive: dict[str, Any] = {
        "provider": inbound,
        "host": dovecot.host,
        "port": dovecot.imap_port if inbound == "imap" else dovecot.pop3_port,
        "tls": "none",
        "allow_plaintext_auth": True,
        "username": user.name,
        "password_env": PASSWORD_ENV,
        "timeout": 10,
    }
    if inbound == "imap":
        receive["batch_size"] = 3
    return Profile.from_dict({
        **backend.options(),
        "send_immediately": False,
        "transports": {
            "out": {"provider": "smtp", "host": postfix.host, "port": postfix.port,
                    "tls": "none", "timeout": 10},
            "in": receive,
        },
    })  # fmt: skip


@pytest.mark.parametrize("inbound", ["imap", "pop3"])
def test_mail_through_postfix_is_downloaded_exactly_once(
    store_backend: StoreBackend,
    postfix: PostfixServer,
    dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
    inbound: str,
) -> None:
    """Seven messages sent through Postfix arrive in Dovecot and then in the Inbox once,
    however often Send/Receive runs, also from a new session on the same store."""
    user = postfix.user
    monkeypatch.setenv(PASSWORD_ENV, user.password)
    subjects = [f"roundtrip {inbound} {n}" for n in range(7)]
    with Session.logon(profile(store_backend, postfix, dovecot, user, inbound)) as session:
        for subject in subjects:
            session.submit(
                f"From: me@other.test\r\nTo: {user.address}\r\nSubject: {subject}\r\n\r\n"
                f"body of {subject}\r\n".encode()
            )
        sent = session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert sent.transports["out"].sent == 7
        postfix.wait_for_messages(7)
        first = session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_DOWNLOAD)
        assert first.transports["in"].received == 7
        second = session.spooler_status().flush_queues(FLUSH_DOWNLOAD)
        assert second.transports["in"].received == 0
    with Session.logon(profile(store_backend, postfix, dovecot, user, inbound)) as again:
        third = again.spooler_status().flush_queues(FLUSH_DOWNLOAD)
        assert third.transports["in"].received == 0
        inbox = sorted(m.subject for m in again.folder("Inbox").messages())
    assert inbox == sorted(subjects)

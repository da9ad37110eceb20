"""Canonical form at submit (issue #11): the stored content has CRLF line ends and no Bcc
field, its 8-bit flag is stored with it, and the SMTP transport sends what was stored.

Through the public API into a real SQLite store, then to an in-process aiosmtpd server.
The stored rows are read with sqlite3, as a user inspecting the store would.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapispool.mapi import FLUSH_UPLOAD, MAPI_BCC, MAPI_TO, PR_SENDER_EMAIL_ADDRESS
from mapispool.profile import Profile
from mapispool.session import Session
from mapispool.store.model import Recipient
from tests.servers._util import HOST

#: Bare LF and bare CR line ends, a Bcc field, a body line starting with a dot and an
#: 8-bit body: everything canonical form changes or must keep.
SUBMITTED = (
    b"From: alice@x.test\n"
    b"To: bob@x.test\n"
    b"Bcc: carol@x.test\n"
    b"Subject: canonical\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\n"
    b"Message-ID: <canonical@x.test>\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"caf\xc3\xa9 au lait\n"
    b".a line with a leading dot\r"
    b"a CRLF line\r\n"
    b"Bcc: this line is in the body and stays\n"
)

CANONICAL = (
    b"From: alice@x.test\r\n"
    b"To: bob@x.test\r\n"
    b"Subject: canonical\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"Message-ID: <canonical@x.test>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"caf\xc3\xa9 au lait\r\n"
    b".a line with a leading dot\r\n"
    b"a CRLF line\r\n"
    b"Bcc: this line is in the body and stays\r\n"
)


@pytest.fixture
def session(tmp_path: Path, smtp_server: Any) -> Iterator[Any]:
    profile = Profile.from_dict(
        {
            "store": str(tmp_path / "store.db"),
            "send_immediately": False,
            "transports": {
                "out": {"provider": "smtp", "host": HOST, "port": smtp_server.port, "tls": "none"}
            },
        }
    )
    with Session.logon(profile) as opened:
        yield opened


def stored(session: Any, entry_id: bytes) -> tuple[bytes, bool]:
    """(content, eight_bit) of a message as the SQLite store holds it."""
    with sqlite3.connect(session.profile.store_path()) as conn:
        data, eight_bit = conn.execute(
            "SELECT c.data, m.eight_bit FROM messages m JOIN contents c ON c.message_id = m.id"
            " WHERE m.entry_id = ?",
            (entry_id,),
        ).fetchone()
    return bytes(data), bool(eight_bit)


def test_submit_stores_canonical_form_and_smtp_sends_it_as_stored(
    session: Any, smtp_server: Any
) -> None:
    entry_id = session.submit(SUBMITTED)
    content, eight_bit = stored(session, entry_id)
    assert content == CANONICAL
    assert eight_bit is True
    session.spooler_status().flush_queues(FLUSH_UPLOAD)
    [txn] = smtp_server.wait_for(1)
    assert txn.rcpt_tos == ("bob@x.test", "carol@x.test")
    assert txn.data == content  # the transport adds no trace header
    assert "BODY=8BITMIME" in txn.mail_options


def test_an_ascii_message_is_stored_without_the_8bit_flag(session: Any, smtp_server: Any) -> None:
    entry_id = session.submit(b"From: alice@x.test\nTo: bob@x.test\nSubject: plain\n\nplain text\n")
    content, eight_bit = stored(session, entry_id)
    assert b"\n" not in content.replace(b"\r\n", b"")
    assert eight_bit is False
    session.spooler_status().flush_queues(FLUSH_UPLOAD)
    [txn] = smtp_server.wait_for(1)
    assert txn.data == content
    assert "BODY=8BITMIME" not in txn.mail_options


def test_a_message_stored_before_canonical_form_still_goes_out_correctly(
    session: Any, smtp_server: Any
) -> None:
    """A message stored by an older version (LF line ends, a Bcc field, no flags) takes the
    careful path: CRLF on the wire, the Bcc field removed, 8BITMIME found by scanning."""
    recipients = [
        Recipient(address="bob@x.test", addrtype="SMTP", recipient_type=MAPI_TO),
        Recipient(address="carol@x.test", addrtype="SMTP", recipient_type=MAPI_BCC),
    ]
    now = time.time()
    session.call(
        lambda s: s.store.submit(
            SUBMITTED, {PR_SENDER_EMAIL_ADDRESS: "alice@x.test"}, recipients,
            submit_time=now, not_before=None, expires_at=now + 3600,
        )
    )  # fmt: skip
    session.spooler_status().flush_queues(FLUSH_UPLOAD)
    [txn] = smtp_server.wait_for(1)
    assert txn.rcpt_tos == ("bob@x.test", "carol@x.test")
    assert txn.data == CANONICAL
    assert "BODY=8BITMIME" in txn.mail_options

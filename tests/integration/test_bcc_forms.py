"""Every header form that counts as Bcc is removed at submit (issue #10, item 7).

Through the public API and a real delivery: a Session submits to local Maildirs (the
maildir transport delivers the stored bytes verbatim, so whatever submit leaves in the
header reaches every recipient). No Bcc form may reach any recipient, and every Bcc
address must still receive the message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapispool.mapi import FLUSH_UPLOAD
from mapispool.profile import Profile
from mapispool.session import Session
from mapispool.submission import prepare

BCC_FORMS = [
    b"Bcc: carol@local.test\r\n",
    b"Bcc : carol@local.test\r\n",
    b"BCC\t: carol@local.test\r\n",
    b"bcc:carol@local.test\r\n",
    b"Bcc:\r\n carol@local.test\r\n",
    b"Bcc \t:\r\n\tcarol@local.test,\r\n dave@local.test\r\n",
    b"Resent-Bcc: carol@local.test\r\n",
    b"RESENT-BCC : carol@local.test\r\n",
]

#: Any header line whose field name is Bcc or Resent-Bcc, whatever the case and blanks.
BCC_LINE = re.compile(rb"(?im)^(resent-)?bcc[ \t]*:")


def message(bcc_field: bytes, *, before: bytes = b"") -> bytes:
    return (
        b"From: alice@example.org\r\n"
        + before
        + b"To: bob@local.test\r\n"
        + bcc_field
        + b"Subject: bcc forms\r\n"
        b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
        b"Message-ID: <bcc-forms@example.org>\r\n"
        b"\r\n"
        b"Bcc: this line is in the body and stays\r\n"
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.mkdir()
    return path


@pytest.fixture
def session(tmp_path: Path, root: Path) -> Iterator[Any]:
    profile = Profile.from_dict(
        {
            "store": str(tmp_path / "store.db"),
            "send_immediately": False,
            "transports": {
                "md": {
                    "provider": "maildir",
                    "domains": ["local.test"],
                    "deliver_root": str(root),
                }
            },
        }
    )
    with Session.logon(profile) as opened:
        yield opened


def delivered(root: Path, user: str) -> list[bytes]:
    new = root / user / "new"
    if not new.is_dir():
        return []
    return [(new / name).read_bytes() for name in sorted(os.listdir(new))]


def header_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("bcc_field", BCC_FORMS, ids=lambda f: f.decode().split(":")[0])
def test_no_bcc_form_reaches_any_recipient(session: Any, root: Path, bcc_field: bytes) -> None:
    """Header recipients: To and the Bcc addresses each get one copy without any Bcc
    field; the body's "Bcc:" line is untouched."""
    raw = message(bcc_field)
    is_resent = bcc_field.lower().startswith(b"resent")
    recipients = None
    if is_resent:
        # Resent-Bcc does not add recipients from the header: name them explicitly, as a
        # program resending a message does.
        recipients = ["bob@local.test", "carol@local.test"]
    session.submit(raw, recipients=recipients)
    session.spooler_status().flush_queues(FLUSH_UPLOAD)
    users = ["bob", "carol"] + (["dave"] if b"dave" in bcc_field else [])
    for user in users:
        [copy] = delivered(root, user)
        assert not BCC_LINE.search(header_of(copy)), (user, header_of(copy))
        assert b"carol@local.test" not in header_of(copy)
        assert copy.endswith(b"\r\n\r\nBcc: this line is in the body and stays\r\n")
        assert b"To: bob@local.test\r\n" in copy


def test_bcc_with_blank_before_colon_in_an_8bit_header(session: Any, root: Path) -> None:
    """A header that needs decoding (UTF-8) is read by the email package, which stops at a
    'Bcc :' line; the fields after it (To here) must still count, and the Bcc goes."""
    raw = message(b"Bcc : carol@local.test\r\n", before=b"X-Note: caf\xc3\xa9\r\n")
    session.submit(raw)
    session.spooler_status().flush_queues(FLUSH_UPLOAD)
    for user in ("bob", "carol"):
        [copy] = delivered(root, user)
        assert not BCC_LINE.search(header_of(copy))


@pytest.mark.parametrize("bcc_field", BCC_FORMS, ids=lambda f: f.decode().split(":")[0])
def test_prepare_counts_what_it_strips(bcc_field: bytes) -> None:
    """What prepare() reads as a Bcc recipient is exactly what it removes."""
    from datetime import UTC, datetime

    prepared = prepare(message(bcc_field), recipients=None, now=datetime.now(UTC))
    assert not BCC_LINE.search(header_of(prepared.content))
    addresses = sorted(r.address for r in prepared.recipients)
    if bcc_field.lower().startswith(b"resent"):
        assert addresses == ["bob@local.test"]
    else:
        expected = ["bob@local.test", "carol@local.test"]
        if b"dave" in bcc_field:
            expected.append("dave@local.test")
        assert addresses == expected


@pytest.mark.parametrize(
    ("raw", "header"),
    [
        (b"To: bob@x.test\r\nBcc : carol@x.test\r\n\r\nbody\r\n", b"To: bob@x.test"),
        (b"Bcc: carol@x.test\r\n\r\nbody\r\n", None),
        (b"To: bob@x.test\nbcc:\n carol@x.test\n\nbody\n", b"To: bob@x.test"),
    ],
    ids=["last-field", "only-field", "lf-folded"],
)
def test_removing_the_last_field_keeps_one_blank_line_before_the_body(
    raw: bytes, header: bytes | None
) -> None:
    """The body starts right after the one empty line, whatever field was removed (and
    with CRLF line ends whatever the submitted ones: the canonical form, issue #11)."""
    from datetime import UTC, datetime

    content = prepare(raw, recipients=None, now=datetime.now(UTC)).content
    newline = b"\r\n"
    head, body = content.split(newline + newline, 1)
    assert body == b"body" + newline
    assert not BCC_LINE.search(head)
    if header is not None:
        assert head.endswith(header)

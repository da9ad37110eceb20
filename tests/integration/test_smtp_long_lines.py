"""Lines over 998 characters (RFC 5322 §2.1.1) are folded (header fields) or re-encoded
(body parts) before DATA, never sent as they are. aiosmtpd refuses a line over its limit
with 500, and records the exact bytes of what it accepts."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path
from typing import Any

from mapispool.mapi import FLUSH_UPLOAD
from mapispool.profile import Profile
from mapispool.session import AsyncSession
from tests.servers._util import HOST

LONG_TEXT = "Grüße " + "a" * 1500 + " " + "é" * 800 + "\n"


async def _send_one(tmp_path: Path, server: Any, content: bytes) -> bytes:
    profile = Profile.from_dict(
        {
            "store": str(tmp_path / "store.db"),
            "send_immediately": False,
            "transports": {
                "out": {"provider": "smtp", "host": HOST, "port": server.port, "tls": "none"}
            },
        }
    )
    session = await AsyncSession.logon(profile, attach=False)
    try:
        await session.submit(content, sender="app@example.test")
        result = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    finally:
        await session.logoff()
    assert result.total("sent") == 1, result
    (txn,) = server.messages
    return bytes(txn.data)


def _longest_line(data: bytes) -> int:
    return max(len(line) for line in re.split(rb"\r\n", data))


def _text_message(body: str, subject: str = "long") -> bytes:
    return (
        f"From: app@example.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + body.replace("\n", "\r\n").encode()


async def test_a_long_body_line_goes_out_as_quoted_printable(
    tmp_path: Path, smtp_server: Any
) -> None:
    data = await _send_one(tmp_path, smtp_server, _text_message("first\n" + LONG_TEXT + "end\n"))
    assert _longest_line(data) <= 998
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed.get_content().replace("\r\n", "\n") == "first\n" + LONG_TEXT + "end\n"


async def test_a_long_header_field_is_folded(tmp_path: Path, smtp_server: Any) -> None:
    subject = " ".join(f"word{i}" for i in range(400))  # about 3000 characters
    data = await _send_one(tmp_path, smtp_server, _text_message("short\n", subject=subject))
    assert _longest_line(data) <= 998
    header = data.split(b"\r\n\r\n", 1)[0]
    unfolded = re.sub(rb"\r\n(?=[ \t])", b"", header)
    assert b"Subject: " + subject.encode() + b"\r\n" in unfolded + b"\r\n"
    assert data.endswith(b"\r\n\r\nshort\r\n")  # the body is untouched


async def test_only_the_part_with_a_long_line_is_reencoded(
    tmp_path: Path, smtp_server: Any
) -> None:
    """A multipart message larger than the streaming threshold: the attachment with a
    long line goes out base64, the short text part byte for byte."""
    blob = (b"x" * 2000 + b"\n") * 600  # 1.2 MB, lines of 2000
    content = (
        b"From: app@example.test\r\nTo: bob@example.test\r\nSubject: parts\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="BOUND"\r\n\r\n'
        b"--BOUND\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nkeep me\r\n"
        b"--BOUND\r\nContent-Type: application/x-log\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + blob.replace(b"\n", b"\r\n")
        + b"--BOUND--\r\n"
    )
    data = await _send_one(tmp_path, smtp_server, content)
    assert _longest_line(data) <= 998
    assert b"--BOUND\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nkeep me\r\n" in data
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    attachment = parsed.get_payload()[1]
    assert attachment["Content-Transfer-Encoding"] == "base64"
    # The CRLF before a boundary belongs to the boundary (RFC 2046 §5.1.1).
    assert attachment.get_payload(decode=True) == blob.replace(b"\n", b"\r\n")[:-2]


async def test_a_message_within_the_limit_is_sent_byte_for_byte(
    tmp_path: Path, smtp_server: Any
) -> None:
    content = _text_message("x" * 998 + "\n")
    data = await _send_one(tmp_path, smtp_server, content)
    assert data.split(b"\r\n\r\n", 1)[1] == content.split(b"\r\n\r\n", 1)[1]

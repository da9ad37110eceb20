"""Preparing a message for DATA (RFC 5321 §4.5.2): line ends, dot-stuffing, and the
defensive removal of Bcc headers. Pure functions over bytes."""

from __future__ import annotations

import re

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_BCC_FIELD = re.compile(rb"(?i)^(resent-)?bcc[ \t]*:")

#: The end-of-data indicator that follows the dot-stuffed content.
END_OF_DATA = b".\r\n"


def split_header(content: bytes) -> tuple[bytes, bytes]:
    """Split at the first empty line: (header block with its ending, body)."""
    match = _HEADER_END.search(content)
    if match is None:
        return content, b""
    return content[: match.end()], content[match.end() :]


def strip_bcc(content: bytes) -> tuple[bytes, bool]:
    """``content`` without any ``Bcc:`` / ``Resent-Bcc:`` header field (continuation
    lines included), and whether one was found. The session strips Bcc at submit time;
    this is the transport's own guarantee that a blind copy is never disclosed."""
    header, body = split_header(content)
    if not re.search(rb"(?im)^(resent-)?bcc[ \t]*:", header):
        return content, False
    kept: list[bytes] = []
    dropping = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and line.strip():
            if not dropping:
                kept.append(line)
            continue
        dropping = bool(_BCC_FIELD.match(line))
        if not dropping:
            kept.append(line)
    return b"".join(kept) + body, True


def dot_stuff(content: bytes) -> bytes:
    """The DATA payload without its end marker: every line end as CRLF, a final CRLF,
    and each line that starts with ``.`` given one more (the receiver removes it)."""
    data = _LINE_ENDS.sub(b"\r\n", content)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return _LEADING_DOT.sub(b"..", data)


def has_8bit(content: bytes) -> bool:
    """True when ``content`` has a byte above 127 (the body then needs 8BITMIME)."""
    return not content.isascii()

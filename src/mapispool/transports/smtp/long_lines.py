"""RFC 5322 §2.1.1: a line is at most 998 characters. Messages that break the limit are
fixed before DATA rather than sent as they are (a server may refuse them, truncate them,
or break them at an arbitrary byte): header fields are folded at whitespace, and a body
part with a long line is re-encoded as quoted-printable (text) or base64 (anything
else), which changes its transfer encoding but never its content.

Messages within the limit pass through untouched, byte for byte.
"""

from __future__ import annotations

import email.header
import quopri
import re
from base64 import encodebytes
from email import message_from_bytes
from email.generator import BytesGenerator
from email.message import Message
from email.policy import compat32
from io import BytesIO

#: The longest line RFC 5322 allows, without its CRLF.
MAX_LINE = 998
#: Where folded header lines and re-encoded body lines are broken.
FOLD_AT = 78

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\n|\r|$)")


def split_header(content: bytes) -> tuple[bytes, bytes]:
    """(header block with its ending, body), split at the first empty line."""
    match = _HEADER_END.search(content)
    if match is None:
        return content, b""
    return content[: match.end()], content[match.end() :]


def has_long_line(data: bytes) -> bool:
    """True when a line of ``data`` is longer than 998 characters (a line ends at CRLF,
    LF or CR, as ``bytes.splitlines`` splits). Splitting runs in C and reads each byte
    once; a regular expression for a run of 999 non-break bytes retries from every
    position of every line, which made this check most of a small message's DATA
    preparation."""
    return len(data) > MAX_LINE and max(map(len, data.splitlines())) > MAX_LINE


class LongLineScanner:
    """``has_long_line`` over a message read in pieces (a long line may span pieces)."""

    def __init__(self) -> None:
        self.found = False
        self._run = 0  # length of the line still open at the end of the last piece

    def feed(self, piece: bytes) -> None:
        if self.found or not piece:
            return
        last_break = max(piece.rfind(b"\n"), piece.rfind(b"\r"))
        if last_break < 0:
            self._run += len(piece)
            self.found = self._run > MAX_LINE
            return
        first_break = min(i for i in (piece.find(b"\n"), piece.find(b"\r")) if i >= 0)
        self.found = self._run + first_break > MAX_LINE or has_long_line(piece)
        self._run = len(piece) - last_break - 1


def fit_lines(content: bytes) -> bytes:
    """``content`` with every line at most 998 characters (see the module doc); the same
    object when nothing needed changing."""
    if not has_long_line(content):
        return content
    header, body = split_header(content)
    if has_long_line(body):
        content = _reencode_body(content)
        header, body = split_header(content)
    if has_long_line(header):
        content = _fold_header(header) + body
    return content


def _fold_header(header: bytes) -> bytes:
    """The header block with each field that has a long line unfolded and folded again at
    whitespace; a field with no whitespace to break at is RFC 2047-encoded instead."""
    fields: list[list[bytes]] = []
    for line in _LINE.findall(header):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    out = []
    for lines in fields:
        if not any(has_long_line(line) for line in lines):
            out.extend(lines)
            continue
        unfolded = b"".join(line.rstrip(b"\r\n") for line in lines)
        out.append(_fold_field(unfolded))
    return b"".join(out)


def _fold_field(field: bytes) -> bytes:
    words = re.split(rb"(?<=[^ \t])(?=[ \t])", field)  # each word keeps its leading blank
    lines: list[bytes] = []
    current = b""
    for word in words:
        if current and len(current) + len(word) > FOLD_AT:
            lines.append(current)
            current = word
        else:
            current += word
    lines.append(current)
    if any(len(line) > MAX_LINE for line in lines):
        name, _, value = field.partition(b":")
        text = value.strip().decode("utf-8", "surrogateescape")
        encoded = email.header.Header(
            text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
            charset="utf-8", header_name=name.decode("ascii", "replace"),
        ).encode(linesep="\r\n", maxlinelen=FOLD_AT)  # fmt: skip
        return name + b": " + encoded.encode("ascii") + b"\r\n"
    return b"\r\n".join(lines) + b"\r\n"


def _reencode_body(content: bytes) -> bytes:
    """Re-encode each body part that has a long line; the rest is written as it was."""
    message = message_from_bytes(content, policy=compat32)
    for part in message.walk():
        if part.is_multipart():
            continue
        raw = part.get_payload(decode=False)
        if isinstance(raw, str) and has_long_line(raw.encode("utf-8", "surrogateescape")):
            _reencode_part(part)
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, maxheaderlen=0, policy=compat32).flatten(
        message, linesep="\r\n"
    )
    return out.getvalue()


def _reencode_part(part: Message) -> None:
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    del part["Content-Transfer-Encoding"]
    if part.get_content_maintype() == "text":
        lines = re.split(rb"\r\n|\n|\r", data)
        encoded = b"\r\n".join(quopri.encodestring(line) for line in lines)
        part["Content-Transfer-Encoding"] = "quoted-printable"
    else:
        encoded = encodebytes(data).replace(b"\n", b"\r\n")
        part["Content-Transfer-Encoding"] = "base64"
    part.set_payload(encoded.decode("ascii"))

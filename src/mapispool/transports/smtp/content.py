"""Preparing a message for DATA (RFC 5321 §4.5.2): dot-stuffing and the 998-character
line limit, which belong to the wire. A message stored in canonical form (CRLF line ends,
no Bcc, its 8-bit flag exact: ``OutboundMessage.canonical``) is sent as stored; one stored
by an older version also gets its line ends converted and any Bcc field removed, and is
scanned for 8-bit bytes. Pure functions over bytes."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import IO

from .long_lines import LongLineScanner, fit_lines

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_DOT_AFTER_LF = re.compile(rb"\n\.")
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


def dot_stuff_crlf(content: bytes) -> bytes:
    """``dot_stuff`` for content whose line ends are all CRLF already: the same result,
    without the pass that converts line ends."""
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    return _LEADING_DOT.sub(b"..", content)


def has_8bit(content: bytes) -> bool:
    """True when ``content`` has a byte above 127 (the body then needs 8BITMIME)."""
    return not content.isascii()


def stuffed_chunks(pieces: Iterable[bytes], *, crlf: bool = False) -> Iterator[bytes]:
    """``dot_stuff`` over a message given in pieces: the chunks it yields, joined, are
    exactly ``dot_stuff(b"".join(pieces))``, but no more than one piece (plus a byte) is
    held at a time, so a 50 MB message is never copied whole. ``crlf``: the line ends
    are all CRLF already (canonical form), so they are not converted."""
    if crlf:
        yield from _stuffed_crlf_chunks(pieces)
        return
    carry = b""  # a trailing CR that may be the first half of a CRLF in the next piece
    at_line_start = True
    tail = b""  # the last two bytes yielded: to know whether a final CRLF is due
    for piece in pieces:
        data = carry + piece
        carry = b""
        if data.endswith(b"\r"):
            data, carry = data[:-1], b"\r"
        if not data:
            continue
        data = _DOT_AFTER_LF.sub(b"\n..", _LINE_ENDS.sub(b"\r\n", data))
        if at_line_start and data.startswith(b"."):
            data = b"." + data
        at_line_start = data.endswith(b"\n")
        tail = (tail + data[-2:])[-2:]
        yield data
    if carry or tail != b"\r\n":
        yield b"\r\n"


def _stuffed_crlf_chunks(pieces: Iterable[bytes]) -> Iterator[bytes]:
    at_line_start = True
    last = b""
    for piece in pieces:
        if not piece:
            continue
        data = _DOT_AFTER_LF.sub(b"\n..", piece)
        if at_line_start and data.startswith(b"."):
            data = b"." + data
        at_line_start = data.endswith(b"\n")
        last = (last + data[-2:])[-2:]
        yield data
    if last != b"\r\n":
        yield b"\r\n"


#: Messages up to this size are prepared in memory; larger ones are streamed.
STREAM_ABOVE = 1 << 20
#: How much is read at a time when streaming, and how much of the start is searched for
#: the header (to remove a Bcc field).
READ_SIZE = 1 << 20


class Payload:
    """The DATA payload of one message: dot-stuffed, CRLF line ends, without the end
    marker. ``small`` holds it when it is at most ``small_limit`` bytes (it then goes out
    in the same write as the end marker); otherwise ``chunks()`` streams it."""

    def __init__(
        self, *, size: int, small: bytes | None, chunks: Callable[[], Iterator[bytes]]
    ) -> None:
        self.size = size
        self.small = small
        self._chunks = chunks

    def chunks(self) -> Iterator[bytes]:
        return self._chunks()

    @classmethod
    def from_bytes(cls, data: bytes, small_limit: int) -> Payload:
        """A payload already stuffed and held in memory."""
        return cls(
            size=len(data), small=data if len(data) <= small_limit else None,
            chunks=lambda: iter((data,)),
        )  # fmt: skip


def prepare_payload(
    size: int, content: Callable[[], bytes], open_content: Callable[[], IO[bytes]],
    small_limit: int, *, canonical: bool = False, eight_bit: bool = False,
) -> tuple[Payload, bool, bool]:  # fmt: skip
    """(payload, a Bcc field was removed, the content has 8-bit bytes) for a message of
    ``size`` bytes, its lines made to fit 998 characters (``long_lines``). Small
    messages are prepared in memory; large ones are read twice from the store in
    ``READ_SIZE`` pieces (once to look at them, once to send them), so memory stays
    bounded whatever their size (unless a long line makes a rewrite necessary).

    ``canonical``: the content is in canonical form and ``eight_bit`` is its exact 8-bit
    flag (both as stored at submit); it is then sent as stored, only dot-stuffed (and
    folded if a line is too long), with no Bcc search, line-end pass or 8-bit scan."""
    if canonical:
        return _canonical_payload(size, content, open_content, small_limit, eight_bit)
    if size <= STREAM_ABOVE:
        stripped, had_bcc = strip_bcc(content())
        stripped = fit_lines(stripped)
        return Payload.from_bytes(dot_stuff(stripped), small_limit), had_bcc, has_8bit(stripped)
    scanner = LongLineScanner()
    with open_content() as stream:
        head = stream.read(READ_SIZE)
        eight_bit = has_8bit(head)
        scanner.feed(head)
        for piece in iter(lambda: stream.read(READ_SIZE), b""):
            eight_bit = eight_bit or has_8bit(piece)
            scanner.feed(piece)
    if scanner.found:  # rare: rewriting needs the whole message in memory, once
        stripped, had_bcc = strip_bcc(content())
        stripped = fit_lines(stripped)
        return Payload.from_bytes(dot_stuff(stripped), small_limit), had_bcc, has_8bit(stripped)
    stripped_head, had_bcc = strip_bcc(head)

    def chunks() -> Iterator[bytes]:
        with open_content() as stream:
            stream.read(len(head))
            yield from stuffed_chunks(
                chain((stripped_head,), iter(lambda: stream.read(READ_SIZE), b""))
            )

    return Payload(size=size, small=None, chunks=chunks), had_bcc, eight_bit


def _canonical_payload(
    size: int, content: Callable[[], bytes], open_content: Callable[[], IO[bytes]],
    small_limit: int, eight_bit: bool,
) -> tuple[Payload, bool, bool]:  # fmt: skip
    """``prepare_payload`` for a content in canonical form."""
    if size > STREAM_ABOVE:
        scanner = LongLineScanner()
        with open_content() as stream:
            for piece in iter(lambda: stream.read(READ_SIZE), b""):
                scanner.feed(piece)
        if not scanner.found:

            def chunks() -> Iterator[bytes]:
                with open_content() as stream:
                    yield from stuffed_chunks(iter(lambda: stream.read(READ_SIZE), b""), crlf=True)

            return Payload(size=size, small=None, chunks=chunks), False, eight_bit
    data = content()
    fitted = fit_lines(data)
    if fitted is data:
        return Payload.from_bytes(dot_stuff_crlf(data), small_limit), False, eight_bit
    # Rewritten for the 998-character limit (a body part re-encoded): look again.
    return Payload.from_bytes(dot_stuff(fitted), small_limit), False, has_8bit(fitted)

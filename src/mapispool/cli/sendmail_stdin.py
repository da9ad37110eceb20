"""The message a sendmail caller writes on stdin, read as sendmail reads it. Shared by the
hand-off client and the in-process path; it imports nothing, so that the client stays
quick to start."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (import cost)
if TYPE_CHECKING:
    from typing import BinaryIO


def read_message(stream: BinaryIO, ignore_dots: bool) -> bytes:
    """The message on ``stream``: to its end with -i (``ignore_dots``), else up to a line
    holding only ".", as in sendmail."""
    if ignore_dots:
        return stream.read()
    lines: list[bytes] = []
    for line in stream:
        if line.rstrip(b"\r\n") == b".":
            break
        lines.append(line)
    return b"".join(lines)

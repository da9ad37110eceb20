"""poplib's POP3 and POP3_SSL reading through a ``BoundedReader``, plus a RETR that
gathers the message into one buffer.

poplib reads with ``file.readline`` and no bound but a 2048-byte line limit (too small
for real message lines, and no bound at all on the number of lines), and ``retr`` keeps
every line as its own object before the caller joins them: a 300 MB message took three to
four times its size. Here every line goes through the reader, which charges it to the
operation's ``Budget``; ``retrieve`` undoes dot-stuffing straight into a ``BytesIO``.
"""

from __future__ import annotations

import io
import poplib
import ssl
from typing import Any

from .._inbound.limits import BoundedReader, Budget, LimitExceeded

_CRLF = b"\r\n"


class _BoundedLines:
    """Mixin over ``poplib.POP3``: ``_getline`` reads through a ``BoundedReader``."""

    sock: Any
    reader: BoundedReader

    def _start_reader(self, budget: Budget) -> None:
        self.reader = BoundedReader(lambda: self.sock, budget)

    def _getline(self) -> tuple[bytes, int]:
        line = self.reader.readline()
        if not line:
            raise poplib.error_proto("-ERR EOF")
        octets = len(line)
        # The same reading of line ends as poplib's: LF, CRLF or CR...LF.
        if line[-2:] == _CRLF:
            return line[:-2], octets
        if line[:1] == b"\r":
            return line[1:-1], octets
        return line[:-1], octets

    def retrieve(self, number: int) -> bytes:
        """RETR ``number``: the message with dot-stuffing undone and every line ending
        CRLF. Raises ``LimitExceeded`` when the body goes over ``max_message_size``
        (whatever LIST said), ``poplib.error_proto`` for ``-ERR`` or a closed connection.
        """
        self._putcmd(f"RETR {number}")  # type: ignore[attr-defined]
        return self.read_retrieved(number)

    def send_retrieves(self, numbers: list[int]) -> None:
        """``RETR`` for each of ``numbers`` in one write (RFC 2449 PIPELINING: only for a
        server that announced it); read each answer with ``read_retrieved``, in order."""
        self.sock.sendall(b"".join(f"RETR {n}\r\n".encode("ascii") for n in numbers))

    def read_retrieved(self, number: int) -> bytes:
        """The answer to ``RETR number``, as ``retrieve`` returns it."""
        self._getresp()  # type: ignore[attr-defined]
        budget = self.reader.budget
        limit = budget.limits.max_message_size
        out = io.BytesIO()
        while True:
            line = self.reader.readline(in_body=True)
            if not line:
                raise poplib.error_proto("-ERR EOF")
            if line in (b".\r\n", b".\n"):
                return out.getvalue()
            view = memoryview(line)
            start = 1 if line.startswith(b"..") else 0
            end = len(line) - (2 if line.endswith(_CRLF) else 1 if line.endswith(b"\n") else 0)
            out.write(view[start:end])
            out.write(_CRLF)
            if out.tell() > limit:
                raise LimitExceeded(
                    f"message {number} is larger than max_message_size ({limit} bytes) "
                    f"{budget.doing}",
                    setting="max_message_size",
                )


class BoundedPOP3(_BoundedLines, poplib.POP3):
    """``poplib.POP3`` with bounded reads (the greeting included)."""

    def __init__(self, host: str, port: int, timeout: float, budget: Budget) -> None:
        self._start_reader(budget)
        super().__init__(host, port, timeout=timeout)


class BoundedPOP3_SSL(_BoundedLines, poplib.POP3_SSL):
    """``poplib.POP3_SSL`` with bounded reads (the greeting included)."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        budget: Budget,
        context: ssl.SSLContext | None,
    ) -> None:
        self._start_reader(budget)
        super().__init__(host, port, timeout=timeout, context=context)

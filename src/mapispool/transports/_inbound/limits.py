"""Bounds on what an IMAP or POP3 server may send: bytes, lines and time per operation.

imaplib and poplib read until the server stops: an endless listing grows memory without
end, and a server that trickles bytes never hits the socket timeout, which only bounds
each single ``recv``. The transports therefore read through a ``BoundedReader`` that
charges every line and every literal to the ``Budget`` of the operation in progress
(armed by the connection before each guarded call) and raises ``LimitExceeded`` when one
of the bounds is crossed. The connection must then be dropped: the rest of the response
is still on the wire.

The time bound is the SMTP transport's (``timeout``): an operation may take ``timeout``
seconds, plus ``timeout`` more for every 64 KiB it has received, so a slow but steady
large download passes while a trickle does not. Every ``recv`` waits at most until that
deadline.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Bytes that buy one more ``timeout`` of time (the SMTP transport's drain chunk).
CHUNK = 64 * 1024
#: What one ``recv`` asks for.
_RECV = 64 * 1024

#: Defaults of the settings (see the README, Transports, imap and pop3).
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_RESPONSE_LINES = 500_000


@dataclass(frozen=True)
class Limits:
    """The bounds of one transport section.

    ``max_message_size``: the largest message downloaded (and the largest literal or
    message body accepted on the wire); ``max_response_bytes`` / ``max_response_lines``:
    what one operation other than a download may receive (a SELECT, a UIDL listing, a
    SEARCH); ``timeout``: seconds per operation and per 64 KiB received.
    """

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_response_lines: int = DEFAULT_MAX_RESPONSE_LINES
    timeout: float = 60.0


class LimitExceeded(Exception):
    """A response crossed a bound; the connection is unusable and must be dropped.

    ``setting`` names the setting that bounds it (for the fix in the message);
    ``timed_out`` tells a deadline from a size bound."""

    def __init__(self, text: str, *, setting: str, timed_out: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.setting = setting
        self.timed_out = timed_out


class Budget:
    """What the operation in progress may still receive.

    ``arm`` starts an operation; a download (``body=True``) may receive
    ``max_message_size`` per message body plus ``extra_bytes`` (what several messages of
    one batch add up to), and its body lines are not counted; any other operation may
    receive ``max_response_bytes`` in at most ``max_response_lines`` lines.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.doing = "reading"
        self.body = False
        self._byte_cap = limits.max_response_bytes
        self._started = time.monotonic()
        self.received = 0
        self.lines = 0

    def arm(self, doing: str, *, body: bool = False, extra_bytes: int = 0) -> None:
        """Start the budget of a new operation (``doing`` describes it for errors)."""
        self.doing = doing
        self.body = body
        limits = self.limits
        if body:
            self._byte_cap = limits.max_message_size + extra_bytes + limits.max_response_bytes
        else:
            self._byte_cap = limits.max_response_bytes
        self._started = time.monotonic()
        self.received = 0
        self.lines = 0

    @property
    def line_limit(self) -> int:
        """The longest line accepted now (a message line may be a whole message)."""
        if self.body:
            return self.limits.max_message_size + 2
        return self.limits.max_response_bytes

    def remaining(self) -> float:
        """Seconds left before the deadline (may be negative)."""
        allowed = self.limits.timeout * (1 + self.received // CHUNK)
        return allowed - (time.monotonic() - self._started)

    def check_time(self) -> None:
        """Raise ``LimitExceeded`` once the deadline has passed."""
        if self.remaining() <= 0:
            raise LimitExceeded(
                f"the server took too long {self.doing} ({self.received} bytes in "
                f"{time.monotonic() - self._started:.0f} s)",
                setting="timeout",
                timed_out=True,
            )

    def charge_line(self, size: int, *, in_body: bool = False) -> None:
        """Count a line of ``size`` bytes; raise ``LimitExceeded`` past a bound."""
        self.received += size
        if not in_body:
            self.lines += 1
            if self.lines > self.limits.max_response_lines:
                raise LimitExceeded(
                    f"the server sent more than {self.limits.max_response_lines} lines "
                    f"{self.doing}",
                    setting="max_response_lines",
                )
        self._check_bytes()

    def charge_literal(self, size: int) -> None:
        """Accept a literal (or message body) of ``size`` bytes before reading it; its
        bytes are counted by ``count`` as they arrive (the deadline follows what was
        received, not what was announced)."""
        if size > self.limits.max_message_size:
            raise LimitExceeded(
                f"the server announced {size} bytes {self.doing}, over max_message_size "
                f"({self.limits.max_message_size})",
                setting="max_message_size",
            )
        if self.received + size > self._byte_cap:
            self.received += size
            self._check_bytes()

    def count(self, size: int) -> None:
        """Count ``size`` bytes received outside lines (a literal's content)."""
        self.received += size
        self._check_bytes()

    def _check_bytes(self) -> None:
        if self.received > self._byte_cap:
            setting = "max_message_size" if self.body else "max_response_bytes"
            raise LimitExceeded(
                f"the server sent more than {self._byte_cap} bytes {self.doing}",
                setting=setting,
            )


class BoundedReader:
    """Buffered reads from a socket, charged to a ``Budget``, each ``recv`` bounded by its
    deadline. Replaces the ``makefile`` reader of imaplib and poplib.

    ``sock`` is called for every read, so a socket replaced by STARTTLS is used at once,
    and the buffer is emptied when the socket changes: anything received in clear text
    after the STARTTLS reply must not be read as part of the protected session. A socket in
    non-blocking mode (imapclient's IDLE check) keeps its mode: ``recv`` then raises
    ``BlockingIOError`` when nothing waits, as the caller expects.
    """

    def __init__(self, sock: Callable[[], socket.socket], budget: Budget) -> None:
        self._sock = sock
        self.budget = budget
        self._buffer = bytearray()
        self._reading: socket.socket | None = None

    def _follow_socket(self) -> None:
        sock = self._sock()
        if sock is not self._reading:
            self._reading = sock
            self._buffer = bytearray()

    def reset(self) -> None:
        """Forget buffered bytes (after a TLS upgrade)."""
        self._buffer = bytearray()

    def _recv(self, size: int) -> bytes:
        """One ``recv`` that waits at most until the deadline. Raises ``LimitExceeded``
        when the deadline passed, ``TimeoutError`` when only this wait was too long."""
        self.budget.check_time()
        sock = self._sock()
        if sock.gettimeout() != 0.0:
            wait = min(self.budget.limits.timeout, self.budget.remaining())
            sock.settimeout(max(0.01, wait))
        try:
            return sock.recv(size)
        except TimeoutError:
            self.budget.check_time()
            raise

    def _fill(self) -> bool:
        """Receive more bytes into the buffer; False at end of stream."""
        data = self._recv(_RECV)
        if data:
            self._buffer += data
        return bool(data)

    def readline(self, *, in_body: bool = False) -> bytes:
        """One line with its line break (b"" at end of stream, or the partial last line).

        Raises ``LimitExceeded`` for a line longer than the budget allows, too many lines
        or bytes, or a passed deadline."""
        self._follow_socket()
        limit = self.budget.line_limit
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                self.budget.charge_line(len(line), in_body=in_body)
                return line
            if len(self._buffer) > limit:
                raise LimitExceeded(
                    f"the server sent a line longer than {limit} bytes {self.budget.doing}",
                    setting="max_message_size" if in_body else "max_response_bytes",
                )
            start = len(self._buffer)
            if not self._fill():
                line = bytes(self._buffer)
                self._buffer.clear()
                return line

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes (fewer only at end of stream), charged as a literal.
        Gathered in one ``BytesIO``, whose value is handed over without a final copy."""
        self._follow_socket()
        self.budget.charge_literal(size)
        out = io.BytesIO()
        taken = min(size, len(self._buffer))
        out.write(self._buffer[:taken])
        del self._buffer[:taken]
        self.budget.count(taken)
        while out.tell() < size:
            data = self._recv(min(_RECV, size - out.tell()))
            if not data:
                break
            out.write(data)
            self.budget.count(len(data))
        return out.getvalue()

"""The socket's protocol of an open SMTP connection (``ReplyStream``): complete replies
queued as they arrive, so pipelined commands (RFC 2920) each get their own; and how one
command line is written. Split from ``connection`` to keep each module small."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from aiosmtplib import SMTP, SMTPReadTimeoutError, SMTPResponseException, SMTPServerDisconnected

from .outcome import Reply
from .reply_text import decode_reply

#: Unparsed reply bytes beyond this are a broken peer, not SMTP (RFC 5321 allows 512 a line).
MAX_REPLY_BYTES = 1 << 20


def command_line(*args: bytes) -> bytes:
    """One command as written to the wire; arguments never carry CR or LF (``path``
    refuses control characters, options are ours)."""
    line = b" ".join(args)
    if b"\r" in line or b"\n" in line:
        raise ValueError("a command argument contains a line break")
    return line + b"\r\n"


class ReplyStream(asyncio.Protocol):
    """The socket's protocol once a connection is open: it queues every complete reply as
    it arrives, so several commands may be outstanding (RFC 2920 pipelining) and none
    is lost or paired with the wrong command. aiosmtplib's own protocol keeps a single
    reply slot and drops data that arrives while no command waits, which is right for
    lock-step use (greeting, EHLO, STARTTLS, AUTH, all done by aiosmtplib before this
    takes over) and wrong for pipelining. Replies are parsed as aiosmtplib parses them
    (lines joined with a newline); their text is made by the ``text`` function given,
    which decodes any bytes (``reply_text.decode_reply``) and redacts the secret.

    Events it does not handle itself (the connection lost, flow control) are passed on
    to aiosmtplib's protocol, so the client still knows whether it is connected."""

    def __init__(
        self,
        inner: asyncio.BaseProtocol,
        transport: asyncio.WriteTransport,
        text: Callable[[bytes], str] = decode_reply,
    ) -> None:
        self._inner = inner
        self._text = text
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._replies: deque[Reply] = deque()
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self.paused = False

    @classmethod
    def take_over(cls, client: SMTP, text: Callable[[bytes], str] = decode_reply) -> ReplyStream:
        """Put a stream between ``client``'s socket and its protocol; return it. ``text``
        turns a reply's bytes into its text (decoded, cleaned, redacted)."""
        protocol = client.protocol
        transport = protocol.transport if protocol is not None else None
        if protocol is None or transport is None:
            raise SMTPServerDisconnected("Connection lost")
        stream = cls(protocol, transport, text)  # type: ignore[arg-type]
        transport.set_protocol(stream)
        return stream

    @property
    def closing(self) -> bool:
        """True once the socket is closed or closing: nothing written would go out."""
        return self._transport.is_closing() or self._error is not None

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the socket. Raises ``SMTPServerDisconnected`` (nothing
        written) when the connection is gone."""
        if self._transport.is_closing():
            raise SMTPServerDisconnected("Connection lost")
        self._transport.write(data)

    async def read(self, within: float | None) -> Reply:
        """The next reply, in the order the commands went out. Raises
        ``SMTPServerDisconnected`` or ``SMTPReadTimeoutError``."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            waiter = self._loop.create_future()
            self._waiter = waiter
            timer = self._loop.call_later(within, _expire, waiter) if within is not None else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return self._replies.popleft()

    async def drain(self) -> None:
        """Wait until the socket's write buffer has room again."""
        while self.paused:
            if self._error is not None:
                raise self._error
            if self._drained is None:
                self._drained = self._loop.create_future()
            await asyncio.shield(self._drained)

    # -- asyncio.Protocol ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            parsed = self._parse()
        except SMTPResponseException as exc:
            self._fail(exc)
            return
        if len(self._buffer) > MAX_REPLY_BYTES:
            self._fail(SMTPResponseException(-1, "Response too long"))
            return
        if parsed:
            self._wake()

    def _parse(self) -> bool:
        found = False
        while True:
            buffer = self._buffer
            offset = 0
            code = -1
            text: list[bytes] = []
            complete = False
            while True:
                end = buffer.find(b"\n", offset)
                if end == -1:
                    break
                line = bytes(buffer[offset : end + 1])
                try:
                    code = int(line[:3])
                except ValueError:
                    error = self._text(line.rstrip(b"\r\n"))
                    raise SMTPResponseException(
                        -1, f"Malformed SMTP response line: {error}"
                    ) from None
                offset = end + 1
                text.append(line[4:].strip(b" \t\r\n"))
                if line[3:4] != b"-":
                    complete = True
                    break
            if not complete:
                return found
            del buffer[:offset]
            self._replies.append(Reply(code, self._text(b"\n".join(text))))
            found = True

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(SMTPServerDisconnected("Connection lost"))
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(SMTPReadTimeoutError("Timed out waiting for server response"))

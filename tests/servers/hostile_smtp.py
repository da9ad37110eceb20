"""A small ESMTP server on 127.0.0.1 that answers with raw bytes chosen by the test.

Real servers (aiosmtpd, smtp-sink, Postfix) only say well-formed things. This one speaks
just enough ESMTP for a client to send mail (greeting, EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT,
DATA, RSET, NOOP, QUIT, pipelined or not) and lets a test replace any reply with any
bytes: Latin-1 text, a password echoed back, a garbled code. It runs its own asyncio loop
in a thread, so sync tests and async tests (whose loop runs the client) can both use it.

``replies`` maps a step to the reply sent for it, without the final CRLF (a multi-line
reply is written with ``\\r\\n`` inside). Steps: ``"CONNECT"`` (the greeting), ``"EHLO"``,
``"AUTH"`` (the final answer to AUTH), ``"MAIL"``, ``"RCPT"``, ``"DATA"``, ``"."`` (the
end of data), ``"RSET"``, ``"NOOP"``. A value that is a list is used one item per use,
then the default reply follows. Like a real server it keeps the transaction's state:
RCPT without an accepted MAIL gets ``503``, DATA without an accepted RCPT gets ``554``
(neither uses up a chosen reply). What the server saw is recorded in ``commands`` (every
line, CRLF stripped), ``auth_lines`` (the AUTH exchange) and ``messages`` (the content of
every DATA answered 2xx).

Use it through the ``hostile_smtp_factory`` fixture (import it into the test module)::

    from tests.servers.hostile_smtp import HostileSmtpFactory, hostile_smtp_factory

    def test_x(hostile_smtp_factory: HostileSmtpFactory) -> None:
        server = hostile_smtp_factory(replies={"RCPT": "550 Empfänger".encode("latin-1")})
        ...send to server.host, server.port...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import pytest

from tests.servers._util import HOST

Reply = bytes | Sequence[bytes]
HostileSmtpFactory = Callable[..., "HostileSmtp"]

#: What the server says when the test did not choose.
DEFAULT_REPLIES: dict[str, bytes] = {
    "CONNECT": b"220 hostile.test ESMTP",
    "MAIL": b"250 2.1.0 ok",
    "RCPT": b"250 2.1.5 ok",
    "DATA": b"354 go ahead",
    ".": b"250 2.0.0 queued",
    "AUTH": b"235 2.7.0 authenticated",
    "RSET": b"250 2.0.0 ok",
    "NOOP": b"250 2.0.0 ok",
    "QUIT": b"221 2.0.0 bye",
}


#: The answer to DATA when no RCPT of the transaction was accepted (RFC 5321 §3.3).
NO_RECIPIENTS = b"554 5.5.1 no valid recipients"
#: The answer to RCPT outside a transaction (after a refused MAIL, say).
NO_MAIL = b"503 5.5.1 MAIL first"
#: The answer to a command the server does not know.
UNKNOWN = b"502 5.5.2 command not recognised"


async def _read_content(reader: asyncio.StreamReader) -> bytes:
    """The content after a 354, up to the line holding a single dot (not unstuffed)."""
    lines: list[bytes] = []
    while (line := await reader.readline()) != b".\r\n":
        if not line:
            raise ConnectionError("the client closed the connection during DATA")
        lines.append(line)
    return b"".join(lines)


class HostileSmtp:
    """The server; ``start()`` binds a free port on ``host`` and returns at once.

    ``extensions`` are the EHLO keywords after the greeting line (``AUTH PLAIN LOGIN`` is
    added when ``auth`` is true). A reply of class 421 closes the connection after it,
    as a real server does.
    """

    def __init__(
        self,
        *,
        replies: Mapping[str, Reply] | None = None,
        extensions: Sequence[bytes] = (b"PIPELINING", b"8BITMIME", b"SIZE 10000000"),
        auth: bool = False,
    ) -> None:
        self.host = HOST
        self.port = 0
        self.commands: list[bytes] = []
        self.auth_lines: list[bytes] = []
        self.messages: list[bytes] = []
        self._replies: dict[str, list[bytes] | bytes] = {
            step: list(value) if isinstance(value, list | tuple) else bytes(value)
            for step, value in (replies or {}).items()
        }
        self._extensions = [*extensions, *([b"AUTH PLAIN LOGIN"] if auth else [])]
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control from the test's thread ---------------------------------------------

    def start(self) -> HostileSmtp:
        """Listen on a free port of 127.0.0.1; ``port`` is set on return."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=10)
        return self

    def stop(self) -> None:
        """Close every connection and the listener, then end the thread. Safe twice."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def set_reply(self, step: str, reply: Reply) -> None:
        """Change the reply for ``step`` from now on (a list is used one item per use)."""
        with self._lock:
            self._replies[step] = list(reply) if isinstance(reply, list | tuple) else reply

    # -- the server, on its own loop -----------------------------------------------------

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._session, self.host, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    def _reply_for(self, step: str) -> bytes:
        with self._lock:
            chosen = self._replies.get(step)
            if isinstance(chosen, list):
                if chosen:
                    return chosen.pop(0)
                chosen = None
        return chosen if chosen is not None else self._default(step)

    def _default(self, step: str) -> bytes:
        if step != "EHLO":
            return DEFAULT_REPLIES[step]
        lines = [b"hostile.test", *self._extensions]
        last = len(lines) - 1
        return b"\r\n".join(
            b"250" + (b" " if i == last else b"-") + text for i, text in enumerate(lines)
        )

    def _record(self, line: bytes) -> None:
        with self._lock:
            self.commands.append(line)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await self._converse(reader, writer)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _say(self, writer: asyncio.StreamWriter, reply: bytes) -> bool:
        """Send one reply; False when it was a 421 and the connection is now closed."""
        writer.write(reply + b"\r\n")
        await writer.drain()
        if reply.startswith(b"421"):
            writer.close()
            return False
        return True

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not await self._say(writer, self._reply_for("CONNECT")):
            return
        in_mail = False  # a MAIL was accepted and its transaction is open
        accepted = 0  # recipients accepted in the current transaction
        while line := await reader.readline():
            line = line.rstrip(b"\r\n")
            self._record(line)
            verb = line.split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"HELO"):
                if not await self._say(writer, self._reply_for("EHLO")):
                    return
            elif verb == b"AUTH":
                if not await self._auth(line, reader, writer):
                    return
            elif verb == b"DATA":
                reply = self._reply_for("DATA") if accepted else NO_RECIPIENTS
                if not await self._say(writer, reply):
                    return
                if reply.startswith(b"354"):
                    content = await _read_content(reader)
                    final = self._reply_for(".")
                    if final.startswith(b"2"):
                        with self._lock:
                            self.messages.append(content)
                    if not await self._say(writer, final):
                        return
                accepted, in_mail = 0, False
            elif verb == b"QUIT":
                await self._say(writer, self._reply_for("QUIT"))
                return
            else:
                step = verb.decode("ascii", "replace")
                if step == "RCPT" and not in_mail:
                    reply = NO_MAIL
                else:
                    reply = self._reply_for(step) if step in DEFAULT_REPLIES else UNKNOWN
                if step == "RCPT" and reply.startswith(b"2"):
                    accepted += 1
                elif step in ("MAIL", "RSET"):
                    accepted = 0
                    in_mail = step == "MAIL" and reply.startswith(b"2")
                if not await self._say(writer, reply):
                    return

    async def _auth(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """AUTH PLAIN with or without an initial response, AUTH LOGIN (two prompts or
        one after an initial user name); then the chosen final reply."""
        words = line.split()
        mechanism = words[1].upper() if len(words) > 1 else b""
        with self._lock:
            self.auth_lines.append(line)
        prompts = {b"PLAIN": 1, b"LOGIN": 2}.get(mechanism, 0) - (len(words) > 2)
        for _ in range(max(prompts, 0)):
            prompt = b"334 UGFzc3dvcmQ6" if mechanism == b"LOGIN" else b"334 "
            await self._say(writer, prompt)
            answer = (await reader.readline()).rstrip(b"\r\n")
            with self._lock:
                self.auth_lines.append(answer)
        return await self._say(writer, self._reply_for("AUTH"))


@pytest.fixture
def hostile_smtp_factory() -> Iterator[HostileSmtpFactory]:
    """Builds started ``HostileSmtp`` servers (options as its constructor); all are
    stopped at teardown."""
    servers: list[HostileSmtp] = []

    def make(**options: object) -> HostileSmtp:
        server = HostileSmtp(**options).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()

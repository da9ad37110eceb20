"""Small hostile IMAP and POP3 servers on 127.0.0.1, for the bounds of the inbound
transports (issue #10, item 8).

Each is a real socket server (``socketserver``, one thread per connection) that speaks
just enough of the protocol to get a client logged in, then misbehaves in the way its
``mode`` names: an endless SELECT answer, an endless UIDL listing, a message far larger
than its announced size, or an answer that trickles. A server that sends without end
stops when the client drops the connection (or after ``SEND_GIVE_UP`` seconds of a
client that neither reads nor closes), so no thread outlives its fixture for long.
Every command received is recorded in ``commands``.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

#: A client that stops reading without closing is given up on after this many seconds.
SEND_GIVE_UP = 20.0


@dataclass
class Mailbox:
    """One message the servers offer: its real bytes and the size they announce."""

    uid: int
    data: bytes
    announced: int | None = None

    @property
    def said(self) -> int:
        return len(self.data) if self.announced is None else self.announced


@dataclass
class HostileServer:
    """A running fake server: ``host``, ``port``, ``mode``, ``commands`` (every command
    line received, decoded) and ``connections`` (how many clients connected)."""

    host: str
    port: int
    mode: str
    messages: list[Mailbox]
    commands: list[str] = field(default_factory=list)
    connections: int = 0
    _server: socketserver.ThreadingTCPServer | None = None

    def saw(self, prefix: str) -> list[str]:
        """The recorded commands starting with ``prefix`` (case-insensitive)."""
        return [c for c in self.commands if c.upper().startswith(prefix.upper())]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Conn:
    """Line I/O on one accepted socket."""

    def __init__(self, sock: socket.socket, server: HostileServer) -> None:
        self.sock = sock
        self.server = server
        self.file = sock.makefile("rb")
        sock.settimeout(SEND_GIVE_UP)

    def line(self) -> str | None:
        raw = self.file.readline(65536)
        if not raw:
            return None
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        self.server.commands.append(text)
        return text

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def flood(self, make_line: Iterator[bytes], pause: float = 0.0) -> None:
        """Send lines until the client goes away (or stops reading for too long)."""
        with contextlib.suppress(OSError):
            chunk: list[bytes] = []
            for line in make_line:
                chunk.append(line)
                if pause or len(chunk) >= 256:
                    self.send(b"".join(chunk))
                    chunk.clear()
                    if pause:
                        time.sleep(pause)


def _counting(template: bytes) -> Iterator[bytes]:
    n = 0
    while True:
        n += 1
        yield template.replace(b"%d", str(n).encode())


def _imap_session(conn: _Conn) -> None:
    server = conn.server
    conn.send(b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] hostile IMAP ready\r\n")
    while (text := conn.line()) is not None:
        tag, _, rest = text.partition(" ")
        command = rest.split(" ", 1)[0].upper()
        words = rest.upper().split()
        if command == "LOGIN":
            conn.send(tag.encode() + b" OK logged in\r\n")
        elif command == "CAPABILITY":
            conn.send(b"* CAPABILITY IMAP4rev1 UIDPLUS\r\n" + tag.encode() + b" OK done\r\n")
        elif command == "SELECT" and server.mode == "endless-select":
            conn.flood(_counting(b"* OK [ALERT] still selecting, line %d\r\n"))
            return
        elif command == "SELECT" and server.mode == "trickle-select":
            conn.flood(_counting(b"* OK slowly, line %d\r\n"), pause=0.05)
            return
        elif command == "SELECT":
            count = len(server.messages)
            nxt = max((m.uid for m in server.messages), default=0) + 1
            conn.send(
                f"* {count} EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT {nxt}] ok\r\n"
                f"{tag} OK [READ-WRITE] selected\r\n".encode()
            )
        elif words[:2] == ["UID", "SEARCH"]:
            uids = " ".join(str(m.uid) for m in server.messages)
            conn.send(f"* SEARCH {uids}\r\n{tag} OK done\r\n".encode())
        elif words[:2] == ["UID", "FETCH"]:
            _imap_fetch(conn, tag, rest.split()[2], "BODY.PEEK[]" in rest.upper())
        elif (
            words[:2] == ["UID", "STORE"]
            or command in ("NOOP", "EXPUNGE")
            or words[:2]
            == [
                "UID",
                "EXPUNGE",
            ]
        ):
            conn.send(tag.encode() + b" OK done\r\n")
        elif command == "LOGOUT":
            conn.send(b"* BYE bye\r\n" + tag.encode() + b" OK done\r\n")
            return
        else:
            conn.send(tag.encode() + b" BAD unknown command\r\n")


def _uid_set(text: str) -> Callable[[int], bool]:
    """``1,3:5`` → a test for membership in {1, 3, 4, 5} (``*`` is taken as a large
    number); ranges stay ranges, so ``1:*`` costs no memory."""
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        first = int(low.replace("*", "999999"))
        last = int(high.replace("*", "999999")) if high else first
        ranges.append((min(first, last), max(first, last)))
    return lambda uid: any(first <= uid <= last for first, last in ranges)


def _imap_fetch(conn: _Conn, tag: str, uid_set: str, with_body: bool) -> None:
    wanted = _uid_set(uid_set)
    for seq, message in enumerate(conn.server.messages, start=1):
        if not wanted(message.uid):
            continue
        head = f"* {seq} FETCH (UID {message.uid} RFC822.SIZE {message.said}".encode()
        if not with_body:
            conn.send(head + b")\r\n")
            continue
        if conn.server.mode == "lying-literal":
            # Announce a literal far over any sane limit; a client must refuse to read it.
            conn.send(head + b" BODY[] {3000000000}\r\n")
            conn.flood(_counting(b"x" * 1000 + b"\r\n"))
            return
        conn.send(head + f" BODY[] {{{len(message.data)}}}\r\n".encode())
        conn.send(message.data)  # sent as it is: a copy would count in the client's memory
        conn.send(b")\r\n")
    conn.send(tag.encode() + b" OK fetched\r\n")


def _pop3_session(conn: _Conn) -> None:
    server = conn.server
    conn.send(b"+OK hostile POP3 ready\r\n")
    while (text := conn.line()) is not None:
        command, _, arg = text.partition(" ")
        command = command.upper()
        if command in ("USER", "PASS", "NOOP", "DELE", "RSET"):
            conn.send(b"+OK\r\n")
        elif command == "CAPA" and server.mode == "pipelining":
            conn.send(b"+OK\r\nUIDL\r\nPIPELINING\r\n.\r\n")
        elif command == "CAPA":
            conn.send(b"-ERR no capabilities\r\n")
        elif command == "UIDL" and server.mode == "endless-uidl":
            conn.send(b"+OK listing\r\n")
            conn.flood(_counting(b"%d uid-%d\r\n"))
            return
        elif command == "UIDL":
            listing = "".join(f"{n} uid-{m.uid}\r\n" for n, m in enumerate(server.messages, 1))
            conn.send(f"+OK\r\n{listing}.\r\n".encode())
        elif command == "LIST":
            listing = "".join(f"{n} {m.said}\r\n" for n, m in enumerate(server.messages, 1))
            conn.send(f"+OK\r\n{listing}.\r\n".encode())
        elif command in ("RETR", "TOP"):
            message = server.messages[int(arg.split()[0]) - 1]
            head = message.data[: message.data.find(b"\r\n\r\n") + 4]
            if command == "TOP":
                conn.send(b"+OK\r\n" + head + b".\r\n")
            elif server.mode == "endless-retr" and message.announced is not None:
                conn.send(b"+OK here it comes\r\n" + head)
                conn.flood(_counting(b"line %d of a message that never ends\r\n"))
                return
            else:
                conn.send(b"+OK\r\n")
                conn.send(message.data)
                conn.send(b".\r\n")
        elif command == "QUIT":
            conn.send(b"+OK bye\r\n")
            return
        else:
            conn.send(b"-ERR unknown command\r\n")


_SESSIONS = {"imap": _imap_session, "pop3": _pop3_session}


@contextlib.contextmanager
def hostile_server(
    protocol: str, mode: str, messages: list[Mailbox] | None = None
) -> Iterator[HostileServer]:
    """Run a hostile ``protocol`` (``"imap"`` or ``"pop3"``) server in ``mode``:

    - imap: ``endless-select``, ``trickle-select``, ``lying-literal``, ``normal``;
    - pop3: ``endless-uidl``, ``endless-retr`` (RETR of a message with ``announced`` set
      never ends), ``normal`` (a message with ``announced`` set is still sent whole, so
      it is larger than LIST said).
    """
    session = _SESSIONS[protocol]
    state = HostileServer("127.0.0.1", 0, mode, list(messages or []))

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            state.connections += 1
            conn = _Conn(self.request, state)
            with contextlib.suppress(OSError):
                session(conn)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    state._server = server
    thread = threading.Thread(target=server.serve_forever, name=f"hostile-{protocol}")
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        state.stop()
        thread.join(timeout=5)


def message(uid: int, body_size: int = 20, *, announced: int | None = None) -> Mailbox:
    """A message with CRLF line ends and ``body_size`` bytes of body."""
    lines = [b"x" * 70] * (body_size // 72) + [b"y" * (body_size % 72)]
    data = (
        f"From: a@example.test\r\nTo: b@example.test\r\nSubject: m{uid}\r\n"
        f"Message-ID: <m{uid}@example.test>\r\n\r\n".encode()
        + b"\r\n".join(lines)
        + b"\r\n"
    )
    return Mailbox(uid, data, announced)

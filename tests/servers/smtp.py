"""An in-process aiosmtpd server that records every transaction and answers on demand.

It runs in its own thread with its own event loop, so sync tests and async tests (whose
loop must stay free for the client under test) can both use it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.servers._util import HOST, free_port
from tests.servers.tls import TlsFiles

TlsMode = Literal["none", "starttls", "implicit"]
"""``none``: plain SMTP; ``starttls``: plain port offering STARTTLS; ``implicit``: TLS from
the first byte (SMTPS)."""

DataAnswer = str | Callable[["SmtpTransaction"], str] | None
"""What DATA is answered with: a reply line, a function of the transaction, or None (250)."""

ACCEPTED = "250 2.0.0 OK queued"


@dataclass(frozen=True)
class SmtpTransaction:
    """One completed DATA exchange as the server saw it.

    ``rcpt_tos`` holds only the recipients the server accepted; ``data`` is the message
    exactly as received after dot-unstuffing (CRLF line ends, final CRLF included);
    ``reply`` is what the server answered to DATA.
    """

    peer: tuple[str, int]
    mail_from: str
    mail_options: tuple[str, ...]
    rcpt_tos: tuple[str, ...]
    rcpt_options: tuple[str, ...]
    data: bytes
    reply: str
    tls: bool
    auth_user: str | None

    @property
    def accepted(self) -> bool:
        """True when the server answered DATA with 2xx, i.e. took responsibility."""
        return self.reply.startswith("2")


@dataclass
class RecordingHandler:
    """aiosmtpd handler: applies the configured answers and records what arrived.

    Tests may change ``rcpt_answers``, ``mail_answer``, ``data_answer`` and
    ``data_answers`` while the server runs; each command reads them when it arrives.
    """

    rcpt_answers: dict[str, str] = field(default_factory=dict)
    mail_answer: str | None = None
    data_answer: DataAnswer = None
    data_answers: list[str] = field(default_factory=list)
    transactions: list[SmtpTransaction] = field(default_factory=list)
    refused_rcpts: list[tuple[str, str]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.mail_answer is not None:
            return self.mail_answer
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        answers = {key.lower(): value for key, value in self.rcpt_answers.items()}
        answer = answers.get(address.lower())
        if answer is not None and not answer.startswith("2"):
            with self._cond:
                self.refused_rcpts.append((address, answer))
            return answer
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return answer or "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        if raw is None:
            raw = envelope.content if isinstance(envelope.content, bytes) else b""
        auth_user: str | None = None
        if isinstance(session.auth_data, LoginPassword):
            auth_user = session.auth_data.login.decode()
        elif isinstance(session.auth_data, bytes):
            auth_user = session.auth_data.decode()
        peer = session.peer if isinstance(session.peer, tuple) else ("", 0)
        draft = SmtpTransaction(
            peer=(str(peer[0]), int(peer[1])),
            mail_from=envelope.mail_from or "",
            mail_options=tuple(envelope.mail_options),
            rcpt_tos=tuple(envelope.rcpt_tos),
            rcpt_options=tuple(envelope.rcpt_options),
            data=raw,
            reply=ACCEPTED,
            tls=session.ssl is not None or _on_tls(server),
            auth_user=auth_user,
        )
        with self._cond:
            if self.data_answers:
                reply = self.data_answers.pop(0)
            elif callable(self.data_answer):
                reply = self.data_answer(draft)
            else:
                reply = self.data_answer or ACCEPTED
            record = dataclasses.replace(draft, reply=reply)
            self.transactions.append(record)
            self._cond.notify_all()
        return reply


def _on_tls(server: SMTP) -> bool:
    """True when the connection is TLS from the start (aiosmtpd only tracks STARTTLS)."""
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class _Controller(Controller):
    """Controller that keeps track of its sessions so stop() can close them cleanly."""

    def __init__(self, handler: RecordingHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.protocols: list[SMTP] = []

    def factory(self) -> SMTP:
        # aiosmtpd warns when AUTH is required without TLS; a test asking for exactly that
        # means it, and under filterwarnings=error the warning would kill the server.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            smtpd = SMTP(self.handler, **self.SMTP_kwargs)
        self.protocols.append(smtpd)
        return smtpd

    def close_sessions(self) -> None:
        for smtpd in self.protocols:
            if smtpd.transport is not None and not smtpd.transport.is_closing():
                smtpd.transport.close()


class SmtpServer:
    """A running aiosmtpd server on 127.0.0.1.

    ``host``/``port`` are where to connect; ``ca_file`` is the CA PEM to verify its
    certificate when TLS is on (else None); ``transactions`` lists every DATA exchange
    in arrival order; ``messages`` only the accepted ones.
    """

    def __init__(
        self,
        *,
        tls: TlsMode = "none",
        tls_files: TlsFiles | None = None,
        require_starttls: bool = False,
        auth: tuple[str, str] | None = None,
        auth_required: bool = False,
        auth_require_tls: bool = True,
        rcpt_answers: dict[str, str] | None = None,
        mail_answer: str | None = None,
        data_answer: DataAnswer = None,
        data_answers: list[str] | None = None,
        data_size_limit: int | None = 32 * 1024 * 1024,
        hostname: str = "mx.example.test",
    ) -> None:
        if tls != "none" and tls_files is None:
            raise ValueError("TLS needs tls_files (use the tls_ca fixture)")
        self.host = HOST
        self.port = free_port()
        self.tls: TlsMode = tls
        self.ca_file: Path | None = tls_files.ca_pem if tls_files and tls != "none" else None
        self.auth = auth
        self.handler = RecordingHandler(
            rcpt_answers=dict(rcpt_answers or {}),
            mail_answer=mail_answer,
            data_answer=data_answer,
            data_answers=list(data_answers or []),
        )
        smtp_kwargs: dict[str, Any] = {
            "data_size_limit": data_size_limit,
            "auth_required": auth_required,
            "auth_require_tls": auth_require_tls,
        }
        if auth is None:
            smtp_kwargs["auth_exclude_mechanism"] = ["PLAIN", "LOGIN"]
        else:
            smtp_kwargs["authenticator"] = self._authenticate
        ssl_context = None
        if tls == "starttls" and tls_files is not None:
            smtp_kwargs["tls_context"] = tls_files.server_context()
            smtp_kwargs["require_starttls"] = require_starttls
        elif tls == "implicit" and tls_files is not None:
            ssl_context = tls_files.server_context()
            # aiosmtpd only counts STARTTLS as TLS; here every byte is already encrypted.
            smtp_kwargs["auth_require_tls"] = False
        self._controller = _Controller(
            self.handler,
            hostname=HOST,
            port=self.port,
            server_hostname=hostname,
            ssl_context=ssl_context,
            **smtp_kwargs,
        )
        self._running = False

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        ok = (
            self.auth is not None
            and isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.auth[0]
            and auth_data.password.decode() == self.auth[1]
        )
        # handled=False makes aiosmtpd send the 535 itself when the check fails.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> SmtpServer:
        """Start listening; returns once the server answers connections."""
        self._controller.start()
        self._running = True
        return self

    def stop(self) -> None:
        """Close open sessions and stop the server thread. Safe to call twice."""
        if not self._running:
            return
        self._running = False
        self._controller.loop.call_soon_threadsafe(self._controller.close_sessions)
        self._controller.stop()

    # -- answers and records ---------------------------------------------------------

    @property
    def rcpt_answers(self) -> dict[str, str]:
        """Per-recipient replies (address, case-insensitive -> reply line); mutable."""
        return self.handler.rcpt_answers

    @property
    def transactions(self) -> list[SmtpTransaction]:
        """Every DATA exchange so far, accepted or not (a snapshot)."""
        with self.handler._cond:
            return list(self.handler.transactions)

    @property
    def messages(self) -> list[SmtpTransaction]:
        """The transactions the server accepted with 2xx (a snapshot)."""
        return [t for t in self.transactions if t.accepted]

    @property
    def refused_rcpts(self) -> list[tuple[str, str]]:
        """(address, reply) for each RCPT TO the server refused (a snapshot)."""
        with self.handler._cond:
            return list(self.handler.refused_rcpts)

    def set_data_answer(self, answer: DataAnswer) -> None:
        """Answer every later DATA with *answer* (None restores ``250``)."""
        self.handler.data_answer = answer

    def queue_data_answers(self, *answers: str) -> None:
        """Answer the next DATA commands with *answers* in order, then fall back."""
        with self.handler._cond:
            self.handler.data_answers.extend(answers)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[SmtpTransaction]:
        """Block until at least *count* messages were accepted; return them.

        Raises TimeoutError otherwise. Do not call this from an event loop that also runs
        the client (it blocks); use :meth:`wait_for_async` there.
        """
        deadline = time.monotonic() + timeout
        with self.handler._cond:
            while True:
                accepted = [t for t in self.handler.transactions if t.accepted]
                if len(accepted) >= count:
                    return accepted
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(accepted)} of {count} messages arrived within {timeout}s"
                    )
                self.handler._cond.wait(left)

    async def wait_for_async(self, count: int, within: float = 5.0) -> list[SmtpTransaction]:
        """Like :meth:`wait_for`, but yields to the running event loop while waiting."""
        deadline = time.monotonic() + within
        while True:
            accepted = self.messages
            if len(accepted) >= count:
                return accepted
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(accepted)} of {count} messages arrived within {within}s")
            await asyncio.sleep(0.01)


SmtpServerFactory = Callable[..., SmtpServer]


@pytest.fixture
def smtp_server_factory(tls_ca: TlsFiles) -> Iterator[SmtpServerFactory]:
    """Start aiosmtpd servers with custom options; all are stopped at teardown.

    Call it with the keyword arguments of :class:`SmtpServer` (``tls``, ``auth``,
    ``rcpt_answers``, ``data_answer``, ...). TLS modes use the session's ``tls_ca``.
    """
    servers: list[SmtpServer] = []

    def make(**options: Any) -> SmtpServer:
        if options.get("tls", "none") != "none":
            options.setdefault("tls_files", tls_ca)
        server = SmtpServer(**options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: SmtpServerFactory) -> SmtpServer:
    """A plain aiosmtpd server (no TLS, no AUTH) that accepts and records everything."""
    return smtp_server_factory()


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> SmtpServer:
    """The plain recording server under the short name the CLI and daemon tests use."""
    return smtp_server

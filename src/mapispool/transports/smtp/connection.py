"""One SMTP client connection: connect, EHLO, STARTTLS, AUTH and one transaction at a time.

aiosmtplib's client is not safe for concurrent use, so each ``SmtpConnection`` owns one
client and is used by one coroutine at a time (the logon's pool sees to that). MAIL, RCPT
and DATA are driven here command by command, so that the end of data can be written on
its own: ``on_final_dot`` runs right before the final ``.`` goes out and
``on_final_reply`` as soon as any reply to it arrives (DESIGN §7, the uncertain window).
Every foreign error leaves this module as ``SmtpError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from aiosmtplib import SMTP, SMTPException, SMTPResponseException
from aiosmtplib.protocol import SMTPProtocol

from ...mapi import MAPI_E_LOGON_FAILED, MAPI_E_NETWORK_ERROR, STATUS_FAILURE
from .auth import (
    ERROR_CHALLENGE_ANSWER,
    Mechanism,
    NoMechanism,
    choose_mechanism,
    login_responses,
    oauthbearer_response,
    plain_response,
    xoauth2_response,
)
from .content import END_OF_DATA
from .envelope import BadAddress, mail_options, needs_smtputf8, path
from .errors import SmtpError, auth_failed, misconfigured, network_error, server_busy
from .outcome import Reply, Transaction
from .replies import ReplyClass, classify, format_reply, is_closing
from .secrets import resolve_password, resolve_token
from .settings import SmtpSettings

#: Body bytes written between two waits for the socket to drain: bounds the memory held
#: in the transport's buffer and lets the command timeout measure progress, not size.
CHUNK = 64 * 1024
#: How long a polite QUIT may take before the socket is simply closed.
QUIT_TIMEOUT = 5.0

Hook = Callable[[], None]


def build_tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """The client TLS context: system CAs or ``ca_file``; hostname checked unless
    ``verify = false``. Raises ``SmtpError`` when ``ca_file`` cannot be loaded."""
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise misconfigured(
            f"ca_file: cannot load {settings.ca_file!r} ({exc}); point it at a PEM file"
        ) from exc
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SmtpConnection:
    """A lazily opened, reusable connection to the configured server.

    ``stage`` says which step runs or ran last (``"connect"``, ``"mail"``, ``"rcpt"``,
    ``"data"``, ``"dot"``, ``"idle"``): the logon reconnects and retries transparently only
    when a reused connection fails at ``"mail"``, before anything of the message was sent.
    """

    def __init__(self, settings: SmtpSettings, logger: logging.Logger) -> None:
        self.settings = settings
        self.logger = logger
        self.stage = "idle"
        self.transactions = 0
        self.description = ""
        self._client: SMTP | None = None

    @property
    def connected(self) -> bool:
        """True while the server end has not been seen to close."""
        return self._client is not None and self._client.is_connected

    # -- opening and closing ------------------------------------------------------------

    async def open(self) -> str:
        """Connect, greet, secure and authenticate; return a one-line description.

        Closes any previous client first. The password or token is looked up afresh, so
        a refreshed OAuth token is used at every reconnect. Raises ``SmtpError``.
        """
        self.abort()
        s = self.settings
        self.stage = "connect"
        where = f"{s.host}:{s.port}"
        context = build_tls_context(s) if s.tls != "none" else None
        client = SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            local_hostname=s.helo_name,
            use_tls=s.tls == "implicit",
            start_tls=False,
            tls_context=context,
        )
        self._client = client
        try:
            await client.connect(timeout=s.connect_timeout)
            await self._greet(client)
            if s.tls == "starttls":
                await self._starttls(client, context)
            mechanism = await self._authenticate(client) if s.wants_auth else None
        except SmtpError:
            self.abort()
            raise
        except SMTPResponseException as exc:
            self.abort()
            reply = format_reply(exc.code, exc.message)
            if classify(exc.code) is ReplyClass.TEMPORARY:
                raise server_busy(reply, f"connecting to {where}") from exc
            # A 5xx greeting or EHLO: the server refuses us. The message stays queued
            # (an operator can fix the server); the row says it needs attention.
            raise SmtpError(
                MAPI_E_NETWORK_ERROR,
                f"connecting to {where}: the server refused the session",
                reply=reply,
                status_bit=STATUS_FAILURE,
            ) from exc
        except (SMTPException, OSError, TimeoutError, ValueError) as exc:
            self.abort()
            raise network_error(exc, f"connecting to {where}") from exc
        security = {"starttls": "STARTTLS", "implicit": "TLS", "none": "no TLS"}[s.tls]
        auth = f", AUTH {mechanism.value} as {s.username}" if mechanism else ""
        self.description = f"Connected to {where} ({security}{auth})"
        self.stage = "idle"
        self.transactions = 0
        return self.description

    async def _greet(self, client: SMTP) -> None:
        try:
            await client.ehlo()
        except SMTPResponseException as exc:
            if is_closing(exc.code) or not client.is_connected:
                raise
            # An old server without ESMTP: HELO still lets us send (no extensions).
            await client.helo()

    async def _starttls(self, client: SMTP, context: ssl.SSLContext | None) -> None:
        if not client.supports_extension("starttls"):
            raise misconfigured(
                f"{self.settings.host}:{self.settings.port} does not offer STARTTLS; "
                'use tls = "implicit" if it is an SMTPS port, or tls = "none" only on a '
                "trusted network"
            )
        await client.starttls(server_hostname=self.settings.host, tls_context=context)
        await self._greet(client)

    async def _authenticate(self, client: SMTP) -> Mechanism:
        s = self.settings
        assert s.username is not None
        encrypted = client.get_transport_info("sslcontext") is not None
        if not encrypted and not s.allow_plaintext_auth:
            raise misconfigured(
                "refusing to send credentials over an unencrypted connection; use TLS "
                "or set allow_plaintext_auth = true",
                hresult=MAPI_E_LOGON_FAILED,
            )
        offered = [str(name) for name in client.server_auth_methods]
        if not client.supports_extension("auth"):
            offered = []
        try:
            mechanism = choose_mechanism(s.auth, offered, have_token=s.has_token_source)
        except NoMechanism as exc:
            raise misconfigured(str(exc), hresult=MAPI_E_LOGON_FAILED) from exc
        secret = await resolve_token(s) if mechanism.uses_token else await resolve_password(s)
        reply = await self._auth_exchange(client, mechanism, s.username, secret)
        if reply.code == 235:
            return mechanism
        if classify(reply.code) is ReplyClass.TEMPORARY:
            raise server_busy(reply.line, "authenticating")
        raise auth_failed(reply.line)

    async def _auth_exchange(
        self, client: SMTP, mechanism: Mechanism, username: str, secret: str
    ) -> Reply:
        name = mechanism.value.encode()
        if mechanism is Mechanism.PLAIN:
            first = plain_response(username, secret)
        elif mechanism is Mechanism.LOGIN:
            first, password = login_responses(username, secret)
        elif mechanism is Mechanism.XOAUTH2:
            first = xoauth2_response(username, secret)
        else:
            first = oauthbearer_response(username, secret, self.settings.host, self.settings.port)
        response = await client.execute_command(b"AUTH", name, first)
        if response.code == 334 and mechanism is Mechanism.LOGIN:
            response = await client.execute_command(password)
        elif response.code == 334 and mechanism.uses_token:
            # The 334 carries the server's JSON error; answering it yields the final reply.
            response = await client.execute_command(ERROR_CHALLENGE_ANSWER[mechanism])
        return Reply(response.code, response.message)

    def abort(self) -> None:
        """Drop the connection at once, without QUIT."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
        self.stage = "idle"

    async def close(self) -> None:
        """Say QUIT (briefly) and close. Never raises."""
        client = self._client
        if client is not None and client.is_connected:
            # The server may already be gone; QUIT is only politeness.
            with contextlib.suppress(SMTPException, OSError, TimeoutError):
                await asyncio.wait_for(client.quit(), QUIT_TIMEOUT)
        self.abort()
        await asyncio.sleep(0)  # let the transport release its socket (see logoff)

    async def noop(self) -> None:
        """Check that the connection still answers. Raises ``SmtpError``."""
        try:
            await self._command(b"NOOP")
        except (SMTPException, OSError, TimeoutError) as exc:
            self.abort()
            raise network_error(exc, "checking the connection") from exc

    # -- one transaction ------------------------------------------------------------------

    async def send(
        self,
        sender: str,
        recipients: Sequence[str],
        payload: bytes,
        *,
        eight_bit: bool,
        on_final_dot: Hook,
        on_final_reply: Hook,
    ) -> Transaction:
        """Run MAIL, RCPT for each of ``recipients``, and DATA with ``payload`` (already
        dot-stuffed, without the end marker); return every reply in a ``Transaction``.

        Server replies never raise; the caller decides with ``outcome.decide``. DATA is not
        sent when no recipient was accepted. Raises ``SmtpError`` (``MAPI_E_NETWORK_ERROR``)
        when the connection fails or a reply times out; if that happens after
        ``on_final_dot`` and before a reply, ``uncertain`` is set on the error and
        ``on_final_reply`` is not called.
        """
        if self._client is None or not self._client.is_connected:
            raise network_error(ConnectionError("not connected"), "sending")
        transaction = Transaction()
        try:
            await self._transact(
                transaction, sender, recipients, payload, eight_bit, on_final_dot, on_final_reply
            )
        except (SMTPException, OSError, TimeoutError) as exc:
            stage = self.stage
            self.abort()
            if stage == "dot":
                error = network_error(exc, "waiting for the reply to the end of data")
                raise SmtpError(
                    error.hresult,
                    f"{error.message}: the message was handed over but the server never "
                    "answered, so delivery is uncertain",
                    uncertain=True,
                ) from exc
            self.stage = stage  # kept so the logon can tell a stale connection
            raise network_error(exc, f"sending ({stage.upper()})") from exc
        self.stage = "idle"
        self.transactions += 1
        return transaction

    async def _transact(
        self,
        transaction: Transaction,
        sender: str,
        recipients: Sequence[str],
        payload: bytes,
        eight_bit: bool,
        on_final_dot: Hook,
        on_final_reply: Hook,
    ) -> None:
        client = self._client
        assert client is not None
        utf8 = needs_smtputf8([sender, *recipients])
        utf8_ok = client.supports_extension("smtputf8")
        size = len(payload) if client.supports_extension("size") else None
        options = mail_options(
            size=size,
            eight_bit=eight_bit and client.supports_extension("8bitmime"),
            smtputf8=utf8 and utf8_ok,
        )
        self.stage = "mail"
        transaction.mail = await self._envelope(b"MAIL", b"FROM:", sender, utf8_ok, options)
        if transaction.mail.kind is not ReplyClass.OK:
            await self._rset(transaction.mail)
            return
        self.stage = "rcpt"
        for address in recipients:
            reply = await self._envelope(b"RCPT", b"TO:", address, utf8_ok, [])
            transaction.rcpt.append(reply)
            if is_closing(reply.code):
                return
        if not any(reply.kind is ReplyClass.OK for reply in transaction.rcpt):
            await self._rset(None)
            return
        self.stage = "data"
        transaction.data = await self._command(b"DATA")
        if transaction.data.code != 354:
            await self._rset(transaction.data)
            return
        await self._write_body(payload)
        self.stage = "dot"
        protocol = self._protocol()
        on_final_dot()
        protocol.write(END_OF_DATA)
        response = await protocol.read_response(timeout=self.settings.timeout)
        on_final_reply()
        transaction.final = Reply(response.code, response.message)
        if is_closing(response.code):
            self.abort()

    async def _envelope(
        self, verb: bytes, prefix: bytes, address: str, utf8_ok: bool, options: list[bytes]
    ) -> Reply:
        # Addresses the server cannot take are refused here, as a server would, so they
        # get an NDR instead of blocking the queue.
        try:
            wire = path(address, allow_null=verb == b"MAIL")
        except BadAddress as exc:
            return Reply(553, f"5.1.3 {exc}")
        if not address.isascii() and not utf8_ok:
            return Reply(553, f"5.6.7 {address!r} needs SMTPUTF8, which the server lacks")
        return await self._command(verb, prefix + wire, *options)

    async def _command(self, *args: bytes) -> Reply:
        client = self._client
        if client is None:
            raise ConnectionError("not connected")
        response = await client.execute_command(*args)
        return Reply(response.code, response.message)

    async def _rset(self, last: Reply | None) -> None:
        """End a failed transaction so the connection can carry the next one."""
        if last is not None and is_closing(last.code):
            self.abort()
            return
        try:
            await self._command(b"RSET")
        except (SMTPException, OSError, TimeoutError):
            self.abort()  # nothing was delivered; the next message reconnects

    def _protocol(self) -> SMTPProtocol:
        client = self._client
        if client is None or client.protocol is None:
            raise ConnectionError("connection lost")
        return client.protocol

    async def _write_body(self, payload: bytes) -> None:
        protocol = self._protocol()
        drain = _drainer(protocol)
        view = memoryview(payload)
        for start in range(0, len(view), CHUNK):
            protocol.write(bytes(view[start : start + CHUNK]))
            await asyncio.wait_for(drain(), self.settings.timeout)


def _drainer(protocol: SMTPProtocol) -> Callable[[], Awaitable[None]]:
    """A coroutine function that waits until the socket's write buffer has room.

    aiosmtplib's protocol implements asyncio's flow control but only exposes it through
    a private helper; without it we fall back to yielding, so a very large body is still
    written, only with less back-pressure."""
    helper = getattr(protocol, "_drain_helper", None)
    if helper is not None:
        return cast(Callable[[], Awaitable[None]], helper)

    async def yield_once() -> None:
        await asyncio.sleep(0)

    return yield_once

"""One SMTP client connection: connect, EHLO, STARTTLS, AUTH and one transaction at a time.

aiosmtplib's client is not safe for concurrent use, so each ``SmtpConnection`` owns one
client and is used by one coroutine at a time (the logon's pool sees to that). MAIL, RCPT
and DATA are driven here command by command, so that the end of data can be written on
its own: ``on_final_dot`` runs right before the final ``.`` goes out and
``on_final_reply`` as soon as any reply to it arrives (DESIGN §7, the uncertain window).
Every foreign error leaves this module as ``SmtpError``.

A server's text is decoded by ``reply_text`` (never fails, no control characters) and,
once a secret was sent, has it redacted (``secrets.Redactor``) before it leaves this
module in a ``Reply`` or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiosmtplib import (
    SMTP,
    SMTPException,
    SMTPReadTimeoutError,
    SMTPResponseException,
    SMTPServerDisconnected,
)

from ...mapi import MAPI_E_LOGON_FAILED, MAPI_E_NETWORK_ERROR, STATUS_FAILURE
from .auth import Mechanism, NoMechanism, choose_mechanism
from .content import END_OF_DATA, Payload
from .envelope import local_refusal, mail_options, needs_smtputf8, path
from .errors import SmtpError, auth_failed, misconfigured, network_error, server_busy
from .login import auth_exchange, build_tls_context, greet, starttls
from .outcome import Reply, Transaction
from .replies import ReplyClass, classify, format_reply, is_closing
from .reply_stream import ReplyStream, command_line
from .reply_text import clean_reply, decode_reply
from .secrets import Redactor, resolve_password, resolve_token
from .settings import SmtpSettings

#: Body bytes written between two waits for the socket to drain: bounds the memory held
#: in the transport's buffer and lets the command timeout measure progress, not size.
CHUNK = 64 * 1024
#: How long a polite QUIT may take before the socket is simply closed.
QUIT_TIMEOUT = 5.0

Hook = Callable[[], None]
#: Starts the durable hand-over mark and returns ``ready``, awaited before the final dot
#: (``OutboundMessage.start_handoff``).
StartMark = Callable[[], Callable[[], Awaitable[None]]]


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
        self._stream: ReplyStream | None = None
        self._redactor = Redactor()
        self._start_mark: StartMark | None = None
        self._ready: Callable[[], Awaitable[None]] | None = None
        #: The final dot of the current transaction was written (the hand-over began).
        self.dot_sent = False

    @property
    def connected(self) -> bool:
        """True while the server end has not been seen to close."""
        return self._client is not None and self._client.is_connected

    # -- opening and closing ------------------------------------------------------------

    async def open(self) -> str:
        """Connect, greet, secure and authenticate; return a one-line description.

        Closes any previous client first. The password or token is looked up afresh, so
        a refreshed OAuth token is used at every reconnect. Raises ``SmtpError``, with
        the secret redacted from its texts and its causes'.
        """
        self.abort()
        self._redactor = Redactor()
        try:
            return await self._open()
        except SmtpError as exc:
            self._redactor.scrub(exc)  # in place, causes included
            raise

    async def _open(self) -> str:
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
            await greet(client)
            if s.tls == "starttls":
                await starttls(client, s, context)
            mechanism = await self._authenticate(client) if s.wants_auth else None
        except SmtpError:
            await self.abort_and_release()
            raise
        except SMTPResponseException as exc:
            await self.abort_and_release()
            reply = format_reply(exc.code, clean_reply(exc.message))
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
            await self.abort_and_release()
            raise network_error(exc, f"connecting to {where}") from exc
        redactor = self._redactor
        self._stream = ReplyStream.take_over(client, lambda raw: redactor.text(decode_reply(raw)))
        security = {"starttls": "STARTTLS", "implicit": "TLS", "none": "no TLS"}[s.tls]
        auth = f", AUTH {mechanism.value} as {s.username}" if mechanism else ""
        self.description = f"Connected to {where} ({security}{auth})"
        self.stage = "idle"
        self.transactions = 0
        return self.description

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
        # From here on every text from this server is redacted: it may echo the secret.
        self._redactor = Redactor.for_secret(s, s.username, secret)
        reply = await auth_exchange(
            client, mechanism, s.username, secret, (s.host, s.port), self._redactor
        )
        if reply.code == 235:
            return mechanism
        if classify(reply.code) is ReplyClass.TEMPORARY:
            raise server_busy(reply.line, "authenticating")
        raise auth_failed(reply.line)

    def abort(self) -> None:
        """Drop the connection at once, without QUIT."""
        client, self._client = self._client, None
        self._stream = None
        if client is not None:
            # transport.abort(), not close(): closing a TLS transport first waits for the
            # peer's close_notify, and the socket would outlive the connection object.
            transport = getattr(client, "transport", None)
            if transport is not None:
                transport.abort()
            client.close()
        self.stage = "idle"

    async def abort_and_release(self) -> None:
        """``abort``, then give the event loop a turn so that the transport really releases
        its socket before the caller moves on (a transport left "closing" when the loop
        ends leaks the socket)."""
        self.abort()
        await asyncio.sleep(0)

    async def close(self) -> None:
        """Say QUIT (briefly) and close. Never raises."""
        client, stream = self._client, self._stream
        if client is not None and client.is_connected and stream is not None:
            # The server may already be gone; QUIT is only politeness.
            with contextlib.suppress(SMTPException, OSError, TimeoutError):
                stream.write(b"QUIT\r\n")
                await stream.read(QUIT_TIMEOUT)
        self.abort()
        await asyncio.sleep(0)  # let the transport release its socket (see logoff)

    async def noop(self) -> None:
        """Check that the connection still answers. Raises ``SmtpError``."""
        try:
            await self._command(b"NOOP")
        except (SMTPException, OSError, TimeoutError) as exc:
            self.abort()
            self._redactor.scrub(exc)
            raise self._redactor.scrub(network_error(exc, "checking the connection")) from exc

    # -- one transaction ------------------------------------------------------------------

    async def send(
        self,
        sender: str,
        recipients: Sequence[str],
        payload: Payload,
        *,
        eight_bit: bool,
        on_final_dot: Hook,
        on_final_reply: Hook,
        start_mark: StartMark | None = None,
    ) -> Transaction:
        """Run MAIL, RCPT for each of ``recipients``, and DATA with ``payload`` (already
        dot-stuffed, without the end marker); return every reply in a ``Transaction``.

        ``start_mark``, if given, is called as soon as DATA is on its way (with MAIL and
        RCPT under PIPELINING), so that the durable hand-over mark is written while the
        server answers; ``on_final_dot`` and the final dot follow only once both the 354
        and the mark are in. If the dot is not written after all (a refusal, a failure
        before it), ``send`` still waits for the mark before it returns or raises, so
        that the mark never lands after the attempt's outcome.

        Server replies never raise; the caller decides with ``outcome.decide``. DATA is not
        sent when no recipient was accepted. Raises ``SmtpError`` (``MAPI_E_NETWORK_ERROR``)
        when the connection fails or a reply times out; if that happens after
        ``on_final_dot`` and before a reply, ``uncertain`` is set on the error and
        ``on_final_reply`` is not called.
        """
        if self._client is None or not self._client.is_connected:
            raise network_error(ConnectionError("not connected"), "sending")
        transaction = Transaction()
        self._start_mark = start_mark
        self._ready = None
        self.dot_sent = False
        try:
            await self._transact(
                transaction, sender, recipients, payload, eight_bit, on_final_dot, on_final_reply
            )
        except (SMTPException, OSError, TimeoutError) as exc:
            stage = self.stage
            self.abort()
            self._redactor.scrub(exc)
            if stage == "dot":
                error = network_error(exc, "waiting for the reply to the end of data")
                raise SmtpError(
                    error.hresult,
                    f"{error.message}: the message was handed over but the server never "
                    "answered, so delivery is uncertain",
                    uncertain=True,
                ) from exc
            self.stage = stage  # kept so the logon can tell a stale connection
            raise self._redactor.scrub(network_error(exc, f"sending ({stage.upper()})")) from exc
        finally:
            ready, self._ready = self._ready, None
            if ready is not None and not self.dot_sent:
                with contextlib.suppress(Exception):  # nothing left that it guards
                    await ready()
        self.stage = "idle"
        self.transactions += 1
        return transaction

    def _begin_mark(self) -> None:
        """Start the hand-over mark (once per transaction) while the server answers."""
        if self._start_mark is not None and self._ready is None:
            self._ready = self._start_mark()

    async def _transact(
        self,
        transaction: Transaction,
        sender: str,
        recipients: Sequence[str],
        payload: Payload,
        eight_bit: bool,
        on_final_dot: Hook,
        on_final_reply: Hook,
    ) -> None:
        client = self._client
        assert client is not None
        utf8 = needs_smtputf8([sender, *recipients])
        utf8_ok = client.supports_extension("smtputf8")
        size = payload.size if client.supports_extension("size") else None
        options = mail_options(
            size=size,
            eight_bit=eight_bit and client.supports_extension("8bitmime"),
            smtputf8=utf8 and utf8_ok,
        )
        if self.settings.pipelining and client.supports_extension("pipelining"):
            await self._transact_pipelined(
                transaction, sender, recipients, payload, utf8_ok, options, on_final_dot,
                on_final_reply,
            )  # fmt: skip
            return
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
        self._begin_mark()
        transaction.data = await self._command(b"DATA")
        if transaction.data.code != 354:
            await self._rset(transaction.data)
            return
        await self._finish_data(transaction, payload, on_final_dot, on_final_reply)

    async def _transact_pipelined(
        self,
        transaction: Transaction,
        sender: str,
        recipients: Sequence[str],
        payload: Payload,
        utf8_ok: bool,
        options: list[bytes],
        on_final_dot: Hook,
        on_final_reply: Hook,
    ) -> None:
        """RFC 2920: MAIL, every RCPT and DATA in one write, their replies read in order;
        then the body and the end of data. ``transaction`` ends up exactly as the
        command-by-command exchange would fill it (a reply the lock-step client would not
        have asked for is read and dropped), so the outcome does not depend on it."""
        self.stage = "mail"
        refused = local_refusal(b"MAIL", sender, utf8_ok)
        if refused is not None:
            transaction.mail = refused
            await self._rset(refused)
            return
        lines = [command_line(b"MAIL", b"FROM:" + path(sender, allow_null=True), *options)]
        local: list[Reply | None] = []
        for address in recipients:
            refused = local_refusal(b"RCPT", address, utf8_ok)
            local.append(refused)
            if refused is None:
                lines.append(command_line(b"RCPT", b"TO:" + path(address)))
        sends_data = any(reply is None for reply in local)
        if sends_data:
            lines.append(b"DATA\r\n")
        stream = self._reader()
        stream.write(b"".join(lines))
        if sends_data:
            self._begin_mark()
        timeout = self.settings.timeout
        transaction.mail = mail = await stream.read(timeout)
        if is_closing(mail.code):
            self.abort()
            return
        mail_ok = mail.kind is ReplyClass.OK
        self.stage = "rcpt"
        for refused in local:
            if refused is None:
                reply = await stream.read(timeout)
            else:
                reply = refused
            if mail_ok:
                transaction.rcpt.append(reply)
            if is_closing(reply.code):
                self.abort()
                return
        wanted = mail_ok and any(reply.kind is ReplyClass.OK for reply in transaction.rcpt)
        if sends_data:
            self.stage = "data"
            data = await stream.read(timeout)
            if wanted:
                transaction.data = data
            if is_closing(data.code):
                self.abort()
                return
            if not wanted and data.code == 354:
                # A server that opened DATA with no valid recipient: close it empty.
                stream.write(END_OF_DATA)
                await stream.read(timeout)
        if not mail_ok:
            await self._rset(mail)
            return
        if not wanted:
            await self._rset(None)
            return
        assert transaction.data is not None
        if transaction.data.code != 354:
            await self._rset(transaction.data)
            return
        await self._finish_data(transaction, payload, on_final_dot, on_final_reply)

    async def _finish_data(
        self,
        transaction: Transaction,
        payload: Payload,
        on_final_dot: Hook,
        on_final_reply: Hook,
    ) -> None:
        """Write the body and the end of data, with the hand-over hooks around the dot.
        A small body goes out in the same write as the dot, after ``on_final_dot``."""
        stream = self._reader()
        if payload.small is None:
            await self._write_body(stream, payload)
            head = b""
        else:
            head = payload.small
        if self._ready is not None:
            try:
                await self._ready()
            except BaseException:
                # The mark failed: the server waits for the rest of the message, which
                # must not go out; dropping the connection makes it discard the message.
                self.abort()
                raise
        if stream.closing:
            raise SMTPServerDisconnected("Connection lost")  # before the hand-over began
        self.stage = "dot"
        self.dot_sent = True
        on_final_dot()
        stream.write(head + END_OF_DATA)
        transaction.final = final = await stream.read(self.settings.timeout)
        on_final_reply()
        if is_closing(final.code):
            self.abort()

    async def _envelope(
        self, verb: bytes, prefix: bytes, address: str, utf8_ok: bool, options: list[bytes]
    ) -> Reply:
        refused = local_refusal(verb, address, utf8_ok)
        if refused is not None:
            return refused
        return await self._command(verb, prefix + path(address, allow_null=verb == b"MAIL"),
                                   *options)  # fmt: skip

    async def _command(self, *args: bytes) -> Reply:
        stream = self._reader()
        stream.write(command_line(*args))
        try:
            reply = await stream.read(self.settings.timeout)
        except (SMTPServerDisconnected, SMTPReadTimeoutError):
            # A reply given up on would pair with the next command: never reuse it.
            self._close_transport()
            raise
        if is_closing(reply.code):
            self._close_transport()  # the server hangs up after a 421
        return reply

    def _close_transport(self) -> None:
        """Close the socket but keep ``stage`` and the client, as a failed command left
        them (``connected`` turns false)."""
        if self._client is not None:
            self._client.close()

    async def _rset(self, last: Reply | None) -> None:
        """End a failed transaction so the connection can carry the next one."""
        if last is not None and is_closing(last.code):
            self.abort()
            return
        try:
            await self._command(b"RSET")
        except (SMTPException, OSError, TimeoutError):
            self.abort()  # nothing was delivered; the next message reconnects

    def _reader(self) -> ReplyStream:
        stream = self._stream
        if self._client is None or stream is None:
            raise SMTPServerDisconnected("Connection lost")
        return stream

    async def _write_body(self, stream: ReplyStream, payload: Payload) -> None:
        for piece in payload.chunks():
            view = memoryview(piece)
            for start in range(0, len(view), CHUNK):
                stream.write(bytes(view[start : start + CHUNK]))
                if stream.paused:
                    await asyncio.wait_for(stream.drain(), self.settings.timeout)

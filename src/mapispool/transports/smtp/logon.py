"""``SmtpLogon``: the IXPLogon of the smtp transport, a pool of ``SmtpConnection``.

Connections are opened on first use, reused across a flush and across consecutive
messages, reopened transparently when the server closed them while idle, and closed at
``NOTIFY_END_OUTBOUND_FLUSH`` and ``logoff``. Up to ``connections`` of them carry
messages at once; ``max_in_flight`` tells the spooler so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ...mapi import (
    END_RESEND_LATER,
    NOTIFY_END_OUTBOUND_FLUSH,
    PR_NDR_DIAG_CODE,
    PR_REPORT_TEXT,
    STATUS_AVAILABLE,
    STATUS_FAILURE,
    STATUS_OFFLINE,
    STATUS_OUTBOUND_ACTIVE,
)
from ...spi import OutboundMessage, Recipient, Support, TransportLogon
from .connection import CHUNK, SmtpConnection
from .content import Payload, prepare_payload
from .errors import SmtpError, server_busy
from .outcome import Outcome, Transaction, Verdict, decide
from .replies import is_closing
from .settings import SmtpSettings, parse_settings

_STATE_BITS = STATUS_AVAILABLE | STATUS_OFFLINE | STATUS_FAILURE


class SmtpLogon(TransportLogon):
    """One logged-on smtp transport. Built by ``SmtpProvider.transport_logon``; may also
    be built directly from a ``Support`` whose ``settings`` is an smtp section."""

    def __init__(self, support: Support, settings: SmtpSettings | None = None) -> None:
        super().__init__(support)
        self.settings = settings if settings is not None else parse_settings(support.settings)
        self.max_in_flight = self.settings.connections
        self._idle: list[SmtpConnection] = []
        self._busy: set[SmtpConnection] = set()
        self._slots: asyncio.Semaphore | None = None
        self._resend_later: set[bytes] = set()
        self._active = 0
        self._activity = f"Not connected to {self.where}"
        self._last_error: str | None = None

    @property
    def where(self) -> str:
        """``host:port`` of the server."""
        return f"{self.settings.host}:{self.settings.port}"

    def address_types(self) -> Sequence[str]:
        """The ``address_types`` setting (default ``["SMTP"]``)."""
        return self.settings.address_types

    # -- status row -------------------------------------------------------------------

    def _show(self, activity: str | None = None, *, state: int | None = None) -> None:
        if activity is not None:
            self._activity = activity
        text = self._activity
        if self._last_error:
            text += f". Last error: {self._last_error}"
        if state is None:
            self.update_status(text=text)
        else:
            self.update_status(set_bits=state, clear_bits=_STATE_BITS & ~state, text=text)

    def _failed(self, exc: SmtpError) -> None:
        self._last_error = exc.reply or exc.message
        self._show(state=exc.status_bit)

    # -- connection pool --------------------------------------------------------------

    async def _acquire(self) -> SmtpConnection:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.connections)
        await self._slots.acquire()
        connection = (
            self._idle.pop() if self._idle else SmtpConnection(self.settings, self.support.logger)
        )
        self._busy.add(connection)
        return connection

    def _release(self, connection: SmtpConnection) -> None:
        self._busy.discard(connection)
        if connection.connected:
            self._idle.append(connection)
        assert self._slots is not None
        self._slots.release()

    async def _open(self, connection: SmtpConnection) -> None:
        description = await connection.open()
        self.support.logger.info("%s", description)
        self._show(description, state=STATUS_AVAILABLE)

    async def _close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()
        if idle:
            self._show(f"Disconnected from {self.where}")

    # -- SPI: outbound ----------------------------------------------------------------

    def _mine(self, message: OutboundMessage) -> list[Recipient]:
        types = self.settings.address_types
        return [r for r in message.pending_recipients() if "*" in types or r.addrtype in types]

    async def submit_message(self, message: OutboundMessage, flags: int) -> None:
        """Send ``message`` to its pending SMTP recipients (``SubmitMessage``).

        Delivered and permanently refused recipients get ``responsibility = True``; the
        refused ones are reported in one ``support.status_recips`` call with
        ``PR_REPORT_TEXT`` (the server's reply) and ``PR_NDR_DIAG_CODE`` (its code).
        Recipients refused with 4xx stay pending and ``end_message`` returns
        ``END_RESEND_LATER``; the delivered ones are then also reported with
        ``support.delivered_recips``, since under that answer marks alone deliver nothing.
        Raises ``MapiError``: ``MAPI_E_WAIT`` when the server asked to retry the whole
        message (421, 4xx to MAIL or DATA), ``MAPI_E_NETWORK_ERROR`` when the connection
        failed (if that happened after the end of data went out and before a reply, the
        handoff is left open and the spooler marks the message uncertain),
        ``MAPI_E_LOGON_FAILED`` when authentication failed. Recipients are untouched
        whenever it raises.
        """
        recipients = self._mine(message)
        self._resend_later.discard(message.entry_id)
        if not recipients:
            return
        payload, had_bcc, eight_bit = prepare_payload(
            message.size, lambda: message.content, message.open_content, CHUNK,
            canonical=message.canonical, eight_bit=message.eight_bit,
        )  # fmt: skip
        if had_bcc:
            self.support.logger.warning(
                "message %s still had a Bcc header; it was removed before sending",
                message.entry_id.hex(),
            )
        self._active += 1
        self.update_status(set_bits=STATUS_OUTBOUND_ACTIVE)
        try:
            transaction = await self._send(message, recipients, payload, eight_bit)
        except SmtpError as exc:
            self._failed(exc)
            raise
        finally:
            self._active -= 1
            if not self._active:
                self.update_status(clear_bits=STATUS_OUTBOUND_ACTIVE)
        outcome = decide(transaction, len(recipients))
        if outcome.verdict is Verdict.RETRY:
            assert outcome.reason is not None
            error = server_busy(outcome.reason.line, "sending")
            self._failed(error)
            raise error
        self._apply(message, recipients, outcome)

    async def _send(
        self,
        message: OutboundMessage,
        recipients: list[Recipient],
        payload: Payload,
        eight_bit: bool,
    ) -> Transaction:
        connection = await self._acquire()
        try:
            reused = connection.connected
            if not reused:
                await self._open(connection)
            addresses = [r.address for r in recipients]

            async def attempt() -> Transaction:
                return await connection.send(
                    message.sender,
                    addresses,
                    payload,
                    eight_bit=eight_bit,
                    on_final_dot=message.begin_handoff,
                    on_final_reply=message.end_handoff,
                    start_mark=message.start_handoff,
                )

            try:
                transaction = await attempt()
            except SmtpError:
                if not reused or connection.stage != "mail":
                    raise
                # The server dropped the idle connection before our MAIL: nothing of the
                # message was sent, so one fresh connection may retry it.
                await self._open(connection)
                return await attempt()
            if reused and transaction.mail is not None and is_closing(transaction.mail.code):
                await self._open(connection)  # an idle-timeout 421 on a reused connection
                transaction = await attempt()
            return transaction
        finally:
            self._release(connection)

    def _apply(
        self, message: OutboundMessage, recipients: list[Recipient], outcome: Outcome
    ) -> None:
        delivered = [recipients[index] for index in outcome.delivered]
        for recipient in delivered:
            recipient.responsibility = True
        if outcome.resend_later and delivered:
            # end_message will answer END_RESEND_LATER, under which marks alone deliver
            # nothing (DESIGN §7): report what the server accepted explicitly.
            self.support.delivered_recips(message, delivered)
        failed: list[Recipient] = []
        for index, reply in sorted(outcome.failed.items()):
            recipient = recipients[index]
            recipient.props[PR_REPORT_TEXT] = reply.line
            recipient.props[PR_NDR_DIAG_CODE] = reply.code
            recipient.responsibility = True
            failed.append(recipient)
        if failed:
            self.support.status_recips(message, failed)
        if outcome.resend_later:
            self._resend_later.add(message.entry_id)
        summary = f"Sent to {len(outcome.delivered)} of {len(recipients)} recipients"
        if failed or outcome.deferred:
            summary += f" ({len(failed)} refused, {len(outcome.deferred)} deferred)"
        self.support.logger.info("message %s: %s", message.entry_id.hex(), summary)

    async def end_message(self, message: OutboundMessage) -> int:
        """``END_RESEND_LATER`` when some recipients got a 4xx to RCPT, else 0."""
        if message.entry_id in self._resend_later:
            self._resend_later.discard(message.entry_id)
            return int(END_RESEND_LATER)
        return 0

    # -- SPI: notifications, state, logoff ---------------------------------------------

    async def transport_notify(self, flags: int, data: object | None = None) -> None:
        """MRXP bits as the base class does; at ``NOTIFY_END_OUTBOUND_FLUSH`` the idle
        connections are closed with QUIT (one in use is left to its message)."""
        await super().transport_notify(flags, data)
        if flags & NOTIFY_END_OUTBOUND_FLUSH:
            await self._close_idle()

    async def validate_state(self, flags: int) -> None:
        """Connect (EHLO, STARTTLS, AUTH) or check the open connection with NOOP, then set
        ``STATUS_AVAILABLE``, ``STATUS_OFFLINE`` (unreachable or busy) or
        ``STATUS_FAILURE`` (TLS or credentials need fixing), with the reason in
        ``PR_STATUS_STRING``. The connection is kept for the next message. Never raises."""
        connection = await self._acquire()
        try:
            if connection.connected:
                await connection.noop()
                self._show(state=STATUS_AVAILABLE)
            else:
                await self._open(connection)
        except SmtpError as exc:
            self.support.logger.warning("validate_state: %s", exc)
            self._failed(exc)
        finally:
            self._release(connection)

    async def logoff(self, flags: int) -> None:
        """Close every connection: idle ones with QUIT, any still in use at once."""
        await self._close_idle()
        for connection in list(self._busy):
            connection.abort()
        self._busy.clear()
        # A closed asyncio transport releases its socket one loop iteration later; give
        # it that iteration so a caller that stops the loop next leaks no socket.
        await asyncio.sleep(0)

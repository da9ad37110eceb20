"""What the listener does with one SMTP transaction: queue it in the store, durably,
before the reply to the final dot.

The envelope is the truth, as for any MTA: MAIL FROM is the envelope sender (``<>`` stays
the null sender) and RCPT TO are the recipients. A recipient that the message's To or Cc
header names is a To or Cc recipient; any other is blind (Bcc), and Bcc header fields are
removed from the stored message, as ``Session.submit`` does.
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Awaitable, Callable, Sequence
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from ..mapi import (
    MAPI_BCC,
    MAPI_CC,
    MAPI_E_INVALID_PARAMETER,
    MAPI_E_NO_RECIPIENTS,
    MAPI_E_NOT_ENOUGH_DISK,
    MAPI_TO,
    MapiError,
    RecipientType,
)
from ..spi import Recipient
from ..submission import check_address

log = logging.getLogger("mapispool.listener")

#: ``submit(content, recipients, sender) -> entry id``; returns once the message is durable.
Submit = Callable[[bytes, Sequence[Recipient], str], Awaitable[bytes]]


def recipient_rows(content: bytes, envelope_rcpts: Sequence[str]) -> list[Recipient]:
    """The envelope recipients as recipient rows, typed To/Cc/Bcc by the message header."""
    header = BytesHeaderParser(policy=compat32).parsebytes(content, headersonly=True)
    seen: dict[str, RecipientType] = {}
    for field, rtype in (("Cc", MAPI_CC), ("To", MAPI_TO)):  # To wins over Cc
        values = [str(v) for v in header.get_all(field, [])]
        for _name, addr in email.utils.getaddresses(values):
            if addr:
                seen[addr.lower()] = rtype
    return [
        Recipient(address=a, addrtype="SMTP", recipient_type=seen.get(a.lower(), MAPI_BCC))
        for a in envelope_rcpts
    ]


def reply_for(exc: Exception) -> str:
    """The SMTP reply for a submission that failed: 4xx unless retrying cannot help."""
    if isinstance(exc, MapiError):
        if exc.hresult == MAPI_E_NOT_ENOUGH_DISK:
            return "452 4.3.1 the mail queue is full, try again later"
        if exc.hresult in (MAPI_E_INVALID_PARAMETER, MAPI_E_NO_RECIPIENTS):
            return f"554 5.6.0 message refused: {_one_line(exc.message)}"
    return "451 4.3.0 the mail queue is unavailable, try again later"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


class ListenerHandler:
    """aiosmtpd handler: checks addresses at RCPT and queues the message at DATA."""

    def __init__(self, submit: Submit) -> None:
        self._submit = submit

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if address not in ("", "<>"):
            try:
                check_address(address, "sender")
            except MapiError:
                return "553 5.1.7 the sender address is not valid"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        try:
            check_address(address, "recipient")
        except MapiError:
            return "553 5.1.3 the recipient address is not valid"
        if "@" not in address:
            return "553 5.1.3 the recipient needs a domain (user@example.org)"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        sender = envelope.mail_from or ""
        try:
            rows = recipient_rows(content, envelope.rcpt_tos)
            entry_id = await self._submit(content, rows, sender)
        except Exception as exc:  # never 250 unless the message is in the store
            reply = reply_for(exc)
            log.warning("refused a message from %s with %r: %s", session.peer, reply, exc)
            return reply
        return f"250 2.0.0 queued as {entry_id.hex()}"

"""Inbound: the StartMessage loop (spec §4.5, §6.2) and committing received messages."""

from __future__ import annotations

import email.policy
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from typing import TYPE_CHECKING, Any

from ..mapi import (
    PR_INTERNET_MESSAGE_ID,
    PR_MESSAGE_CLASS,
    PR_MESSAGE_DELIVERY_TIME,
    PR_SENDER_EMAIL_ADDRESS,
    PR_SUBJECT,
    MapiError,
)
from ..spi import InboundMessage

if TYPE_CHECKING:
    from .engine import Spooler
    from .logons import LogonHandle

log = logging.getLogger("mapispool.spooler")


def received_props(content: bytes, given: dict[int, Any]) -> dict[int, Any]:
    """The properties stored with a received message: what the transport set, completed
    from the message's headers (subject, sender, Message-ID) and the delivery time."""
    props = dict(given)
    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(content)
    props.setdefault(PR_MESSAGE_CLASS, "IPM.Note")
    try:
        props.setdefault(PR_SUBJECT, str(headers.get("Subject", "")))
        props.setdefault(PR_INTERNET_MESSAGE_ID, str(headers.get("Message-ID", "")))
        sender = headers.get("From")
        if sender is not None and getattr(sender, "addresses", None):
            props.setdefault(PR_SENDER_EMAIL_ADDRESS, sender.addresses[0].addr_spec)
    except Exception:  # malformed headers: the message is still stored, as received
        log.warning("could not read the headers of a received message")
    props.setdefault(PR_MESSAGE_DELIVERY_TIME, datetime.now(UTC))
    return props


class InboundRunner:
    """Runs StartMessage loops and commits what transports save."""

    def __init__(self, spooler: Spooler) -> None:
        self.spooler = spooler

    def new_message(self) -> InboundMessage:
        """A fresh message object in the receive folder, as CreateMessage gives MAPI."""
        store = self.spooler.store

        def save(message: InboundMessage) -> bytes | None:
            content = message.content
            assert content is not None
            return store.deliver(
                "Inbox",
                content,
                received_props(content, message.props),
                dedupe_key=message.dedupe_key,
            )

        return InboundMessage(save, store.has_dedupe_key)

    async def run(
        self,
        handle: LogonHandle,
        keep_going: Callable[[], bool],
        on_message: Callable[[InboundMessage], None] | None = None,
    ) -> tuple[int, str | None]:
        """Call ``start_message`` while ``keep_going()`` and the last call saved a message.

        Returns (messages newly stored, error text or None). A duplicate (dedupe key already
        stored) counts as saved for the loop but not as newly stored."""
        received = 0
        while keep_going():
            message = self.new_message()
            try:
                await handle.call(lambda logon, m=message: logon.start_message(m))  # type: ignore[misc]
            except MapiError as exc:
                log.warning("transport %s failed in start_message: %s", handle.name, exc)
                return received, str(exc)
            except Exception as exc:
                log.exception("transport %s failed in start_message", handle.name)
                return received, str(exc) or type(exc).__name__
            if not message.saved:
                break
            if not message.duplicate:
                received += 1
                self.spooler.newmail(message)
            if on_message is not None:
                on_message(message)
        return received, None

    @staticmethod
    def now() -> float:
        return time.time()

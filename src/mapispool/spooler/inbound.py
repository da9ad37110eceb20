"""Inbound: the StartMessage loop (spec §4.5, §6.2) and committing received messages."""

from __future__ import annotations

import email.policy
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from typing import Any, Protocol

from ..mapi import (
    PR_INTERNET_MESSAGE_ID,
    PR_MESSAGE_CLASS,
    PR_MESSAGE_DELIVERY_TIME,
    PR_SENDER_EMAIL_ADDRESS,
    PR_SUBJECT,
    MapiError,
)
from ..spi import InboundBatch, InboundMessage
from ..store import Delivery, Store
from .bridge import BlockingBridge
from .handles import LogonHandle

log = logging.getLogger("mapispool.spooler")


def received_props(content: bytes, given: dict[int, Any]) -> dict[int, Any]:
    """The properties stored with a received message: what the transport set, completed
    from the message's headers (subject, sender, Message-ID) and the delivery time.

    The values are those of the ``email`` package with ``email.policy.default``; a
    header section of plain ASCII header fields is read directly (``_quick_headers``),
    anything else is parsed by the ``email`` package."""
    props = dict(given)
    props.setdefault(PR_MESSAGE_CLASS, "IPM.Note")
    wanted = (PR_SUBJECT, PR_INTERNET_MESSAGE_ID, PR_SENDER_EMAIL_ADDRESS)
    if any(tag not in props for tag in wanted):
        found: dict[int, Any] = {}
        try:
            if not _quick_headers(content, found):
                _parsed_headers(content, found)
        except Exception:  # malformed headers: the message is still stored, as received
            log.warning("could not read the headers of a received message")
        for tag, value in found.items():
            props.setdefault(tag, value)
    props.setdefault(PR_MESSAGE_DELIVERY_TIME, datetime.now(UTC))
    return props


def _parsed_headers(content: bytes, found: dict[int, Any]) -> None:
    """Subject, Message-ID and sender into ``found``, as the ``email`` package reads
    them; what was read before an error stays in ``found``."""
    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(content)
    found[PR_SUBJECT] = str(headers.get("Subject", ""))
    found[PR_INTERNET_MESSAGE_ID] = str(headers.get("Message-ID", ""))
    sender = headers.get("From")
    if sender is not None and getattr(sender, "addresses", None):
        found[PR_SENDER_EMAIL_ADDRESS] = sender.addresses[0].addr_spec


# The header section ends at the first empty line (or with the content).
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# A header section of well-formed fields only: a name of printable ASCII without ":" right
# before the colon, printable ASCII or tab values, folded lines starting with a blank,
# CRLF or LF line ends. Anything else (8-bit bytes, a bare CR, an mbox From line, a line
# that is not a field) is left to the email package, which has rules for all of it.
_PLAIN_SECTION = re.compile(
    rb"(?:[\x21-\x39\x3b-\x7e]+:[\t\x20-\x7e]*(?:\r?\n[\t ][\t\x20-\x7e]*)*(?:\r?\n|\Z))+\Z"
)
_FIELDS = re.compile(rb"^(subject|message-id|from):([^\n]*(?:\n[\t ][^\n]*)*)", re.I | re.M)
# Values whose email.policy.default reading is the text itself (checked by the tests).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_ADDR_SPEC = rf"({_DOT_ATOM}@{_DOT_ATOM})"
_PLAIN_MESSAGE_ID = re.compile(rf"<{_DOT_ATOM}@{_DOT_ATOM}>")
_PLAIN_FROM = re.compile(
    rf"{_ADDR_SPEC}|(?:{_ATOM}(?: {_ATOM})*|\"[\x20\x21\x23-\x5b\x5d-\x7e]*\") ?<{_ADDR_SPEC}>"
)


def _quick_headers(content: bytes, found: dict[int, Any]) -> bool:
    """What ``_parsed_headers`` gives, read without parsing the message when its header
    section is plain (see ``_PLAIN_SECTION``); False (and nothing read) when it is not."""
    end = _HEADER_END.search(content)
    section = content[: end.start()] if end is not None else content
    if not _PLAIN_SECTION.match(section):
        return False
    values: dict[bytes, str] = {}
    for match in _FIELDS.finditer(section):
        name = match.group(1).lower()
        if name not in values:
            # email.policy.default: blanks before the value go, line ends go (unfolding).
            raw = match.group(2).decode("ascii").lstrip(" \t")
            values[name] = raw.replace("\r", "").replace("\n", "")
    factory = email.policy.default.header_factory
    subject = values.get(b"subject", "")
    found[PR_SUBJECT] = subject if "=?" not in subject else str(factory("Subject", subject))
    mid = values.get(b"message-id", "")
    found[PR_INTERNET_MESSAGE_ID] = (
        mid if not mid or _PLAIN_MESSAGE_ID.fullmatch(mid) else str(factory("Message-ID", mid))
    )
    sender = values.get(b"from")
    if sender is not None:
        plain = _PLAIN_FROM.fullmatch(sender.strip(" \t"))
        if plain is not None:
            found[PR_SENDER_EMAIL_ADDRESS] = plain.group(1) or plain.group(2)
        else:
            header = factory("From", sender)
            if getattr(header, "addresses", None):
                found[PR_SENDER_EMAIL_ADDRESS] = header.addresses[0].addr_spec
    return True


class InboundHost(Protocol):
    """What the inbound runner needs from the spooler."""

    store: Store
    bridge: BlockingBridge

    def newmail(self, message: InboundMessage) -> None: ...


class InboundRunner:
    """Runs StartMessage loops and commits what transports save."""

    def __init__(self, spooler: InboundHost) -> None:
        self.spooler = spooler

    def new_message(self) -> InboundMessage:
        """A fresh message object in the receive folder, as CreateMessage gives MAPI."""
        store, bridge = self.spooler.store, self.spooler.bridge

        def save(message: InboundMessage, durable: bool = True) -> bytes | None:
            content = message.content
            assert content is not None
            item = Delivery(
                "Inbox", content, received_props(content, message.props), message.dedupe_key
            )
            (entry_id,) = bridge.run(lambda: store.deliver([item], durable=durable))
            return entry_id

        def save_unsynced(message: InboundMessage) -> bytes | None:
            return save(message, False)

        def is_known(key: str) -> bool:
            return bridge.run(lambda: store.has_dedupe_key(key))

        return InboundMessage(save, is_known, save_unsynced=save_unsynced)

    def new_batch(self) -> InboundBatch:
        """A fresh batch for ``start_messages``: its ``save`` is one ``Store.deliver``
        (one transaction, dedupe keys included), awaited on the spooler's loop."""
        store = self.spooler.store

        async def save_many(
            messages: Sequence[InboundMessage], durable: bool
        ) -> list[bytes | None]:
            items = []
            for message in messages:
                content = message.content
                assert content is not None
                props = received_props(content, message.props)
                items.append(Delivery("Inbox", content, props, message.dedupe_key))
            return await store.deliver(items, durable=durable)

        return InboundBatch(self.new_message, save_many)

    async def run(
        self,
        handle: LogonHandle,
        keep_going: Callable[[], bool],
        on_message: Callable[[InboundMessage], None] | None = None,
    ) -> tuple[int, str | None]:
        """Call ``start_messages`` (whose default is one ``start_message``) while
        ``keep_going()`` and the last call saved a message.

        Returns (messages newly stored, error text or None). A duplicate (dedupe key already
        stored) counts as saved for the loop but not as newly stored. Whatever the
        transport saved with ``save_changes(sync=False)`` is made durable before this
        returns (the barrier the transport should have called already).

        The loop serves every NOTIFY_NEWMAIL the transport sent before it began, and
        absorbs those it sends while it runs (``handle.receiving``): no second loop
        follows for them.

        On a store that many workers share, one worker at a time reads a transport's
        mailbox (its inbound lane): while another worker holds it, this returns (0, None)."""
        handle.newmail_pending = False
        store = self.spooler.store
        lane = await store.try_lane(f"{handle.name}/inbound")
        if lane is None:
            return 0, None
        handle.receiving = True
        try:
            return await self._run(handle, keep_going, on_message)
        finally:
            handle.receiving = False
            try:
                await store.release_lane(f"{handle.name}/inbound", lane)
            except MapiError as exc:  # the database away: its session ends, the lane too
                log.warning("could not give the inbound lane back: %s", exc)
            try:
                await self.spooler.store.sync()
            except MapiError as exc:
                log.warning("could not make received mail durable: %s", exc)

    async def _run(
        self,
        handle: LogonHandle,
        keep_going: Callable[[], bool],
        on_message: Callable[[InboundMessage], None] | None,
    ) -> tuple[int, str | None]:
        received = 0
        while keep_going():
            batch = self.new_batch()
            try:
                await handle.call(lambda logon, b=batch: logon.start_messages(b))  # type: ignore[misc]
            except MapiError as exc:
                log.warning("transport %s failed in start_message: %s", handle.name, exc)
                received += self._announce(batch, on_message)
                return received, str(exc)
            except Exception as exc:
                log.exception("transport %s failed in start_message", handle.name)
                received += self._announce(batch, on_message)
                return received, str(exc) or type(exc).__name__
            if not batch.saved:
                break
            received += self._announce(batch, on_message)
        return received, None

    def _announce(
        self, batch: InboundBatch, on_message: Callable[[InboundMessage], None] | None
    ) -> int:
        """Announce the batch's saved messages (new mail for the new ones); how many new."""
        new = 0
        for message in batch.saved:
            if not message.duplicate:
                new += 1
                self.spooler.newmail(message)
            if on_message is not None:
                on_message(message)
        return new

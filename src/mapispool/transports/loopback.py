"""The ``loopback`` transport: in-memory, deterministic mail exchange through a shared
"post office" in this process. Two sessions whose loopback transports name the same post
office exchange mail; nothing touches the network.

Settings: ``post_office`` (name of the shared office, default ``"default"``), ``address``
(the mailbox this transport receives for; without it the transport only sends) and
``address_types`` (default ``["SMTP"]``).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..mapi import LOGON_SP_POLL
from ..spi import InboundMessage, OutboundMessage, TransportLogon, TransportProvider

_KNOWN_SETTINGS = {"post_office", "address", "address_types"}


@dataclass
class PostOffice:
    """Mailboxes by lower-cased address, each a FIFO of RFC 5322 messages."""

    name: str
    mailboxes: dict[str, deque[tuple[int, bytes]]] = field(default_factory=dict)
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def deliver(self, address: str, content: bytes) -> None:
        """Put a copy of ``content`` into ``address``'s mailbox."""
        self.mailboxes.setdefault(address.lower(), deque()).append((next(self._serial), content))

    def waiting(self, address: str) -> int:
        return len(self.mailboxes.get(address.lower(), ()))

    def peek(self, address: str) -> tuple[int, bytes] | None:
        box = self.mailboxes.get(address.lower())
        return box[0] if box else None

    def take(self, address: str) -> None:
        self.mailboxes[address.lower()].popleft()

    def messages(self, address: str) -> list[bytes]:
        """The messages waiting for ``address`` (for tests)."""
        return [content for _serial, content in self.mailboxes.get(address.lower(), ())]


_OFFICES: dict[str, PostOffice] = {}


def post_office(name: str = "default") -> PostOffice:
    """The process-wide post office called ``name`` (created on first use)."""
    return _OFFICES.setdefault(name, PostOffice(name))


def reset_post_offices() -> None:
    """Forget every post office (for test isolation)."""
    _OFFICES.clear()


class LoopbackLogon(TransportLogon):
    """Delivers each recipient's copy to the post office; receives from its own mailbox."""

    logon_flags = LOGON_SP_POLL

    def __init__(self, support: Any) -> None:
        super().__init__(support)
        settings = support.settings
        self.office = post_office(str(settings.get("post_office", "default")))
        self.address: str | None = settings.get("address")
        self._types = tuple(settings.get("address_types", ("SMTP",)))

    def address_types(self) -> Sequence[str]:
        return self._types

    async def submit_message(self, message: OutboundMessage, flags: int) -> None:
        content = message.content
        for recipient in message.pending_recipients():
            self.office.deliver(recipient.address, content)
            recipient.responsibility = True

    async def poll(self) -> int:
        return self.office.waiting(self.address) if self.address else 0

    async def start_message(self, message: InboundMessage) -> None:
        if not self.address:
            return
        head = self.office.peek(self.address)
        if head is None:
            return
        serial, content = head
        message.set_content(content)
        message.dedupe_key = f"loopback:{self.office.name}:{self.address.lower()}:{serial}"
        message.save_changes()
        # Only after the commit does the message leave the mailbox (exactly-once).
        self.office.take(self.address)


class LoopbackProvider(TransportProvider):
    """The ``loopback`` provider."""

    logon_class = LoopbackLogon

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        unknown = set(settings) - _KNOWN_SETTINGS
        if unknown:
            raise ValueError(
                f"unknown loopback setting(s) {sorted(unknown)}; known: {sorted(_KNOWN_SETTINGS)}"
            )
        types = settings.get("address_types", ["SMTP"])
        if not isinstance(types, list | tuple) or not all(isinstance(t, str) for t in types):
            raise ValueError('address_types must be a list of strings, e.g. ["SMTP"]')

"""``ImapProvider``: the IXPProvider of the ``imap`` transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...spi import Support, TransportLogon, TransportProvider
from .logon import ImapLogon
from .settings import ImapSettings


class ImapProvider(TransportProvider):
    """Inbound mail from IMAP4rev1 folders (profile ``provider = "imap"``).

    ``check_settings`` validates a profile section (``ValueError`` naming the key and the
    fix); ``transport_logon`` returns an ``ImapLogon`` without connecting: the first
    ``poll``, ``validate_state`` or ``start_message`` connects.
    """

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Validate the section; see the README (Transports, imap) for every key."""
        ImapSettings.parse(settings)

    async def transport_logon(self, support: Support, flags: int) -> TransportLogon:
        """A new ``ImapLogon`` for this section (no network I/O yet)."""
        return ImapLogon(support, ImapSettings.parse(self.settings))

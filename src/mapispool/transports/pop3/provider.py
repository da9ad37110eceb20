"""``Pop3Provider``: the IXPProvider of the ``pop3`` transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...spi import Support, TransportLogon, TransportProvider
from .logon import Pop3Logon
from .settings import Pop3Settings


class Pop3Provider(TransportProvider):
    """Inbound mail from a POP3 maildrop (profile ``provider = "pop3"``).

    ``check_settings`` validates a profile section (``ValueError`` naming the key and the
    fix); ``transport_logon`` returns a ``Pop3Logon`` without connecting.
    """

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Validate the section; see the README (Transports, pop3) for every key."""
        Pop3Settings.parse(settings)

    async def transport_logon(self, support: Support, flags: int) -> TransportLogon:
        """A new ``Pop3Logon`` for this section (no network I/O yet)."""
        return Pop3Logon(support, Pop3Settings.parse(self.settings))

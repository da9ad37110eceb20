"""A transport that discards what it is given, for measuring the engine alone.

Unlike the loopback transport it keeps nothing: it streams each message's content in
pieces (as a real transport should) and takes responsibility for every recipient, so
memory and time measure the spooler and the store, not a post office."""

from __future__ import annotations

from collections.abc import Sequence

from mapispool.spi import OutboundMessage, TransportLogon, TransportProvider

PIECE = 64 * 1024


class DiscardLogon(TransportLogon):
    """Accepts every address type and drops the content."""

    max_in_flight = 1

    def address_types(self) -> Sequence[str]:
        return ["*"]

    async def submit_message(self, message: OutboundMessage, flags: int) -> None:
        with message.open_content() as stream:
            while stream.read(PIECE):
                pass
        for recipient in message.pending_recipients():
            recipient.responsibility = True


class DiscardProvider(TransportProvider):
    """``provider = "bench.sinks:DiscardProvider"``."""

    logon_class = DiscardLogon

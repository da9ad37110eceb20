"""The transport SPI (DESIGN §5): what a transport implements and what the spooler offers it."""

from __future__ import annotations

from .messages import InboundBatch, InboundMessage, OutboundMessage, Recipient
from .provider import (
    FLUSH_FLAG_TO_STATUS_BIT,
    Support,
    TransportLogon,
    TransportProvider,
    flush_bits_for,
    flush_flags_for,
)

__all__ = [
    "FLUSH_FLAG_TO_STATUS_BIT",
    "InboundBatch",
    "InboundMessage",
    "OutboundMessage",
    "Recipient",
    "Support",
    "TransportLogon",
    "TransportProvider",
    "flush_bits_for",
    "flush_flags_for",
]

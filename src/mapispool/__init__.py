"""mapispool: the MAPI spooler in Python.

A durable outgoing queue, pluggable transport providers and MAPI's queue-flushing
protocol (Send/Receive). Start with ``Session.logon(profile)``.
"""

from __future__ import annotations

from .daemon.attached import install as _install_client_mode
from .mapi import MapiError
from .profile import Profile, ProfileError
from .session import AsyncSession, AsyncStatus, FlushHandle, Session, Status
from .spi import (
    InboundMessage,
    OutboundMessage,
    Recipient,
    Support,
    TransportLogon,
    TransportProvider,
)
from .spooler.flush import FlushProgress, FlushResult, TransportFlushResult
from .status_changes import StatusChange
from .store import QueueEntry, QueueState, StoredMessage

# Session.logon beside a running ``mapispool serve`` becomes its client (the session
# package does not import the daemon; the daemon plugs its client mode in).
_install_client_mode()

__version__ = "0.1.0"

__all__ = [
    "AsyncSession",
    "AsyncStatus",
    "FlushHandle",
    "FlushProgress",
    "FlushResult",
    "InboundMessage",
    "MapiError",
    "OutboundMessage",
    "Profile",
    "ProfileError",
    "QueueEntry",
    "QueueState",
    "Recipient",
    "Session",
    "Status",
    "StatusChange",
    "StoredMessage",
    "Support",
    "TransportFlushResult",
    "TransportLogon",
    "TransportProvider",
    "__version__",
]

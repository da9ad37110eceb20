"""mapispool: the MAPI spooler in Python.

A durable outgoing queue, pluggable transport providers and MAPI's queue-flushing
protocol (Send/Receive). Start with ``Session.logon(profile)``.

The names below are imported on first use (PEP 562), so that a process that needs one
small part (``mapispool-sendmail`` queueing one message) does not pay for the rest.
Taking a session name from here (``mapispool.Session``, ``mapispool.AsyncSession``...)
also plugs in the client mode of ``mapispool serve`` (``daemon.attached``): ``logon``
beside a running daemon becomes its client. The session package does not import the
daemon; code that imports ``mapispool.session`` directly and wants the client mode calls
``mapispool.daemon.attached.install()``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: importing this
if TYPE_CHECKING:  # package stays cheap for mapispool-sendmail's client
    from typing import Any

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

__version__ = "0.1.0"

#: Where each public name lives.
_EXPORTS = {
    "AsyncSession": ".session",
    "AsyncStatus": ".session",
    "FlushHandle": ".session",
    "FlushProgress": ".spooler.flush",
    "FlushResult": ".spooler.flush",
    "InboundMessage": ".spi",
    "MapiError": ".mapi",
    "OutboundMessage": ".spi",
    "Profile": ".profile",
    "ProfileError": ".profile",
    "QueueEntry": ".store",
    "QueueState": ".store",
    "Recipient": ".spi",
    "Session": ".session",
    "Status": ".session",
    "StatusChange": ".status_changes",
    "StoredMessage": ".store",
    "Support": ".spi",
    "TransportFlushResult": ".spooler.flush",
    "TransportLogon": ".spi",
    "TransportProvider": ".spi",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mapispool' has no attribute {name!r}")
    import importlib  # here: a process that takes no name from here never pays for it

    value = getattr(importlib.import_module(module, __name__), name)
    if module == ".session":
        # Session.logon beside a running ``mapispool serve`` becomes its client.
        from .daemon.attached import install

        install()
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

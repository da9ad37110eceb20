"""The client side of mapispool (DESIGN §6): ``AsyncSession`` and its synchronous façade
``Session``, the status objects (IMAPIStatus) and the folders.

``async_session`` is the implementation; ``sync`` runs it on an event loop in a background
thread. The session talks to the store through the ``Store`` interface and to the spooler
through the spooler's public methods; it imports nothing above itself (``app``,
``daemon``, ``cli``): the client of ``mapispool serve`` plugs in through
``register_client_mode``.
"""

from __future__ import annotations

from .async_session import AsyncSession, ClientMode, all_entries, register_client_mode
from .folder import AsyncFolder
from .profiles import default_profile_path, load_profile
from .status import AsyncFlushHandle, AsyncStatus
from .sync import FlushHandle, Folder, Session, Status

__all__ = [
    "AsyncFlushHandle",
    "AsyncFolder",
    "AsyncSession",
    "AsyncStatus",
    "ClientMode",
    "FlushHandle",
    "Folder",
    "Session",
    "Status",
    "all_entries",
    "default_profile_path",
    "load_profile",
    "register_client_mode",
]

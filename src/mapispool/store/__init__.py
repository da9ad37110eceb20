"""The message store (DESIGN §7): folders, the outgoing queue and its state machine,
dedupe keys, events and status rows. ``Store`` (``base.py``) is the interface; SQLite
(WAL, ``sqlite/``) is the embedded default implementation."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .base import FOLDERS, INLINE_LIMIT, PAGE, QueuePosition, Store
from .model import (
    DUE_STATES,
    FINISHED_STATES,
    TRANSITIONS,
    Event,
    InvalidTransition,
    QueueEntry,
    QueueState,
    Recipient,
    StaleClaim,
    StoredMessage,
)
from .types import (
    Claim,
    Delivery,
    Note,
    Outcome,
    QueueAction,
    RecipientOutcome,
    Recorded,
    Report,
    Route,
    TransportList,
    order_by_sender,
    sender_matches,
)

if TYPE_CHECKING:
    from .sqlite import SqliteStore, new_entry_id


def __getattr__(name: str) -> Any:
    """``SqliteStore`` and ``new_entry_id`` are imported on first use (PEP 562): the
    SQLite store's async machinery (threads, asyncio) is not needed by a process that
    only writes one submission with ``sqlite.writes`` (``mapispool-sendmail``)."""
    if name in ("SqliteStore", "new_entry_id"):
        from . import sqlite

        value = getattr(sqlite, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mapispool.store' has no attribute {name!r}")


async def open_store(location: str | os.PathLike[str]) -> Store:
    """Open the store a profile names: a path or ``sqlite://`` URL (SQLite), or a
    ``postgresql://`` URL (the PostgreSQL store, for many workers)."""
    text = os.fspath(location)
    if text.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]

        store: Store = await PostgresStore.open(text)
        return store
    from .sqlite import SqliteStore

    return await SqliteStore.open(text)


__all__ = [
    "DUE_STATES",
    "FINISHED_STATES",
    "FOLDERS",
    "INLINE_LIMIT",
    "PAGE",
    "TRANSITIONS",
    "Claim",
    "Delivery",
    "Event",
    "InvalidTransition",
    "Note",
    "Outcome",
    "QueueAction",
    "QueueEntry",
    "QueuePosition",
    "QueueState",
    "Recipient",
    "RecipientOutcome",
    "Recorded",
    "Report",
    "Route",
    "SqliteStore",
    "StaleClaim",
    "Store",
    "StoredMessage",
    "TransportList",
    "new_entry_id",
    "open_store",
    "order_by_sender",
    "sender_matches",
]

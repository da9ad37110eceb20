"""The message store (DESIGN §7): folders, the outgoing queue and its state machine,
dedupe keys, events and status rows. ``Store`` (``base.py``) is the interface; SQLite
(WAL, ``sqlite/``) is the embedded default implementation."""

from __future__ import annotations

import os

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
from .sqlite import SqliteStore, new_entry_id
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
)


async def open_store(location: str | os.PathLike[str]) -> Store:
    """Open the store a profile names: a path or ``sqlite://`` URL (SQLite), or a
    ``postgresql://`` URL (the PostgreSQL store, for many workers)."""
    text = os.fspath(location)
    if text.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]

        store: Store = await PostgresStore.open(text)
        return store
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
    "new_entry_id",
    "open_store",
]

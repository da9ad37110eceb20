"""The message store (DESIGN §7): folders, the outgoing queue and its state machine,
dedupe keys, events and status rows. SQLite (WAL) is the embedded default."""

from __future__ import annotations

from .model import (
    DUE_STATES,
    FINISHED_STATES,
    TRANSITIONS,
    Event,
    InvalidTransition,
    QueueEntry,
    QueueState,
    StoredMessage,
)
from .sqlite import FOLDERS, SqliteStore, Store, new_entry_id

__all__ = [
    "DUE_STATES",
    "FINISHED_STATES",
    "FOLDERS",
    "TRANSITIONS",
    "Event",
    "InvalidTransition",
    "QueueEntry",
    "QueueState",
    "SqliteStore",
    "Store",
    "StoredMessage",
    "new_entry_id",
]

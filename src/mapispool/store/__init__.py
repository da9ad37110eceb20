"""The message store (DESIGN §7): folders, the outgoing queue and its state machine,
dedupe keys, events and status rows. ``Store`` (``base.py``) is the interface; SQLite
(WAL, ``sqlite/``) is the embedded default implementation."""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import (
        FOLDERS,
        INLINE_LIMIT,
        PAGE,
        QueuePosition,
        Store,
    )
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
    from .sqlite import (
        SqliteStore,
        new_entry_id,
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

#: Where each name lives. They are imported on first use (PEP 562): a process that only
#: writes one submission (``mapispool-sendmail``, through ``sqlite.writes``) needs neither
#: the ``Store`` interface nor the SQLite store's async machinery (threads, asyncio).
_EXPORTS = {
    "FOLDERS": ".base",
    "INLINE_LIMIT": ".base",
    "PAGE": ".base",
    "QueuePosition": ".base",
    "Store": ".base",
    "DUE_STATES": ".model",
    "FINISHED_STATES": ".model",
    "TRANSITIONS": ".model",
    "Event": ".model",
    "InvalidTransition": ".model",
    "QueueEntry": ".model",
    "QueueState": ".model",
    "Recipient": ".model",
    "StaleClaim": ".model",
    "StoredMessage": ".model",
    "SqliteStore": ".sqlite",
    "new_entry_id": ".sqlite",
    "Claim": ".types",
    "Delivery": ".types",
    "Note": ".types",
    "Outcome": ".types",
    "QueueAction": ".types",
    "RecipientOutcome": ".types",
    "Recorded": ".types",
    "Report": ".types",
    "Route": ".types",
    "TransportList": ".types",
    "order_by_sender": ".types",
    "sender_matches": ".types",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mapispool.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


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

"""The SQLite store (DESIGN §7): the embedded default, one file in WAL mode; its queries
in ``queries.sql`` and its numbered migrations in ``migrations/``.

``SqliteStore`` is imported on first use (PEP 562), so that ``writes.submit`` (the one
implementation of a submission's rows, which ``mapispool-sendmail`` runs without an
event loop) can be imported without the store's threads and asyncio."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .writes import new_entry_id

if TYPE_CHECKING:
    from .store import SqliteStore

__all__ = ["SqliteStore", "new_entry_id"]


def __getattr__(name: str) -> Any:
    if name == "SqliteStore":
        from .store import SqliteStore

        globals()[name] = SqliteStore
        return SqliteStore
    raise AttributeError(f"module 'mapispool.store.sqlite' has no attribute {name!r}")

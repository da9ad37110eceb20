"""The SQLite store (DESIGN §7): the embedded default, one file in WAL mode; its queries
in ``queries.sql`` and its numbered migrations in ``migrations/``."""

from __future__ import annotations

from .store import SqliteStore
from .writes import new_entry_id

__all__ = ["SqliteStore", "new_entry_id"]

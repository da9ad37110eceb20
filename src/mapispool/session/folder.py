"""``AsyncFolder``: one folder of the store, read through the Store interface."""

from __future__ import annotations

from ..store import PAGE, Store, StoredMessage


class AsyncFolder:
    """A folder of the store (Outbox, Inbox, Sent Items, Deleted Items)."""

    def __init__(self, store: Store, name: str) -> None:
        store.folder_entry_id(name)  # raises MAPI_E_NOT_FOUND for unknown names
        self._store = store
        self.name = name

    async def messages(self) -> list[StoredMessage]:
        """Every message in the folder, oldest first (read from the store page by page)."""
        found: list[StoredMessage] = []
        while True:
            page = await self._store.messages(self.name, after=found[-1].seq if found else None)
            found += page
            if len(page) < PAGE:
                return found

    async def count(self) -> int:
        return await self._store.message_count(self.name)

    @property
    def entry_id(self) -> bytes:
        return self._store.folder_entry_id(self.name)

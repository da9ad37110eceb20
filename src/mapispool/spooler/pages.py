"""Reading a part of the queue page by page, so that no caller holds more than one page
of entries however long the queue is."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..store import QueueEntry, QueuePosition, Store


async def parked_pages(store: Store, transport: str) -> AsyncIterator[list[QueueEntry]]:
    """Every message ``transport`` parked, a page at a time, in submit order."""
    after: QueuePosition | None = None
    while page := await store.parked_entries(transport, after=after):
        yield page
        after = (page[-1].submit_time, page[-1].seq)


async def parked_ids(store: Store, transport: str) -> set[bytes]:
    """The entry ids of every message ``transport`` parked."""
    return {e.entry_id async for page in parked_pages(store, transport) for e in page}

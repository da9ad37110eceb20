"""Reading a part of the queue page by page, so that no caller holds more than one page
of entries however long the queue is; and what a flush's claims skip, kept so that it
does not grow with the messages sent."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Collection, Iterator

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


class Exclusions(Collection[bytes]):
    """The entry ids a claim must skip: the union of ``parts``, read where they are, not
    copied (a flush's offered messages can be many, and a claim is made for every
    page). A part must not change while a claim reads it (the store may read it on its
    own thread): pass a snapshot of anything another task changes meanwhile."""

    def __init__(self, *parts: Collection[bytes]) -> None:
        self._parts = parts

    def __contains__(self, entry_id: object) -> bool:
        return any(entry_id in part for part in self._parts)

    def __iter__(self) -> Iterator[bytes]:
        """Every id of every part (an id in two parts comes twice: harmless to skip)."""
        return itertools.chain.from_iterable(self._parts)

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts)


class OfferedInFlush(Collection[bytes]):
    """The messages offered to one transport in one flush that could come due again in
    it (retried, declined, parked and released, handed over with recipients left, or
    not known to have finished): the flush must not offer them to it twice. A message
    the offer finished (``Offered.finished``) is counted, not kept: it can never be
    offered again, so the flush's memory grows with the messages still waiting, not
    with those sent. ``peak`` is the most ids kept at once."""

    def __init__(self) -> None:
        self._waiting: set[bytes] = set()
        self.offered = 0
        self.peak = 0

    def add(self, entry_id: bytes, *, finished: bool) -> None:
        self.offered += 1
        if not finished:
            self._waiting.add(entry_id)
            self.peak = max(self.peak, len(self._waiting))

    def close(self) -> None:
        """The transport's outbound phase ended: forget the ids (the counts stay)."""
        self._waiting = set()

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._waiting

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._waiting)

    def __len__(self) -> int:
        return len(self._waiting)

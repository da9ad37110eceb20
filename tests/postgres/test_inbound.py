"""Inbound across workers on PostgreSQL: a dedupe key is stored once, with its message,
however many workers deliver the same mail at the same time (exactly-once)."""

from __future__ import annotations

import asyncio

from mapispool.store.postgres import PostgresStore
from mapispool.store.types import Delivery


async def test_two_workers_delivering_the_same_batch_store_each_message_once(
    pg: PostgresStore, pg2: PostgresStore
) -> None:
    """Both deliver keys 0..39 at once (in opposite orders): every key's message is
    stored exactly once, and the two answers split the keys between them."""
    keys = [f"imap:1:{i}" for i in range(40)]

    def batch(order: list[str]) -> list[Delivery]:
        return [Delivery("Inbox", f"Subject: {k}\r\n\r\n".encode(), dedupe_key=k) for k in order]

    first, second = await asyncio.gather(
        pg.deliver(batch(keys)), pg2.deliver(batch(list(reversed(keys))))
    )
    stored_by_first = {k for k, e in zip(keys, first, strict=True) if e is not None}
    stored_by_second = {k for k, e in zip(reversed(keys), second, strict=True) if e is not None}
    assert stored_by_first | stored_by_second == set(keys)
    assert not stored_by_first & stored_by_second
    assert await pg.message_count("Inbox") == len(keys)
    assert await pg.known_dedupe_keys(keys) == set(keys)

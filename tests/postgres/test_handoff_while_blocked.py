"""The hand-over mark is written from the spooler's bridge thread while the worker's own
event loop is blocked waiting for it (``OutboundWork._handoff``). Nothing that loop has in
progress may then hold a lock the mark needs, or the worker stalls for good."""

from __future__ import annotations

import asyncio
import time

from mapispool.spooler.bridge import BlockingBridge
from mapispool.store.model import QueueState, Recipient
from mapispool.store.postgres import PostgresStore
from mapispool.store.types import Route

ROUTE = Route("smtp", (("smtp", ("SMTP",)),))


async def test_a_hand_over_mark_never_waits_for_the_blocked_loops_heartbeat(
    pg: PostgresStore,
) -> None:
    """At every point of a heartbeat (which renews the worker's claims), block the loop
    on a hand-over mark of a claimed message, as the spooler does: the mark must not wait
    for the heartbeat's renewal, whose commit the blocked loop could never send."""
    now = time.time()
    entry_id = await pg.submit(
        b"Subject: x\r\n\r\nbody\r\n", {}, [Recipient("r@example.test")],
        submit_time=now, not_before=None, expires_at=now + 3600,
    )  # fmt: skip
    assert await pg.acquire_spooler_lock("beater")
    (claim,) = await pg.claim(ROUTE, now=now)
    bridge = BlockingBridge()
    blocked = 0
    try:
        beat = asyncio.create_task(pg.heartbeat())
        while not beat.done():
            # Blocks this loop, as the transport's on_handoff callback does.
            bridge.run(lambda: asyncio.wait_for(pg.mark_handoff(entry_id, claim.token, True), 5))
            blocked += 1
            await asyncio.sleep(0)
        await beat
    finally:
        bridge.close()
    assert blocked > 1, "the heartbeat ended before the loop was blocked inside it"
    assert (await pg.queue_entry(entry_id)).state is QueueState.IN_FLIGHT

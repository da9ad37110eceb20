"""Claims across workers on the PostgreSQL store: SKIP LOCKED, leases, fencing tokens,
the repair of a dead worker's claims (DESIGN §9)."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from mapispool.store.model import QueueState, Recipient, StaleClaim
from mapispool.store.postgres import PostgresStore
from mapispool.store.types import Outcome, Route
from tests.servers.postgres import PgStoreLocation

ROUTE = Route("smtp", (("smtp", ("SMTP",)),))


async def submit(store: PostgresStore, n: int) -> list[bytes]:
    now = time.time()
    return [
        await store.submit(
            f"Subject: {i}\r\n\r\nbody\r\n".encode(),
            {},
            [Recipient(f"r{i}@example.test")],
            submit_time=now + i * 1e-3,
            not_before=None,
            expires_at=now + 3600,
        )
        for i in range(n)
    ]


async def test_two_workers_claiming_at_once_never_share_a_message(
    pg: PostgresStore, pg2: PostgresStore
) -> None:
    """Concurrent claims from two connections split the queue: every message is claimed
    exactly once, in submit order within each worker's pages."""
    ids = await submit(pg, 60)
    first: list[bytes] = []
    second: list[bytes] = []

    async def drain(store: PostgresStore, into: list[bytes], worker: str) -> None:
        while claims := await store.claim(ROUTE, now=time.time(), limit=5, worker=worker):
            into.extend(c.entry_id for c in claims)
            await asyncio.sleep(0)

    await asyncio.gather(drain(pg, first, "a"), drain(pg2, second, "b"))
    assert sorted(first + second) == sorted(ids)
    assert not set(first) & set(second)
    order = {e: i for i, e in enumerate(ids)}
    assert [order[e] for e in first] == sorted(order[e] for e in first)


async def test_a_claim_skips_rows_another_transaction_has_locked(
    pg: PostgresStore, pg_store: PgStoreLocation
) -> None:
    """SKIP LOCKED: a row locked by another session (a worker mid-claim) is passed over,
    not waited for; the claim returns the rest at once."""
    first, second = await submit(pg, 2)
    other = await psycopg.AsyncConnection.connect(pg_store.url)
    async with other, other.transaction():
        await other.execute(f'SET LOCAL search_path TO "{pg_store.schema}"')
        await other.execute(
            "SELECT 1 FROM queue q JOIN messages m ON m.id = q.message_id"
            " WHERE m.entry_id = %s FOR UPDATE OF q",
            (first,),
        )
        claims = await asyncio.wait_for(pg.claim(ROUTE, now=time.time()), 30)
        assert [c.entry_id for c in claims] == [second]
    assert [c.entry_id for c in await pg.claim(ROUTE, now=time.time())] == [first]


async def test_a_late_write_of_a_fenced_off_worker_is_refused(
    pg: PostgresStore, pg2: PostgresStore
) -> None:
    """A worker whose lease ran out (a zombie) is fenced off: once its claim was repaired
    and claimed again elsewhere, its hand-over mark and its outcome are refused with
    StaleClaim and change nothing; the new claim's outcome is recorded."""
    (entry_id,) = await submit(pg, 1)
    (zombie,) = await pg.claim(ROUTE, now=time.time(), lease=0.01, worker="zombie")
    await asyncio.sleep(0.05)
    counts = await pg2.recover(parked=False, now=time.time())
    assert counts == {"requeued": 1, "uncertain": 0, "unparked": 0}
    (fresh,) = await pg2.claim(ROUTE, now=time.time(), worker="alive")
    assert fresh.token != zombie.token
    with pytest.raises(StaleClaim):
        await pg.mark_handoff(entry_id, zombie.token, True)
    (late,) = await pg.record([Outcome(entry_id, QueueState.SENT, token=zombie.token,
                                       folder="Sent Items")])  # fmt: skip
    assert isinstance(late.error, StaleClaim)
    assert (await pg.queue_entry(entry_id)).state is QueueState.IN_FLIGHT
    assert await pg.renew([zombie], 30) == [entry_id]
    (done,) = await pg2.record([Outcome(entry_id, QueueState.SENT, token=fresh.token,
                                        folder="Sent Items")])  # fmt: skip
    assert done.error is None
    assert (await pg.queue_entry(entry_id)).state is QueueState.SENT


async def test_an_expired_claim_whose_handover_began_becomes_uncertain(
    pg: PostgresStore,
) -> None:
    """A dead worker's claim: back to the queue if the hand-over had not begun, uncertain
    if it had (never resent silently); a live lease is left alone."""
    sent_half, untouched, alive = await submit(pg, 3)
    claims = await pg.claim(ROUTE, now=time.time(), limit=2, lease=0.01, worker="dead")
    assert [c.entry_id for c in claims] == [sent_half, untouched]
    await pg.mark_handoff(sent_half, claims[0].token, True)
    (live,) = await pg.claim(ROUTE, now=time.time(), lease=300, worker="alive")
    await asyncio.sleep(0.05)
    counts = await pg.recover(parked=False, now=time.time())
    assert counts == {"requeued": 1, "uncertain": 1, "unparked": 0}
    assert (await pg.queue_entry(sent_half)).state is QueueState.UNCERTAIN
    assert (await pg.queue_entry(untouched)).state is QueueState.QUEUED
    assert (await pg.queue_entry(alive)).state is QueueState.IN_FLIGHT
    assert live.entry_id == alive


async def test_the_heartbeat_renews_the_workers_claims(pg: PostgresStore) -> None:
    """A live worker's heartbeat extends its claims' leases, so a slow send is never
    taken away from it; the heartbeat's own repair pass leaves them alone."""
    (entry_id,) = await submit(pg, 1)
    assert await pg.acquire_spooler_lock("beater")
    (claim,) = await pg.claim(ROUTE, now=time.time(), lease=0.5)
    await asyncio.sleep(0.3)
    await pg.heartbeat()
    await asyncio.sleep(0.3)
    await pg.heartbeat()
    assert (await pg.queue_entry(entry_id)).state is QueueState.IN_FLIGHT
    (done,) = await pg.record([Outcome(entry_id, QueueState.SENT, token=claim.token,
                                       folder="Sent Items")])  # fmt: skip
    assert done.error is None


async def test_recover_without_a_time_spares_live_workers_claims(
    pg: PostgresStore, pg2: PostgresStore
) -> None:
    """A worker starting up (recover() with no time) repairs its own and dead workers'
    claims, never those of a live worker in mid-send."""
    mine, theirs = await submit(pg, 2)
    assert await pg.acquire_spooler_lock("starting")
    assert await pg2.acquire_spooler_lock("busy")
    await pg.claim(ROUTE, now=time.time(), limit=1, worker="starting")
    await pg2.claim(ROUTE, now=time.time(), limit=1, worker="busy")
    assert (await pg.recover())["requeued"] == 1
    assert (await pg.queue_entry(mine)).state is QueueState.QUEUED
    assert (await pg.queue_entry(theirs)).state is QueueState.IN_FLIGHT


async def test_a_messages_later_outcomes_in_a_batch_are_refused_after_its_first_refusal(
    pg: PostgresStore,
) -> None:
    """record applies a message's outcomes in order and none after its first refusal;
    other messages in the batch are applied all the same."""
    first, second = await submit(pg, 2)
    claims = await pg.claim(ROUTE, now=time.time(), limit=2)
    tokens = {c.entry_id: c.token for c in claims}
    results = await pg.record(
        [
            Outcome(first, QueueState.SENT, token=tokens[first] + 1000, folder="Sent Items"),
            Outcome(first, QueueState.QUEUED),
            Outcome(second, QueueState.SENT, token=tokens[second], folder="Sent Items"),
        ]
    )
    assert isinstance(results[0].error, StaleClaim)
    assert results[1].error is not None
    assert results[2].error is None
    assert (await pg.queue_entry(first)).state is QueueState.IN_FLIGHT
    assert (await pg.queue_entry(second)).state is QueueState.SENT


async def test_notes_for_a_message_outside_the_queue_are_recorded(pg: PostgresStore) -> None:
    """An outcome with only notes may concern a message that has no queue entry (a
    received one); one that changes a state may not."""
    from mapispool.store.types import Delivery, Note

    (inbound,) = await pg.deliver([Delivery("Inbox", b"Subject: in\r\n\r\n")])
    assert inbound is not None
    ok, refused = await pg.record(
        [Outcome(inbound, notes=[Note("read")]), Outcome(inbound, QueueState.SENT)]
    )
    assert ok.error is None
    assert refused.error is not None
    assert [e.kind for e in await pg.events(inbound)] == ["received", "read"]

"""The Store interface's batch operations on the SQLite store: claiming pages under a
fencing token, recording many outcomes in one transaction (each refused outcome alone),
delivering an inbound batch with its dedupe keys, and waking ``wait_for_work``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mapispool.mapi import PR_SUBJECT
from mapispool.store import (
    Delivery,
    InvalidTransition,
    Outcome,
    QueueState,
    RecipientOutcome,
    Route,
    SqliteStore,
    StaleClaim,
    Store,
)
from mapispool.store.model import Recipient

SMTP_ONLY = Route("smtp", (("smtp", ("SMTP",)),))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = SqliteStore(tmp_path / "store.db")
    yield s
    await s.close()


async def submit(
    store: Store, subject: str, *, addrtype: str = "SMTP", when: float | None = None
) -> bytes:
    now = time.time() if when is None else when
    return await store.submit(
        b"Subject: " + subject.encode() + b"\r\n\r\nbody\r\n",
        {PR_SUBJECT: subject},
        [Recipient("bob@example.test", addrtype=addrtype)],
        submit_time=now,
        not_before=None,
        expires_at=now + 3600,
    )


async def test_claim_takes_a_page_in_submit_order_with_everything_a_transport_needs(
    store: Store,
) -> None:
    ids = [await submit(store, f"m{n}", when=100.0 + n) for n in range(5)]
    first = await store.claim(SMTP_ONLY, now=time.time(), limit=3)
    assert [c.entry_id for c in first] == ids[:3]
    claim = first[0]
    assert claim.content == b"Subject: m0\r\n\r\nbody\r\n"
    assert [r.address for r in claim.recipients] == ["bob@example.test"]
    assert claim.props[PR_SUBJECT] == "m0"
    assert claim.entry.attempts == 1
    assert len({c.token for c in first}) == 3
    assert (await store.queue_entry(ids[0])).state is QueueState.IN_FLIGHT
    second = await store.claim(SMTP_ONLY, now=time.time(), limit=3)
    assert [c.entry_id for c in second] == ids[3:]
    assert await store.claim(SMTP_ONLY, now=time.time()) == []


async def test_claim_follows_the_route_exclude_and_submitted_before(store: Store) -> None:
    x400 = await submit(store, "x400", addrtype="X400", when=100.0)
    early = await submit(store, "early", when=101.0)
    skipped = await submit(store, "skipped", when=102.0)
    await submit(store, "late", when=200.0)
    claims = await store.claim(
        SMTP_ONLY, now=time.time(), exclude={skipped}, submitted_before=150.0
    )
    assert [c.entry_id for c in claims] == [early]
    assert (await store.queue_entry(x400)).state is QueueState.QUEUED


async def test_release_puts_claims_back_and_ends_their_tokens(store: Store) -> None:
    entry_id = await submit(store, "m")
    (claim,) = await store.claim(SMTP_ONLY, now=time.time())
    await store.release([claim])
    entry = await store.queue_entry(entry_id)
    assert (entry.state, entry.attempts) == (QueueState.QUEUED, 0)
    with pytest.raises(StaleClaim):
        await store.mark_handoff(entry_id, claim.token, True)
    (again,) = await store.claim(SMTP_ONLY, now=time.time())
    assert again.token > claim.token


async def test_a_stale_token_is_refused_and_writes_nothing(store: Store) -> None:
    entry_id = await submit(store, "m")
    (claim,) = await store.claim(SMTP_ONLY, now=time.time())
    await store.recover()  # the claim ends (a restart, or a dead worker's lease)
    (recorded,) = await store.record(
        [Outcome(entry_id, QueueState.SENT, token=claim.token, folder="Sent Items")]
    )
    assert isinstance(recorded.error, StaleClaim)
    assert (await store.queue_entry(entry_id)).state is QueueState.QUEUED


async def test_record_applies_many_outcomes_and_refuses_each_bad_one_alone(
    store: Store,
) -> None:
    good, bad = await submit(store, "good"), await submit(store, "bad")
    delivered = RecipientOutcome((0,), "delivered", "smtp")
    results = await store.record(
        [
            Outcome(good, QueueState.IN_FLIGHT),
            Outcome(bad, QueueState.SENT, folder="Sent Items"),  # queued -> sent is legal
            Outcome(bad, QueueState.PARKED),  # sent -> parked is not
            Outcome(good, recipient_outcomes=[delivered]),
            Outcome(good, QueueState.SENT, folder="Sent Items"),
        ]
    )
    assert [r.error is None for r in results] == [True, True, False, True, True]
    assert isinstance(results[2].error, InvalidTransition)
    assert (await store.queue_entry(good)).state is QueueState.SENT
    assert (await store.message(good)).folder == "Sent Items"
    assert [o for _r, o, _t, _s in await store.recipient_outcomes(good)] == ["delivered"]


async def test_after_a_refused_outcome_the_same_messages_later_ones_are_refused(
    store: Store,
) -> None:
    entry_id = await submit(store, "m")
    results = await store.record(
        [
            Outcome(entry_id, QueueState.PARKED),  # queued -> parked is not allowed
            Outcome(entry_id, QueueState.SENT, folder="Sent Items"),
        ]
    )
    assert isinstance(results[0].error, InvalidTransition)
    assert results[1].error is not None
    assert (await store.queue_entry(entry_id)).state is QueueState.QUEUED


async def test_concurrent_records_all_commit(store: Store) -> None:
    ids = [await submit(store, f"m{n}") for n in range(40)]
    await asyncio.gather(
        *(store.record_one(Outcome(e, QueueState.HELD, event="held")) for e in ids)
    )
    assert await store.count_by_state() == {QueueState.HELD: 40}


async def test_deliver_stores_a_batch_and_skips_known_keys_even_within_it(
    store: Store,
) -> None:
    (first,) = await store.deliver([Delivery("Inbox", b"a\r\n", {}, dedupe_key="k1")])
    results = await store.deliver(
        [
            Delivery("Inbox", b"a\r\n", {}, dedupe_key="k1"),
            Delivery("Inbox", b"b\r\n", {}, dedupe_key="k2"),
            Delivery("Inbox", b"b\r\n", {}, dedupe_key="k2"),
            Delivery("Inbox", b"c\r\n", {}),
        ],
        durable=False,
    )
    await store.sync()
    assert first is not None
    assert [r is not None for r in results] == [False, True, False, True]
    assert await store.message_count("Inbox") == 3
    assert await store.known_dedupe_keys(["k1", "k2", "k3"]) == {"k1", "k2"}


async def test_wait_for_work_wakes_on_submit_and_returns_at_the_deadline(
    store: Store,
) -> None:
    assert await store.wait_for_work(time.time() + 0.05) is False
    waiter = asyncio.ensure_future(store.wait_for_work(None))
    await asyncio.sleep(0)
    await submit(store, "m")
    assert await asyncio.wait_for(waiter, 30) is True


async def test_sentdeferred_for_all_releases_more_parked_messages_than_a_page(
    tmp_path: Path,
) -> None:
    """NOTIFY_SENTDEFERRED(None) releases every message the transport holds, not only
    the first page of them (the queue is read in pages of PAGE)."""
    from mapispool.mapi import FLUSH_UPLOAD
    from mapispool.profile import Profile
    from mapispool.session import AsyncSession
    from mapispool.store import PAGE
    from mapispool.testing import Defer, TransportScript
    from tests.conformance.conftest import message

    count = PAGE + 3
    script = TransportScript()
    for n in range(count):
        script.on(f"m{n}", Defer(release_on_flush=False))
    profile = Profile.from_dict(
        {
            "store": str(tmp_path / "s.db"),
            "send_immediately": False,
            "transports": {"a": {"provider": "recording", "script": script}},
        }
    )
    session = await AsyncSession.logon(profile)
    try:
        for n in range(count):
            await session.submit(message(f"m{n}"))
        await session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert (await session.store.count_by_state()) == {QueueState.PARKED: count}
        script.release_deferred(None)
        await session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert (await session.store.count_by_state()) == {QueueState.SENT: count}
    finally:
        await session.logoff()

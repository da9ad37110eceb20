"""Store contract: submit, submit order, and the queue queries, which page and never
return the whole queue unasked."""

from __future__ import annotations

import time

import pytest

from mapispool.mapi import MAPI_E_NOT_FOUND, PR_SUBJECT, MapiError
from mapispool.store.model import QueueState, Recipient

from .support import SMTP, claim_all, content, submit, submit_many


async def test_submit_files_the_message_in_the_outbox_with_a_queued_entry(store):
    now = time.time()
    rcpts = [Recipient("bob@example.test"), Recipient("carol@example.test")]
    entry_id = await submit(store, "hello", at=now, recipients=rcpts)

    entry = await store.queue_entry(entry_id)
    assert entry.state is QueueState.QUEUED
    assert entry.subject == "hello"
    assert entry.recipients == ("SMTP:bob@example.test", "SMTP:carol@example.test")
    assert entry.attempts == 0
    assert entry.expires_at == pytest.approx(now + 3600)
    stored = await store.message(entry_id)
    assert stored.folder == "Outbox"
    assert stored.content == content("hello")
    assert stored.props[PR_SUBJECT] == "hello"
    assert [r.address for r in stored.recipients] == ["bob@example.test", "carol@example.test"]
    assert len({r.row_id for r in stored.recipients}) == 2
    assert [e.kind for e in await store.events(entry_id)] == ["submitted"]
    assert await store.message_count("Outbox") == 1


async def test_submit_gives_every_message_its_own_entry_id(store):
    ids = await submit_many(store, 5)
    assert len(set(ids)) == 5


async def test_a_message_sent_later_is_deferred_and_its_lifetime_starts_when_due(store):
    now = time.time()
    entry_id = await submit(store, at=now, later=now + 600, lifetime=3600)

    entry = await store.queue_entry(entry_id)
    assert entry.state is QueueState.DEFERRED
    assert entry.not_before == pytest.approx(now + 600)
    assert entry.expires_at == pytest.approx(now + 600 + 3600)
    assert await store.next_wakeup() == pytest.approx(now + 600)
    assert await store.due_entries(now) == []
    assert [e.entry_id for e in await store.due_entries(now + 601)] == [entry_id]


async def test_a_send_later_time_in_the_past_queues_the_message(store):
    now = time.time()
    entry_id = await submit(store, at=now, later=now - 10)
    assert (await store.queue_entry(entry_id)).state is QueueState.QUEUED


async def test_queue_order_is_submit_order_then_the_store_sequence(store):
    now = time.time()
    late = await submit(store, "late", at=now)
    early = await submit(store, "early", at=now - 100)
    tie_a = await submit(store, "tie-a", at=now - 50)
    tie_b = await submit(store, "tie-b", at=now - 50)

    page = await store.queue_page()
    assert [e.entry_id for e in page] == [early, tie_a, tie_b, late]
    assert page[1].seq < page[2].seq
    assert [c.entry_id for c in await claim_all(store)] == [early, tie_a, tie_b, late]


async def test_queue_pages_follow_the_cursor_and_respect_the_limit(store):
    ids = await submit_many(store, 7)

    seen: list[bytes] = []
    after = None
    sizes = []
    while True:
        page = await store.queue_page(after=after, limit=3)
        if not page:
            break
        sizes.append(len(page))
        seen += [e.entry_id for e in page]
        after = (page[-1].submit_time, page[-1].seq)
    assert sizes == [3, 3, 1]
    assert seen == ids


async def test_every_paged_query_stops_at_its_limit(store):
    now = time.time()
    await submit_many(store, 6, start=now - 100)
    assert len(await store.queue_page(limit=2)) == 2
    assert len(await store.due_entries(now, limit=2)) == 2
    assert len(await store.overdue_entries(now + 10_000, limit=2)) == 2
    folder = await store.messages("Outbox", limit=4)
    assert len(folder) == 4
    rest = await store.messages("Outbox", after=folder[-1].seq, limit=4)
    assert len(rest) == 2
    assert {m.entry_id for m in folder}.isdisjoint(m.entry_id for m in rest)


async def test_queue_page_hides_sent_and_cancelled_unless_asked(store):
    from mapispool.store.types import QueueAction

    kept, cancelled = await submit_many(store, 2)
    await store.act(cancelled, QueueAction.CANCEL)

    assert [e.entry_id for e in await store.queue_page()] == [kept]
    everything = await store.queue_page(states=set(QueueState))
    assert [e.entry_id for e in everything] == [kept, cancelled]
    only = await store.queue_page(states=[QueueState.CANCELLED])
    assert [e.entry_id for e in only] == [cancelled]
    assert (await store.queue_page(with_recipients=False))[0].recipients == ()


async def test_due_entries_take_queued_due_and_backed_off_messages(store):
    from mapispool.store.types import Outcome

    now = time.time()
    queued = await submit(store, "queued", at=now - 30)
    waiting = await submit(store, "waiting", at=now - 20, later=now + 600)
    backoff = await submit(store, "backoff", at=now - 10)
    (claim,) = await store.claim(SMTP, now=now, exclude=[queued, waiting])
    assert claim.entry_id == backoff
    await store.record_one(
        Outcome(backoff, QueueState.RETRY, token=claim.token, not_before=now + 300)
    )

    assert [e.entry_id for e in await store.due_entries(now)] == [queued]
    forced = await store.due_entries(now, ignore_backoff=True)
    assert [e.entry_id for e in forced] == [queued, backoff]
    later = await store.due_entries(now + 1000)
    assert [e.entry_id for e in later] == [queued, waiting, backoff]
    assert await store.next_wakeup() == pytest.approx(now + 300)


async def test_overdue_entries_are_waiting_messages_past_their_lifetime(store):
    now = time.time()
    old = await submit(store, "old", at=now - 100, lifetime=50)
    await submit(store, "fresh", at=now, lifetime=3600)
    await submit(store, "later", at=now - 100, later=now + 600, lifetime=50)

    assert [e.entry_id for e in await store.overdue_entries(now)] == [old]


async def test_count_by_state_counts_each_state(store):
    now = time.time()
    await submit_many(store, 3)
    await submit(store, at=now, later=now + 600)
    counts = await store.count_by_state()
    assert counts[QueueState.QUEUED] == 3
    assert counts[QueueState.DEFERRED] == 1
    assert sum(counts.values()) == 4


async def test_an_unknown_entry_id_is_not_found(store):
    with pytest.raises(MapiError) as info:
        await store.queue_entry(b"\x00" * 16)
    assert info.value.hresult == MAPI_E_NOT_FOUND
    with pytest.raises(MapiError) as info:
        await store.message(b"\x00" * 16)
    assert info.value.hresult == MAPI_E_NOT_FOUND

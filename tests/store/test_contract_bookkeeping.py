"""Store contract: the queries the spooler's bookkeeping relies on (settled, delayed and
pending recipients) and what ``record`` keeps of recipients between attempts."""

from __future__ import annotations

import time

from mapispool.mapi import PR_DISPLAY_NAME
from mapispool.store.model import QueueState, Recipient
from mapispool.store.types import Outcome, RecipientOutcome, Report, Route

from .support import SMTP, claim_all, state_of, submit

TWO = [Recipient("a@example.test"), Recipient("b@example.test")]


async def test_recipients_saved_by_record_come_back_with_the_next_claim(store):
    entry_id = await submit(store, recipients=TWO)
    (claim,) = await claim_all(store)
    first, second = claim.recipients
    first.responsibility = True
    first.props[PR_DISPLAY_NAME] = "Alice"
    await store.record_one(
        Outcome(
            entry_id,
            QueueState.RETRY,
            token=claim.token,
            recipients=[first, second],
            recipient_outcomes=[RecipientOutcome((first.row_id,), "delivered", "smtp")],
            not_before=time.time() - 1,
        )
    )

    (again,) = await claim_all(store)
    by_row = {r.row_id: r for r in again.recipients}
    assert by_row[first.row_id].responsibility
    assert by_row[first.row_id].props[PR_DISPLAY_NAME] == "Alice"
    assert not by_row[second.row_id].responsibility
    outcomes = {row: outcome for row, outcome, _t, _n in await store.recipient_outcomes(entry_id)}
    assert outcomes == {first.row_id: "delivered", second.row_id: None}


async def test_pending_types_name_the_address_types_still_to_offer(store):
    mixed = [Recipient("a@example.test"), Recipient("555", addrtype="FAX")]
    entry_id = await submit(store, recipients=mixed)
    seq = (await store.queue_entry(entry_id)).seq
    assert sorted((await store.pending_types([seq]))[seq]) == ["FAX", "SMTP"]

    route = Route("smtp", (("smtp", ("SMTP",)), ("fax", ("FAX",))))
    (claim,) = await claim_all(store, route)
    smtp_row = next(r.row_id for r in claim.recipients if r.addrtype == "SMTP")
    await store.record_one(
        Outcome(
            entry_id,
            QueueState.QUEUED,
            token=claim.token,
            recipient_outcomes=[RecipientOutcome((smtp_row,), "delivered", "smtp")],
        )
    )
    assert (await store.pending_types([seq]))[seq] == ["FAX"]
    assert await claim_all(store, route) == []  # nothing left for smtp


async def test_settled_entries_are_waiting_messages_with_every_outcome_recorded(store):
    settled = await submit(store, "settled")
    waiting = await submit(store, "waiting")
    claims = {c.entry_id: c for c in await claim_all(store)}
    for entry_id, claim in claims.items():
        outcomes = (
            [RecipientOutcome((claim.recipients[0].row_id,), "delivered", "smtp")]
            if entry_id == settled
            else []
        )
        await store.record_one(
            Outcome(
                entry_id,
                QueueState.QUEUED,
                token=claim.token,
                recipient_outcomes=outcomes,
            )
        )
    assert [e.entry_id for e in await store.settled_entries()] == [settled]
    assert await state_of(store, waiting) is QueueState.QUEUED


async def test_delayed_entries_are_tried_waiting_messages_not_yet_noticed(store):
    now = time.time()
    tried = await submit(store, "tried", at=now - 100)
    await submit(store, "untried", at=now - 90)
    (claim,) = await store.claim(SMTP, now=now, limit=1)
    assert claim.entry_id == tried
    await store.record_one(
        Outcome(
            tried,
            QueueState.RETRY,
            token=claim.token,
            not_before=now + 60,
        )
    )

    assert [e.entry_id for e in await store.delayed_entries(now - 50)] == [tried]
    assert await store.delayed_entries(now - 200) == []
    # the delay notice is remembered with the report that carries it
    await store.record_one(Outcome(tried, reports=[Report(None, delay_notice=True)]))
    assert await store.delayed_entries(now - 50) == []


async def test_next_wakeup_is_none_without_a_waiting_message(store):
    assert await store.next_wakeup() is None
    await submit(store)
    assert await store.next_wakeup() is None

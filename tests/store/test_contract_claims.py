"""Store contract: claiming pages of work under a lease, fencing tokens, renew, release,
lease expiry and the routes a claim follows."""

from __future__ import annotations

import time

import pytest

from mapispool.store.model import QueueState, Recipient, StaleClaim
from mapispool.store.types import Outcome, QueueAction, Route

from .support import SMTP, claim_all, content, delivered, state_of, submit, submit_many


async def test_a_claim_is_a_page_in_submit_order_with_everything_a_transport_needs(store):
    ids = await submit_many(store, 5)

    claims = await claim_all(store, limit=3)
    assert [c.entry_id for c in claims] == ids[:3]
    first = claims[0]
    assert first.content == content("m0")
    assert first.props  # the props as submitted
    assert [r.address for r in first.recipients] == ["bob@example.test"]
    assert first.claimed_from is QueueState.QUEUED
    assert first.lease_until > time.time()
    assert len({c.token for c in claims}) == 3
    for c in claims:
        assert await state_of(store, c.entry_id) is QueueState.IN_FLIGHT


async def test_no_message_is_claimed_twice_while_its_claim_is_held(store):
    ids = await submit_many(store, 5)

    first = await claim_all(store, limit=3)
    second = await claim_all(store, limit=3)
    third = await claim_all(store, limit=3)
    assert [c.entry_id for c in first + second] == ids
    assert third == []


async def test_a_claim_returns_no_more_than_qualifies(store):
    now = time.time()
    due = await submit(store, "due", at=now - 10)
    await submit(store, "later", at=now - 5, later=now + 600)
    held = await submit(store, "held", at=now - 1)
    await store.act(held, QueueAction.HOLD)

    assert [c.entry_id for c in await store.claim(SMTP, now=now)] == [due]


async def test_claims_honour_exclude_and_submitted_before(store):
    now = time.time()
    a, b, c = await submit_many(store, 3, start=now - 30)

    claims = await store.claim(SMTP, now=now, exclude=[a], submitted_before=now - 29)
    assert [x.entry_id for x in claims] == [b]
    assert await state_of(store, c) is QueueState.QUEUED


async def test_a_large_content_stays_out_of_the_claim_and_streams(store):
    body = b"x" * 5000 + b"\r\n"
    entry_id = await submit(store, "big", body=body)

    (claim,) = await claim_all(store, inline_limit=1000)
    assert claim.content is None
    with store.open_content(entry_id) as stream:
        assert stream.read() == content("big", body)


async def test_a_claim_follows_the_route_and_the_transports_that_declined(store):
    order = (("fax", ("FAX",)), ("smtp", ("SMTP",)), ("any", ("*",)))
    fax, smtp, anything = (Route(name, order) for name in ("fax", "smtp", "any"))
    to_fax = await submit(store, "fax", recipients=[Recipient("123", addrtype="FAX")])
    to_mail = await submit(store, "mail")

    assert [c.entry_id for c in await claim_all(store, anything)] == []
    (claim,) = await claim_all(store, fax)
    assert claim.entry_id == to_fax
    # fax answers MAPI_E_NOT_ME: the message goes back, and on to the next in line
    await store.record_one(
        Outcome(to_fax, QueueState.QUEUED, token=claim.token, declined="fax", event="not-me")
    )
    assert (await store.queue_entry(to_fax)).declined == ("fax",)
    assert await claim_all(store, fax) == []
    assert [c.entry_id for c in await claim_all(store, anything)] == [to_fax]
    assert [c.entry_id for c in await claim_all(store, smtp)] == [to_mail]


async def test_a_parked_message_is_claimed_only_by_its_transport_once_released(store):
    entry_id = await submit(store)
    (claim,) = await claim_all(store)
    await store.record_one(
        Outcome(entry_id, QueueState.PARKED, token=claim.token, parked_by="smtp")
    )
    assert (await store.queue_entry(entry_id)).parked_by == "smtp"
    assert [e.entry_id for e in await store.parked_entries("smtp")] == [entry_id]
    assert await store.parked_entries("other") == []

    assert await claim_all(store) == []
    other = Route("other", (("other", ("*",)),))
    assert await claim_all(store, other, released=[entry_id]) == []
    (again,) = await claim_all(store, released=[entry_id])
    assert again.claimed_from is QueueState.PARKED


async def test_released_parked_messages_come_first_in_a_claim(store):
    now = time.time()
    parked = await submit(store, "parked", at=now - 100)
    (claim,) = await store.claim(SMTP, now=now)
    await store.record_one(Outcome(parked, QueueState.PARKED, token=claim.token, parked_by="smtp"))
    # queued messages submitted before the parked one: still after it in the claim
    for i in range(3):
        await submit(store, f"q{i}", at=now - 200 + i)
    claims = await store.claim(SMTP, now=now, limit=2, released=[parked])
    assert claims[0].entry_id == parked
    assert len(claims) == 2


async def test_release_puts_claims_back_where_they_were_and_ends_them(store):
    now = time.time()
    plain = await submit(store, "plain", at=now - 10)
    (claim,) = await store.claim(SMTP, now=now)

    assert (await store.queue_entry(plain)).attempts == 1  # a claim counts the attempt
    await store.release([claim])
    assert await state_of(store, plain) is QueueState.QUEUED
    assert [e.kind for e in await store.events(plain)] == ["submitted", "offered", "unclaimed"]
    assert (await store.queue_entry(plain)).attempts == 0  # and release gives it back
    with pytest.raises(StaleClaim):
        await store.mark_handoff(plain, claim.token, True)
    await store.release([claim])  # no longer current: skipped silently
    (again,) = await store.claim(SMTP, now=now)
    assert again.token != claim.token


async def test_release_returns_a_deferred_message_to_deferred(store):
    now = time.time()
    entry_id = await submit(store, at=now - 10, later=now + 5)
    (claim,) = await store.claim(SMTP, now=now + 6)
    assert claim.claimed_from is QueueState.DEFERRED
    await store.release([claim])
    assert await state_of(store, entry_id) is QueueState.DEFERRED


async def test_renew_extends_current_claims_and_names_the_lost_ones(store):
    await submit_many(store, 2)
    kept, lost = await claim_all(store, lease=30)
    await store.release([lost])

    before = kept.lease_until
    assert await store.renew([kept, lost], 3600) == [lost.entry_id]
    assert kept.lease_until > before


async def test_an_expired_lease_makes_the_message_claimable_and_fences_the_old_claim(store):
    now = time.time()
    entry_id = await submit(store, at=now - 1)
    (old,) = await store.claim(SMTP, now=now, lease=10)

    # the lease still runs: nothing to repair, and nobody else gets the message
    assert (await store.recover(now=now + 5))["requeued"] == 0
    assert await store.claim(SMTP, now=now + 5) == []
    # the lease ran out: recover gives the message back to the queue
    assert (await store.recover(now=now + 20))["requeued"] == 1
    (new,) = await store.claim(SMTP, now=now + 20, lease=10)
    assert new.entry_id == entry_id
    assert new.token != old.token

    # the stalled worker comes back: every write with its token is refused
    with pytest.raises(StaleClaim):
        await store.mark_handoff(entry_id, old.token, True)
    (recorded,) = await store.record([delivered(old)])
    assert isinstance(recorded.error, StaleClaim)
    assert await store.renew([old], 30) == [entry_id]
    assert await state_of(store, entry_id) is QueueState.IN_FLIGHT
    outcomes = await store.recipient_outcomes(entry_id)
    assert [outcome for _row, outcome, _text, _ndr in outcomes] == [None]
    # the current claim still works
    (ok,) = await store.record([delivered(new)])
    assert ok.error is None
    assert await state_of(store, entry_id) is QueueState.SENT


async def test_an_in_flight_message_is_never_claimed_even_with_its_lease_over(store):
    now = time.time()
    await submit(store, at=now - 1)
    await store.claim(SMTP, now=now, lease=1)
    assert await store.claim(SMTP, now=now + 100) == []


async def test_a_claim_that_ended_with_its_deleted_message_is_stale_not_unknown(store):
    """A newer claim finished the message and deleted it (PR_DELETE_AFTER_SUBMIT): the
    stalled worker's writes with its old token are refused as stale, as for a message
    still queued, so that the worker drops its late outcome (DESIGN §9)."""
    now = time.time()
    entry_id = await submit(store, at=now - 1)
    (old,) = await store.claim(SMTP, now=now, lease=10)
    assert (await store.recover(now=now + 20))["requeued"] == 1
    (new,) = await store.claim(SMTP, now=now + 20, lease=10)
    (finished,) = await store.record([delivered(new, folder=None, delete=True)])
    assert finished.error is None

    with pytest.raises(StaleClaim):
        await store.mark_handoff(entry_id, old.token, True)
    (recorded,) = await store.record([delivered(old)])
    assert isinstance(recorded.error, StaleClaim)


async def test_a_claim_carries_the_flags_given_at_submit(store):
    """``eight_bit`` and ``canonical`` come back with the claim as submitted; a message
    submitted without them (as by an older version) is claimed as not canonical."""
    now = time.time()
    rcpts = [Recipient("bob@example.test")]
    flagged = await store.submit(
        content("flagged", "caf\u00e9\r\n".encode()), {}, rcpts,
        submit_time=now - 2, not_before=None, expires_at=now + 600,
        eight_bit=True, canonical=True,
    )  # fmt: skip
    plain = await submit(store, "plain", at=now - 1)

    claims = {c.entry_id: c for c in await claim_all(store)}
    assert (claims[flagged].eight_bit, claims[flagged].canonical) == (True, True)
    assert (claims[plain].eight_bit, claims[plain].canonical) == (False, False)

"""Store contract: ``record`` applies the outcomes of many messages in one call, each one
all or nothing; the hand-over mark and ``recover`` keep the uncertain state exact."""

from __future__ import annotations

import time

import pytest

from mapispool.mapi import MAPI_E_NOT_FOUND, PR_SUBJECT, MapiError
from mapispool.store.model import InvalidTransition, QueueState, StaleClaim
from mapispool.store.types import Note, Outcome, RecipientOutcome, Report

from .support import SMTP, claim_all, delivered, state_of, submit, submit_many


async def test_record_applies_many_outcomes_in_one_call(store):
    ids = await submit_many(store, 4)
    claims = await claim_all(store)

    recorded = await store.record([delivered(c) for c in claims])
    assert [r.old for r in recorded] == [QueueState.IN_FLIGHT] * 4
    assert all(r.error is None for r in recorded)
    for entry_id in ids:
        assert await state_of(store, entry_id) is QueueState.SENT
        assert (await store.message(entry_id)).folder == "Sent Items"
        assert [o for _r, o, _t, _n in await store.recipient_outcomes(entry_id)] == ["delivered"]
    assert await store.queue_page() == []
    assert await store.message_count("Sent Items") == 4


async def test_a_refused_outcome_changes_nothing_and_the_others_are_applied(store):
    good_a, bad, stale, good_b = await submit_many(store, 4)
    claims = {c.entry_id: c for c in await claim_all(store)}
    await store.release([claims[stale]])
    unknown = b"\x01" * 16

    rows = tuple(r.row_id for r in claims[bad].recipients)
    refused = Outcome(
        bad,
        QueueState.HELD,  # in flight -> held: the state machine refuses it
        token=claims[bad].token,
        recipient_outcomes=[RecipientOutcome(rows, "failed", "smtp", "550 no")],
        declined="smtp",
        notes=[Note("should-not-appear")],
        reports=[Report(b"Subject: NDR\r\n\r\nx\r\n", {PR_SUBJECT: "NDR"}, ndr_rows=rows)],
    )
    recorded = await store.record(
        [
            delivered(claims[good_a]),
            refused,
            delivered(claims[stale]),
            Outcome(unknown, QueueState.SENT),
            delivered(claims[good_b]),
        ]
    )

    assert recorded[0].error is None
    assert recorded[4].error is None
    assert isinstance(recorded[1].error, InvalidTransition)
    assert isinstance(recorded[2].error, StaleClaim)
    assert isinstance(recorded[3].error, MapiError)
    assert recorded[3].error.hresult == MAPI_E_NOT_FOUND
    for entry_id in (good_a, good_b):
        assert await state_of(store, entry_id) is QueueState.SENT
    # the refused outcome left no trace: no outcome, no declined, no note, no report
    assert await state_of(store, bad) is QueueState.IN_FLIGHT
    assert await store.recipient_outcomes(bad) == [(rows[0], None, None, False)]
    assert (await store.queue_entry(bad)).declined == ()
    assert "should-not-appear" not in [e.kind for e in await store.events(bad)]
    assert await store.message_count("Inbox") == 0
    assert await state_of(store, stale) is QueueState.QUEUED
    with pytest.raises(InvalidTransition):
        await store.record_one(refused)


async def test_an_outcome_may_be_checked_against_the_expected_state(store):
    entry_id = await submit(store)
    (claim,) = await claim_all(store)
    outcome = Outcome(entry_id, QueueState.SENT, token=claim.token, expect=(QueueState.QUEUED,))
    (recorded,) = await store.record([outcome])
    assert isinstance(recorded.error, InvalidTransition)
    assert await state_of(store, entry_id) is QueueState.IN_FLIGHT


async def test_a_temporary_failure_counts_the_attempt_and_waits(store):
    now = time.time()
    entry_id = await submit(store, at=now - 1)
    (claim,) = await store.claim(SMTP, now=now)
    old = await store.record_one(
        Outcome(
            entry_id,
            QueueState.RETRY,
            token=claim.token,
            not_before=now + 120,
            error="421 try later",
            transport="smtp",
        )
    )
    assert old is QueueState.IN_FLIGHT
    entry = await store.queue_entry(entry_id)
    assert (entry.state, entry.attempts, entry.last_error) == (
        QueueState.RETRY,
        1,
        "421 try later",
    )
    assert entry.not_before == pytest.approx(now + 120)
    assert await store.claim(SMTP, now=now) == []
    assert len(await store.claim(SMTP, now=now + 121)) == 1


async def test_a_failure_files_its_ndr_in_the_same_call(store):
    entry_id = await submit(store)
    (claim,) = await claim_all(store)
    rows = tuple(r.row_id for r in claim.recipients)
    ndr = Report(b"Subject: Undeliverable\r\n\r\nx\r\n", {PR_SUBJECT: "Undeliverable"}, rows)
    failed = Outcome(
        entry_id,
        QueueState.FAILED,
        token=claim.token,
        folder="Outbox",
        recipient_outcomes=[RecipientOutcome(rows, "failed", "smtp", "550 unknown user")],
        reports=[ndr],
    )
    (recorded,) = await store.record([failed], durable=True)
    assert recorded.error is None
    (report_id,) = recorded.report_ids
    report = await store.message(report_id)
    assert (report.folder, report.subject) == ("Inbox", "Undeliverable")
    assert await store.recipient_outcomes(entry_id) == [
        (rows[0], "failed", "550 unknown user", True)
    ]
    assert await state_of(store, entry_id) is QueueState.FAILED


async def test_a_finished_message_without_a_folder_stays_where_it_is(store):
    entry_id = await submit(store)
    (claim,) = await claim_all(store)
    (recorded,) = await store.record([delivered(claim, folder=None)])
    assert recorded.error is None
    assert await state_of(store, entry_id) is QueueState.SENT
    assert (await store.message(entry_id)).folder == "Outbox"


async def test_a_finished_message_to_delete_is_deleted(store):
    entry_id = await submit(store)
    (claim,) = await claim_all(store)
    (recorded,) = await store.record([delivered(claim, folder=None, delete=True)])
    assert recorded.error is None
    with pytest.raises(MapiError) as info:
        await store.message(entry_id)
    assert info.value.hresult == MAPI_E_NOT_FOUND
    assert await store.message_count("Outbox") == 0
    assert await store.message_count("Sent Items") == 0


async def test_notes_and_a_delay_notice_are_recorded_without_a_state_change(store):
    entry_id = await submit(store)
    notice = Report(None, delay_notice=True)
    recorded = await store.record(
        [Outcome(entry_id, notes=[Note("checked", "smtp", "all fine")], reports=[notice])]
    )
    assert recorded[0].error is None
    assert recorded[0].report_ids == ()
    assert await state_of(store, entry_id) is QueueState.QUEUED
    assert ("checked", "smtp", "all fine") in [
        (e.kind, e.transport, e.detail) for e in await store.events(entry_id)
    ]


# -- the hand-over mark and recover ---------------------------------------------------


async def test_recover_marks_handed_over_messages_uncertain_and_requeues_the_rest(store):
    handed, not_handed, finished_over = await submit_many(store, 3)
    claims = {c.entry_id: c for c in await claim_all(store)}
    await store.mark_handoff(handed, claims[handed].token, True)
    await store.mark_handoff(finished_over, claims[finished_over].token, True)
    rows = tuple(r.row_id for r in claims[finished_over].recipients)
    # every recipient's outcome recorded before the stop: nothing is unknown
    await store.record_one(
        Outcome(
            finished_over,
            token=claims[finished_over].token,
            recipient_outcomes=[RecipientOutcome(rows, "delivered", "smtp")],
        )
    )

    counts = await store.recover()
    assert counts == {"requeued": 2, "uncertain": 1, "unparked": 0}
    assert await state_of(store, handed) is QueueState.UNCERTAIN
    assert await state_of(store, not_handed) is QueueState.QUEUED
    assert await state_of(store, finished_over) is QueueState.QUEUED
    assert "recovered-uncertain" in [e.kind for e in await store.events(handed)]
    assert "recovered-queued" in [e.kind for e in await store.events(not_handed)]
    # an uncertain message is never claimed again by itself
    assert [c.entry_id for c in await claim_all(store)] == [not_handed]
    # and the claims recover ended are stale
    with pytest.raises(StaleClaim):
        await store.mark_handoff(handed, claims[handed].token, False)


async def test_a_hand_over_that_ended_is_not_uncertain(store):
    entry_id = await submit(store)
    (claim,) = await claim_all(store)
    await store.mark_handoff(entry_id, claim.token, True)
    await store.mark_handoff(entry_id, claim.token, False)
    assert (await store.recover())["requeued"] == 1
    assert await state_of(store, entry_id) is QueueState.QUEUED


async def test_recover_unparks_parked_messages_only_when_asked(store):
    entry_id = await submit(store)
    (claim,) = await claim_all(store)
    await store.record_one(
        Outcome(entry_id, QueueState.PARKED, token=claim.token, parked_by="smtp")
    )
    assert (await store.recover(parked=False))["unparked"] == 0
    assert await state_of(store, entry_id) is QueueState.PARKED
    assert (await store.recover())["unparked"] == 1
    assert await state_of(store, entry_id) is QueueState.QUEUED


async def test_mark_handoff_for_an_unknown_message_is_not_found(store):
    with pytest.raises(MapiError) as info:
        await store.mark_handoff(b"\x02" * 16, None, True)
    assert info.value.hresult == MAPI_E_NOT_FOUND

"""Store contract: a person's queue actions and the transitions the state machine refuses,
transport state, status rows and ``wait_for_work``."""

from __future__ import annotations

import asyncio
import time

import pytest

from mapispool.mapi import (
    MAPI_E_NOT_FOUND,
    PR_DISPLAY_NAME,
    PR_STATUS_CODE,
    MapiError,
)
from mapispool.store.model import InvalidTransition, QueueState
from mapispool.store.types import Outcome, QueueAction, RecipientOutcome

from .support import claim_all, state_of, submit


async def test_hold_and_release(store):
    entry_id = await submit(store)
    assert await store.act(entry_id, QueueAction.HOLD) is QueueState.QUEUED
    assert await state_of(store, entry_id) is QueueState.HELD
    assert await claim_all(store) == []
    assert await store.due_entries(time.time()) == []
    assert await store.act(entry_id, QueueAction.RELEASE) is QueueState.HELD
    assert await state_of(store, entry_id) is QueueState.QUEUED
    kinds = [e.kind for e in await store.events(entry_id)]
    assert kinds[-2:] == ["held", "released"]


async def test_cancel_moves_the_message_to_deleted_items(store):
    entry_id = await submit(store)
    await store.act(entry_id, QueueAction.CANCEL)
    assert await state_of(store, entry_id) is QueueState.CANCELLED
    assert (await store.message(entry_id)).folder == "Deleted Items"
    assert "cancelled" in [e.kind for e in await store.events(entry_id)]
    with pytest.raises(InvalidTransition):
        await store.act(entry_id, QueueAction.RETRY)


async def test_purge_removes_the_message_and_its_entry(store):
    entry_id = await submit(store)
    assert await store.act(entry_id, QueueAction.PURGE) is QueueState.QUEUED
    with pytest.raises(MapiError) as info:
        await store.queue_entry(entry_id)
    assert info.value.hresult == MAPI_E_NOT_FOUND
    assert await store.message_count("Outbox") == 0


async def test_retry_of_a_failed_message_reopens_its_failed_recipients(store):
    entry_id = await submit(store)
    (claim,) = await claim_all(store)
    rows = tuple(r.row_id for r in claim.recipients)
    await store.record_one(
        Outcome(
            entry_id,
            QueueState.FAILED,
            token=claim.token,
            folder="Outbox",
            recipient_outcomes=[RecipientOutcome(rows, "failed", "smtp", "550 no")],
        )
    )
    assert await claim_all(store) == []

    new_expiry = time.time() + 7200
    assert await store.act(entry_id, QueueAction.RETRY, expires_at=new_expiry) is (
        QueueState.FAILED
    )
    entry = await store.queue_entry(entry_id)
    assert entry.state is QueueState.QUEUED
    assert entry.expires_at == pytest.approx(new_expiry)
    assert await store.recipient_outcomes(entry_id) == [(rows[0], None, None, False)]
    assert "retry-requested" in [e.kind for e in await store.events(entry_id)]
    assert [c.entry_id for c in await claim_all(store)] == [entry_id]


async def test_retry_of_an_uncertain_message_queues_it(store):
    entry_id = await submit(store)
    (claim,) = await claim_all(store)
    await store.mark_handoff(entry_id, claim.token, True)
    await store.recover()
    assert await state_of(store, entry_id) is QueueState.UNCERTAIN
    await store.act(entry_id, QueueAction.RETRY)
    assert await state_of(store, entry_id) is QueueState.QUEUED


@pytest.mark.parametrize(
    ("action", "state"),
    [
        (QueueAction.RELEASE, QueueState.QUEUED),  # only a held message is released
        (QueueAction.RETRY, QueueState.QUEUED),  # already queued
        (QueueAction.CANCEL, QueueState.IN_FLIGHT),
        (QueueAction.PURGE, QueueState.IN_FLIGHT),
        (QueueAction.HOLD, QueueState.IN_FLIGHT),
        (QueueAction.HOLD, QueueState.SENT),
        (QueueAction.CANCEL, QueueState.SENT),
    ],
)
async def test_an_action_the_state_machine_refuses_changes_nothing(store, action, state):
    entry_id = await submit(store)
    if state is not QueueState.QUEUED:
        (claim,) = await claim_all(store)
        if state is QueueState.SENT:
            await store.record_one(
                Outcome(entry_id, QueueState.SENT, token=claim.token, folder="Sent Items")
            )
    with pytest.raises(InvalidTransition) as info:
        await store.act(entry_id, action)
    assert isinstance(info.value, MapiError)  # one error tree
    assert await state_of(store, entry_id) is state


async def test_an_action_on_an_unknown_message_is_not_found(store):
    with pytest.raises(MapiError) as info:
        await store.act(b"\x05" * 16, QueueAction.HOLD)
    assert info.value.hresult == MAPI_E_NOT_FOUND


# -- transport state and status rows ----------------------------------------------------


async def test_transport_state_keeps_json_values_per_transport(store):
    assert await store.get_transport_state("imap", "uidvalidity") is None
    value = {"INBOX": [1, 2, 3], "name": "x", "raw": b"\x00\xff", "n": None}
    await store.set_transport_state("imap", "uidvalidity", value)
    await store.set_transport_state("pop3", "uidvalidity", 7)
    assert await store.get_transport_state("imap", "uidvalidity") == value
    await store.set_transport_state("imap", "uidvalidity", 42)
    assert await store.get_transport_state("imap", "uidvalidity") == 42
    assert await store.get_transport_state("pop3", "uidvalidity") == 7


async def test_status_rows_are_replaced_as_a_whole(store):
    first = [{PR_DISPLAY_NAME: "smtp", PR_STATUS_CODE: 1}, {PR_DISPLAY_NAME: "imap"}]
    await store.save_status_rows(first, ["smtp", "imap"])
    assert await store.load_status_rows() == first
    await store.save_status_rows([{PR_DISPLAY_NAME: "pop3"}], ["pop3"])
    assert await store.load_status_rows() == [{PR_DISPLAY_NAME: "pop3"}]


# -- waiting for work -----------------------------------------------------------------


async def drain(store) -> None:
    """Use up any wake-up pending from before (spurious ones are allowed)."""
    for _ in range(5):
        if not await store.wait_for_work(time.time() + 0.05):
            return
    pytest.fail("wait_for_work never returned False at its deadline")


async def test_wait_for_work_returns_false_at_its_deadline(store):
    await drain(store)
    assert await store.wait_for_work(time.time() - 1) is False


async def test_wait_for_work_wakes_on_submit(store):
    await drain(store)
    waiter = asyncio.create_task(store.wait_for_work(time.time() + 60))
    await asyncio.sleep(0)
    await submit(store)
    assert await asyncio.wait_for(waiter, 30) is True


async def test_a_submit_before_the_call_is_not_lost(store):
    await drain(store)
    await submit(store)
    assert await asyncio.wait_for(store.wait_for_work(time.time() + 60), 30) is True


async def test_wait_for_work_wakes_when_a_person_releases_a_message(store):
    entry_id = await submit(store)
    await store.act(entry_id, QueueAction.HOLD)
    await drain(store)
    waiter = asyncio.create_task(store.wait_for_work(time.time() + 60))
    await asyncio.sleep(0)
    await store.act(entry_id, QueueAction.RELEASE)
    assert await asyncio.wait_for(waiter, 30) is True

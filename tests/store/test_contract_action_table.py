"""Store contract: one table of a person's queue actions (``store.types.QUEUE_ACTIONS``
and ``PURGE_FROM``) on every store. Each action is tried on a message in each state it
can be in; a store applies it exactly where the table says, refuses it elsewhere with
``InvalidTransition`` and changes nothing then."""

from __future__ import annotations

import time

import pytest

from mapispool.store.base import Store
from mapispool.store.model import TRANSITIONS, InvalidTransition, QueueState
from mapispool.store.types import (
    QUEUE_ACTIONS,
    Outcome,
    QueueAction,
    RecipientOutcome,
    action_applies,
)

from .support import claim_all, state_of, submit

S = QueueState


async def message_in(store: Store, state: QueueState) -> bytes:
    """A message brought to ``state`` the way the spooler and a person bring it there."""
    if state is S.DEFERRED:
        return await submit(store, later=time.time() + 3600)
    entry_id = await submit(store)
    if state is S.QUEUED:
        return entry_id
    if state is S.HELD:
        await store.act(entry_id, QueueAction.HOLD)
        return entry_id
    if state is S.CANCELLED:
        await store.act(entry_id, QueueAction.CANCEL)
        return entry_id
    (claim,) = await claim_all(store)
    rows = tuple(r.row_id for r in claim.recipients)
    if state is S.UNCERTAIN:
        await store.mark_handoff(entry_id, claim.token, True)
        await store.recover()
    elif state is S.RETRY:
        await store.record_one(
            Outcome(entry_id, S.RETRY, token=claim.token, not_before=time.time() + 600)
        )
    elif state is S.PARKED:
        await store.record_one(Outcome(entry_id, S.PARKED, token=claim.token, parked_by="smtp"))
    elif state in (S.SENT, S.FAILED):
        outcome = "delivered" if state is S.SENT else "failed"
        await store.record_one(
            Outcome(
                entry_id,
                state,
                token=claim.token,
                folder="Sent Items" if state is S.SENT else "Outbox",
                recipient_outcomes=[RecipientOutcome(rows, outcome, "smtp", "550 no")],
            )
        )
    assert await state_of(store, entry_id) is state
    return entry_id


def test_the_table_only_names_moves_the_state_machine_allows():
    for action, (starts, new, _event) in QUEUE_ACTIONS.items():
        for state in starts:
            assert new in TRANSITIONS[state], (action, state)
    for action in QueueAction:
        assert not action_applies(action, S.IN_FLIGHT), action  # never what is being sent


@pytest.mark.parametrize("state", list(QueueState))
@pytest.mark.parametrize("action", list(QueueAction))
async def test_a_store_applies_an_action_exactly_where_the_table_says(store, action, state):
    entry_id = await message_in(store, state)
    expires_at = time.time() + 7200
    if action_applies(action, state):
        assert await store.act(entry_id, action, expires_at=expires_at) is state
        if action is QueueAction.PURGE:
            assert await store.message_count("Outbox") == 0
            return
        entry = await store.queue_entry(entry_id, with_recipients=False)
        assert entry.state is QUEUE_ACTIONS[action][1]
        assert entry.parked_by is None
        kinds = [e.kind for e in await store.events(entry_id)]
        assert kinds[-1] == QUEUE_ACTIONS[action][2]
    else:
        with pytest.raises(InvalidTransition):
            await store.act(entry_id, action, expires_at=expires_at)
        assert await state_of(store, entry_id) is state


async def test_recovery_says_the_same_on_every_store(store):
    """Handed over and every recipient's outcome recorded: queued again (to be
    finished), with the same reason whichever store keeps it."""
    entry_id = await submit(store)
    (claim,) = await claim_all(store)
    rows = tuple(r.row_id for r in claim.recipients)
    await store.mark_handoff(entry_id, claim.token, True)
    await store.record_one(
        Outcome(
            entry_id,
            None,
            token=claim.token,
            recipient_outcomes=[RecipientOutcome(rows, "delivered", "smtp")],
        )
    )
    assert (await store.recover())["requeued"] == 1
    entry = await store.queue_entry(entry_id, with_recipients=False)
    assert entry.state is S.QUEUED
    assert entry.last_error == "the spooler stopped after recording every recipient's outcome"
    (event,) = [e for e in await store.events(entry_id) if e.kind.startswith("recovered")]
    assert event.detail == entry.last_error

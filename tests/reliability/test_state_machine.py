"""A stateful property test of the queue's state machine: random sequences of submits,
transitions, hand-overs, outcomes, finishes and crash recoveries against a plain model."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from mapispool.spi import Recipient
from mapispool.store import TRANSITIONS, InvalidTransition, Outcome, QueueState, RecipientOutcome
from tests.sync_store import SyncStore

STATES = list(QueueState)
TERMINAL = [QueueState.SENT, QueueState.FAILED, QueueState.CANCELLED]


@dataclass
class Model:
    state: QueueState
    handoff: bool = False
    pending: bool = True


class QueueMachine(RuleBasedStateMachine):
    """The store must agree with the model after every step."""

    entries = Bundle("entries")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.store = SyncStore(Path(self.dir.name) / "store.db")
        self.model: dict[bytes, Model] = {}
        self.order: list[bytes] = []

    def teardown(self) -> None:
        self.store.close()
        self.dir.cleanup()

    @rule(target=entries, later=st.booleans())
    def submit(self, later: bool) -> bytes:
        now = time.time()
        entry_id = self.store.submit(
            b"To: b@x.test\r\n\r\nx",
            {},
            [Recipient(address="b@x.test", addrtype="SMTP", row_id=0)],
            submit_time=now,
            not_before=now + 3600 if later else None,
            expires_at=now + 7200,
        )
        self.model[entry_id] = Model(QueueState.DEFERRED if later else QueueState.QUEUED)
        self.order.append(entry_id)
        return entry_id

    @rule(entry=entries, new=st.sampled_from(STATES))
    def transition(self, entry: bytes, new: QueueState) -> None:
        model = self.model.get(entry)
        if model is None:
            return
        if new in TRANSITIONS[model.state]:
            assert self.store.transition(entry, new) is model.state
            model.state = new
            model.handoff = False
        else:
            with pytest.raises(InvalidTransition):
                self.store.transition(entry, new)

    @rule(entry=entries)
    def begin_handoff(self, entry: bytes) -> None:
        model = self.model.get(entry)
        if model is not None and model.state is QueueState.IN_FLIGHT:
            self.store.mark_handoff(entry, None, True)
            model.handoff = True

    @rule(entry=entries)
    def record_outcome(self, entry: bytes) -> None:
        model = self.model.get(entry)
        if model is not None:
            delivered = RecipientOutcome((0,), "delivered", "t")
            self.store.record_one(Outcome(entry, recipient_outcomes=[delivered]))
            model.pending = False

    @rule(entry=consumes(entries), state=st.sampled_from(TERMINAL), keep=st.booleans())
    def finish(self, entry: bytes, state: QueueState, keep: bool) -> None:
        model = self.model.get(entry)
        if model is None:
            return
        if state not in TRANSITIONS[model.state]:
            with pytest.raises(InvalidTransition):
                self.store.transition(entry, state, folder="Sent Items")
            return
        self.store.transition(entry, state, folder="Sent Items" if keep else None, delete=not keep)
        if keep:
            model.state = state
        else:
            del self.model[entry]
            self.order.remove(entry)

    @rule()
    def crash_and_recover(self) -> None:
        counts = self.store.recover()
        expected = {"requeued": 0, "uncertain": 0, "unparked": 0}
        for model in self.model.values():
            if model.state is QueueState.PARKED:
                model.state = QueueState.QUEUED
                expected["unparked"] += 1
            elif model.state is QueueState.IN_FLIGHT:
                if model.handoff and model.pending:
                    model.state = QueueState.UNCERTAIN
                    expected["uncertain"] += 1
                else:
                    model.state = QueueState.QUEUED
                    expected["requeued"] += 1
            model.handoff = False
        assert counts == expected

    @invariant()
    def states_agree(self) -> None:
        every = self.store.outgoing_queue(include_finished=True)
        assert [e.entry_id for e in every] == self.order
        assert {e.entry_id: e.state for e in every} == {k: m.state for k, m in self.model.items()}
        shown = [e.entry_id for e in self.store.outgoing_queue()]
        assert shown == [
            k
            for k in self.order
            if self.model[k].state not in (QueueState.SENT, QueueState.CANCELLED)
        ]
        counts = self.store.count_by_state()
        for state in STATES:
            assert counts.get(state, 0) == sum(m.state is state for m in self.model.values())


QueueMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_queue_state_machine = QueueMachine.TestCase

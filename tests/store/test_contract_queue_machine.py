"""Store contract, as a stateful property test: random runs of submit, claim, hand-over,
record (with current and stale tokens), release, the clock moving on, lease expiry and
crash recovery, against a plain model of the queue, on every backend.

Hypothesis drives the rules from a worker thread; each rule runs its store call on the
test's event loop (``run_coroutine_threadsafe``), so any backend fixture works. Every
run submits its messages with an address type of its own and claims through a route that
takes only that type, so runs sharing one store never see each other's messages.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from mapispool.store.base import Store
from mapispool.store.model import (
    FINISHED_STATES,
    TRANSITIONS,
    InvalidTransition,
    QueueState,
    Recipient,
    StaleClaim,
)
from mapispool.store.types import Claim, Outcome, QueueAction, RecipientOutcome, Route

S = QueueState
_runs = itertools.count()


@dataclass
class Model:
    seq: int  # the order of submission (all submit times differ)
    state: QueueState
    not_before: float | None = None
    token: int | None = None
    lease_until: float = 0.0
    claimed_from: QueueState = S.QUEUED
    handoff: bool = False
    pending: bool = True
    old_tokens: list[int] = field(default_factory=list)
    claim: Claim | None = None  # the current claim, as the store handed it out

    def end_claim(self) -> None:
        if self.token is not None:
            self.old_tokens.append(self.token)
        self.token, self.handoff, self.claim = None, False, None


class QueueMachine(RuleBasedStateMachine):
    """Subclassed per test with ``store`` and ``call`` (runs a coroutine to its result)."""

    store: Store
    call: Callable[[Coroutine[Any, Any, Any]], Any]
    entries = Bundle("entries")

    def __init__(self) -> None:
        super().__init__()
        self.addrtype = f"T{next(_runs)}"
        self.route = Route("t", (("t", (self.addrtype,)),))
        self.now = time.time()
        self.model: dict[bytes, Model] = {}

    def teardown(self) -> None:
        self.call(self.store.recover())  # no claim outlives the run

    def _due(self, m: Model) -> bool:
        waits = m.not_before if m.not_before is not None else 0.0
        return m.state is S.QUEUED or (m.state in (S.DEFERRED, S.RETRY) and waits <= self.now)

    @rule(target=entries, later=st.booleans())
    def submit(self, later: bool) -> bytes:
        self.now += 0.001  # distinct submit times: submit order is the model's seq
        not_before = self.now + 60 if later else None
        entry_id: bytes = self.call(
            self.store.submit(
                b"Subject: x\r\n\r\nx\r\n",
                {},
                [Recipient(f"r{len(self.model)}@x.test", addrtype=self.addrtype)],
                submit_time=self.now,
                not_before=not_before,
                expires_at=self.now + 10_000,
            )
        )
        state = S.DEFERRED if later else S.QUEUED
        self.model[entry_id] = Model(len(self.model), state, not_before)
        return entry_id

    @rule(limit=st.integers(1, 3), lease=st.floats(5, 50))
    def claim(self, limit: int, lease: float) -> None:
        # a message whose one recipient has its outcome has nothing left to offer
        due = sorted((m.seq, e) for e, m in self.model.items() if self._due(m) and m.pending)
        claims = self.call(self.store.claim(self.route, now=self.now, limit=limit, lease=lease))
        assert [c.entry_id for c in claims] == [e for _seq, e in due[:limit]]
        for c in claims:
            m = self.model[c.entry_id]
            assert c.claimed_from is m.state
            assert c.token not in m.old_tokens
            m.claimed_from, m.state, m.token, m.claim = m.state, S.IN_FLIGHT, c.token, c
            m.lease_until = self.now + lease

    @rule(entry=entries, begun=st.booleans())
    def handoff(self, entry: bytes, begun: bool) -> None:
        m = self.model[entry]
        if m.token is not None:
            self.call(self.store.mark_handoff(entry, m.token, begun))
            m.handoff = begun
        elif m.old_tokens:
            with pytest.raises(StaleClaim):
                self.call(self.store.mark_handoff(entry, m.old_tokens[-1], begun))

    @rule(entry=entries)
    def record_outcomes(self, entry: bytes) -> None:
        m = self.model[entry]
        if m.token is None:
            return
        outcome = Outcome(
            entry, token=m.token, recipient_outcomes=[RecipientOutcome((0,), "delivered", "t")]
        )
        assert self.call(self.store.record_one(outcome)) is S.IN_FLIGHT
        m.pending = False

    @rule(entry=entries, new=st.sampled_from(list(S)), stale=st.booleans())
    def record(self, entry: bytes, new: QueueState, stale: bool) -> None:
        m = self.model[entry]
        token = m.old_tokens[-1] if stale and m.old_tokens else m.token
        if token is None:
            return
        later = self.now + 30 if new in (S.RETRY, S.DEFERRED) else None
        outcome = Outcome(entry, new, token=token, not_before=later, folder="Sent Items")
        (recorded,) = self.call(self.store.record([outcome]))
        if token != m.token:
            assert isinstance(recorded.error, StaleClaim)
        elif new not in TRANSITIONS[S.IN_FLIGHT]:
            assert isinstance(recorded.error, InvalidTransition)
        else:
            assert recorded.error is None
            assert recorded.old is S.IN_FLIGHT
            m.end_claim()
            m.state, m.not_before = new, later

    @rule(entry=entries)
    def release(self, entry: bytes) -> None:
        m = self.model[entry]
        if m.claim is None:
            return
        self.call(self.store.release([m.claim]))
        m.end_claim()
        m.state = m.claimed_from

    @rule(entry=entries)
    def hold_in_flight_is_refused(self, entry: bytes) -> None:
        m = self.model[entry]
        if m.state is S.IN_FLIGHT or m.state in FINISHED_STATES:
            with pytest.raises(InvalidTransition):
                self.call(self.store.act(entry, QueueAction.HOLD))

    @rule(seconds=st.floats(0.5, 100))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule(crash=st.booleans())
    def recover(self, crash: bool) -> None:
        """A crash (every claim and parked message) or an expiry sweep (leases over)."""
        counts = self.call(self.store.recover(parked=crash, now=None if crash else self.now))
        expected = {"requeued": 0, "uncertain": 0, "unparked": 0}
        for m in self.model.values():
            if m.state is S.PARKED and crash:
                m.state = S.QUEUED
                expected["unparked"] += 1
            elif m.state is S.IN_FLIGHT and (crash or m.lease_until < self.now):
                uncertain = m.handoff and m.pending
                m.state = S.UNCERTAIN if uncertain else S.QUEUED
                expected["uncertain" if uncertain else "requeued"] += 1
                m.end_claim()
        assert counts == expected

    @invariant()
    def the_store_agrees_with_the_model(self) -> None:
        for entry, m in self.model.items():
            entry_row = self.call(self.store.queue_entry(entry, with_recipients=False))
            assert entry_row.state is m.state, entry.hex()


async def test_the_queue_agrees_with_a_model(store):
    loop = asyncio.get_running_loop()

    def call(coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    machine = type("Machine", (QueueMachine,), {"store": store, "call": staticmethod(call)})
    quick = settings(max_examples=60, stateful_step_count=30, deadline=None)
    await loop.run_in_executor(None, lambda: run_state_machine_as_test(machine, settings=quick))

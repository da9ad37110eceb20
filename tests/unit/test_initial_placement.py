"""Where a new message goes (``store.model.initial_placement``): its state, first due
time and expiry, the same on every store."""

from __future__ import annotations

import random

from mapispool.store.model import QueueState, initial_placement


def test_a_deferred_message_keeps_its_whole_lifetime_to_the_last_bit() -> None:
    """Deferred: the expiry is exactly the due time plus the lifetime, for submit times
    around today's (past 2**31 seconds the sum with the submit time drops a bit; the
    earlier formula fell one unit short a quarter of the time)."""
    rng = random.Random(12)
    for _ in range(20_000):
        submit = 1.7e9 + rng.random() * 2e8
        due = submit + rng.choice([0.001, 1.0, 3600.0]) + rng.random()
        lifetime = rng.choice([0.5, 30.0, 5 * 86400.0])
        state, due_at, expires_at = initial_placement(submit, due, submit + lifetime)
        assert state is QueueState.DEFERRED
        assert due_at == due
        assert expires_at == due + lifetime


def test_a_message_due_now_is_queued_with_its_expiry_unchanged() -> None:
    for not_before in (None, 1_800_000_000.0, 1_799_999_999.5):
        state, due_at, expires_at = initial_placement(1_800_000_000.0, not_before, 1_800_000_060.0)
        assert state is QueueState.QUEUED
        assert due_at == 1_800_000_000.0
        assert expires_at == 1_800_000_060.0

"""The outcome of a message is recorded while the transport already sends the next one
(issue #11): the transport's submit slot is given back before the record is written, the
flush still ends only once every outcome is recorded, and the order of submit/end pairs
stays the claim order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from mapispool.mapi import FLUSH_UPLOAD
from mapispool.store import Outcome, QueueState, Recorded

from .conftest import message

#: How long a held record waits for the next submit at most (a generous bound: only a
#: broken overlap ever waits this long, and then the test fails).
HOLD = 10.0


async def test_next_message_goes_out_while_the_last_outcome_is_recorded(
    rig: Any, session_factory: Any
) -> None:
    """With one connection (max_in_flight 1), the record of message 1 is held until the
    transport was handed message 2: that only ends when the records run outside the
    submit slot. The flush returns with every message sent and recorded."""
    rig.script("a")
    session = await session_factory()
    ids = [await session.submit(message(f"m{i}")) for i in range(3)]
    store = session.store
    real_record = store.record
    overlapped: list[bool] = []

    async def record(outcomes: Sequence[Outcome], **options: Any) -> list[Recorded]:
        if outcomes and outcomes[0].entry_id == ids[0] and not overlapped:
            for _ in range(int(HOLD / 0.01)):  # polls the journal: no event to wait on
                if len(rig.journal.of("a", "submit_message")) >= 2:
                    break
                await asyncio.sleep(0.01)
            overlapped.append(len(rig.journal.of("a", "submit_message")) >= 2)
        return await real_record(outcomes, **options)

    store.record = record  # type: ignore[method-assign]
    try:
        result = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    finally:
        del store.record
    assert overlapped == [True]
    assert result.transports["a"].sent == 3
    for entry_id in ids:  # every outcome committed when the flush returned
        assert (await session.queue_entry(entry_id)).state is QueueState.SENT
    assert rig.journal.trace("a", "submit_message") == [
        "a.submit_message 0x0 'm0'",
        "a.submit_message 0x0 'm1'",
        "a.submit_message 0x0 'm2'",
    ]

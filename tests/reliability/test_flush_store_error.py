"""A Send/Receive that a store error ends midway (a full disk while a message is taken
out of the queue) still ends the flush for the transport it was in: the transport gets
its end-of-flush notification, so no FLUSH bit stays in its row and a transport that
took external resources in ``flush_queues`` is told to let them go."""

from __future__ import annotations

import asyncio

import pytest

from mapispool.mapi import (
    FLUSH_DOWNLOAD,
    FLUSH_FORCE,
    FLUSH_UPLOAD,
    NOTIFY_END_INBOUND_FLUSH,
    NOTIFY_END_OUTBOUND_FLUSH,
    PR_STATUS_CODE,
    STATUS_INBOUND_FLUSH,
    STATUS_OUTBOUND_FLUSH,
    MapiError,
)
from mapispool.profile import Profile
from mapispool.session import AsyncSession
from mapispool.store import QueueState
from mapispool.testing import TransportScript
from tests.conformance.conftest import message
from tests.conftest import StoreBackend
from tests.reliability.test_sender_supervision import FAULT, clear_fault, inject_fault


@pytest.mark.parametrize("marking", ["mrxp", "on_success"])
async def test_a_flush_ended_by_a_store_error_ends_the_transports_flush(
    store_backend: StoreBackend, marking: str
) -> None:
    script = TransportScript(marking=marking)
    profile = Profile.from_dict(
        {
            **store_backend.options(),
            "send_immediately": False,
            "transports": {"a": {"provider": "recording", "script": script}},
        }
    )
    session = await AsyncSession.logon(profile)
    store = store_backend
    try:
        entry_id = await session.submit(message("caught"))
        await asyncio.to_thread(inject_fault, store, "in_flight")
        script.journal.clear()
        with pytest.raises(MapiError, match=FAULT):
            await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_DOWNLOAD, wait=True)
        row = (await session.status_table())[1]
        assert not row[PR_STATUS_CODE] & (STATUS_OUTBOUND_FLUSH | STATUS_INBOUND_FLUSH)
        ended = 0
        for call in script.journal.of("a", "transport_notify"):
            ended |= call.flags or 0
        assert ended & NOTIFY_END_OUTBOUND_FLUSH
        assert ended & NOTIFY_END_INBOUND_FLUSH
        # Nothing is lost: once the store works again the message is sent.
        await asyncio.to_thread(clear_fault, store)
        await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE, wait=True)
        assert (await session.queue_entry(entry_id)).state is QueueState.SENT
    finally:
        await session.logoff()

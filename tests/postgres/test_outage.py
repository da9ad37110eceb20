"""The database going away under a store and coming back (DESIGN §9): every call in the
outage is one clear MAPI_E_NETWORK_ERROR (exit 75 in the CLI), nothing is lost, and the
same store object works again once the server is back."""

from __future__ import annotations

import time

import pytest

from mapispool.mapi import MAPI_E_NETWORK_ERROR, MapiError
from mapispool.store.model import QueueState, Recipient
from mapispool.store.postgres import PostgresStore
from tests.servers.postgres import PostgresServer


async def submit(store: PostgresStore) -> bytes:
    now = time.time()
    return await store.submit(b"Subject: x\r\n\r\nbody\r\n", {}, [Recipient("a@example.test")],
                              submit_time=now, not_before=None, expires_at=now + 60)  # fmt: skip


async def test_a_restart_of_the_server_is_a_network_error_then_business_as_usual(
    pg: PostgresStore, postgres_server: PostgresServer | None
) -> None:
    if postgres_server is None:
        pytest.skip("MAPISPOOL_TEST_PG names an outside server, which this test cannot stop")
    kept = await submit(pg)
    postgres_server.stop()
    try:
        with pytest.raises(MapiError) as caught:
            await submit(pg)
        assert caught.value.hresult == MAPI_E_NETWORK_ERROR
        assert "cannot reach the PostgreSQL store" in caught.value.message
        assert "\n" not in caught.value.message
    finally:
        postgres_server.start()
    again = await submit(pg)
    assert (await pg.queue_entry(kept)).state is QueueState.QUEUED
    assert (await pg.queue_entry(again)).state is QueueState.QUEUED

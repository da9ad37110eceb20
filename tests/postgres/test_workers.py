"""Workers on one PostgreSQL store: the registry and status rows, the one-flush advisory
lock, wake-ups through LISTEN/NOTIFY, and the database going away (DESIGN §9)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from mapispool.mapi import MAPI_E_NETWORK_ERROR, PR_DISPLAY_NAME, MapiError
from mapispool.store.model import Recipient
from mapispool.store.postgres import PostgresStore
from tests.servers.postgres import PgStoreLocation


async def test_live_workers_and_their_status_rows(pg: PostgresStore, pg2: PostgresStore) -> None:
    """Each worker registers under its name (a second live one with the same name is
    refused); the status table is every live worker's rows; a worker that stops takes
    its rows with it."""
    assert await pg.acquire_spooler_lock("w1")
    assert await pg2.acquire_spooler_lock("w2")
    assert [w["name"] for w in await pg.live_workers()] == ["w1", "w2"]
    await pg.save_status_rows([{PR_DISPLAY_NAME: "smtp@w1"}], ["smtp"])
    await pg2.save_status_rows([{PR_DISPLAY_NAME: "smtp@w2"}], ["smtp"])
    rows = await pg.load_status_rows()
    assert [r[PR_DISPLAY_NAME] for r in rows] == ["smtp@w1", "smtp@w2"]
    await pg2.release_spooler_lock()
    assert [r[PR_DISPLAY_NAME] for r in await pg.load_status_rows()] == ["smtp@w1"]
    assert [w["name"] for w in await pg.live_workers()] == ["w1"]


async def test_a_second_live_worker_with_the_same_name_is_refused(
    pg: PostgresStore, pg2: PostgresStore
) -> None:
    assert await pg.acquire_spooler_lock("same")
    assert not await pg2.acquire_spooler_lock("same")


async def test_one_flush_per_store_and_a_dead_holders_lock_dies_with_it(
    pg: PostgresStore, pg2: PostgresStore, pg_store: PgStoreLocation
) -> None:
    """The flush lock admits one holder across processes; a holder killed with kill -9
    frees it with its session, so BUSY is never stale."""
    assert await pg.try_flush_lock()
    assert not await pg2.try_flush_lock()
    await pg.try_flush_unlock()
    assert await pg2.try_flush_lock()
    await pg2.try_flush_unlock()
    code = (
        "import asyncio, sys, os\n"
        "from mapispool.store.postgres import PostgresStore\n"
        "async def main():\n"
        f"    s = await PostgresStore.open({pg_store.url!r}, schema={pg_store.schema!r})\n"
        "    assert await s.try_flush_lock()\n"
        "    print('held', flush=True)\n"
        "    await asyncio.sleep(3600)\n"
        "asyncio.run(main())\n"
    )
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert (await asyncio.wait_for(holder.stdout.readline(), 60)).strip() == b"held"
        assert not await pg.try_flush_lock()
    finally:
        holder.kill()
        await holder.wait()
    for _ in range(200):  # the server notices the closed socket at once; give it time
        if await pg.try_flush_lock():
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the flush lock of a killed holder was not freed")


async def test_a_submit_wakes_another_workers_wait(pg: PostgresStore, pg2: PostgresStore) -> None:
    """LISTEN/NOTIFY: a submission through one store object wakes a worker waiting on
    another connection well before its deadline."""
    await pg2.wait_for_work(time.time() + 0.01)  # starts listening
    while await pg2.wait_for_work(time.time() + 0.2):
        pass  # consume the wake-up that says "now listening"
    waiter = asyncio.create_task(pg2.wait_for_work(time.time() + 60))
    await asyncio.sleep(0.1)
    now = time.time()
    await pg.submit(b"Subject: x\r\n\r\n", {}, [Recipient("a@example.test")],
                    submit_time=now, not_before=None, expires_at=now + 60)  # fmt: skip
    assert await asyncio.wait_for(waiter, 30) is True


async def test_an_unreachable_database_is_one_clear_network_error(
    pg_store: PgStoreLocation,
) -> None:
    """Nothing listening at the URL: MAPI_E_NETWORK_ERROR in one line naming the store."""
    from tests.servers._util import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(MapiError) as caught:
        await PostgresStore.open(url, schema=pg_store.schema)
    assert caught.value.hresult == MAPI_E_NETWORK_ERROR
    assert "cannot reach the PostgreSQL store" in caught.value.message
    assert "\n" not in caught.value.message


async def test_open_reads_the_password_by_reference(pg_store: PgStoreLocation) -> None:
    """The password callable is asked at each connect (trust auth ignores its value)."""
    asked = []

    def password() -> str:
        asked.append(1)
        return os.environ.get("NO_SUCH_PW", "unused")

    store = await PostgresStore.open(pg_store.url, schema=pg_store.schema, password=password)
    await store.close()
    assert asked


async def test_lanes_admit_as_many_workers_as_configured(
    pg: PostgresStore, pg2: PostgresStore
) -> None:
    """One lane: one worker at a time sends through a transport (submit order holds);
    lanes = 2 admits two; a released lane is free for the next worker."""
    assert await pg.try_lane("smtp") == 0
    assert await pg2.try_lane("smtp") is None
    assert await pg2.try_lane("imap") == 0
    assert await pg2.try_lane("bulk", lanes=2) == 0
    assert await pg.try_lane("bulk", lanes=2) == 1
    await pg.release_lane("smtp", 0)
    assert await pg2.try_lane("smtp") == 0

"""Store contract: the spooler lock (one spooler per store, unless the backend takes many
workers) and closing."""

from __future__ import annotations


async def test_the_spooler_lock_is_idempotent_and_released(store):
    assert await store.acquire_spooler_lock("w1")
    assert await store.acquire_spooler_lock("w1")
    await store.release_spooler_lock()
    await store.release_spooler_lock()
    assert await store.acquire_spooler_lock("w1")
    await store.release_spooler_lock()


async def test_a_one_spooler_store_refuses_a_second_spooler(store):
    if store.many_workers:
        return  # many workers may run on it: registration is the backend's own tests'
    other = await type(store).open(store.location)
    try:
        assert await store.acquire_spooler_lock()
        assert not await other.acquire_spooler_lock()
        await store.release_spooler_lock()
        assert await other.acquire_spooler_lock()
        await other.release_spooler_lock()
    finally:
        await other.close()


async def test_a_second_handle_sees_what_the_first_wrote(store):
    from .support import submit

    if store.many_workers:
        return  # reopening by location needs the backend's credentials
    entry_id = await submit(store)
    other = await type(store).open(store.location)
    try:
        assert (await other.queue_entry(entry_id)).entry_id == entry_id
    finally:
        await other.close()

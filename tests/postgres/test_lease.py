"""The lease of a worker's claims on the PostgreSQL store (issue #12): the profile's
``store_lease`` (validated at load), the lease a claim gets when the spooler names none,
and a worker that was paused past its lease registering again when it resumes."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from mapispool.profile import Profile, ProfileError
from mapispool.store.model import Recipient
from mapispool.store.postgres import PostgresStore
from mapispool.store.types import Route
from tests.servers.postgres import PgStoreLocation

URL = "postgresql://mapispool@db.example.test:5432/mail"
ROUTE = Route("smtp", (("smtp", ("SMTP",)),))


def load(text: str) -> Profile:
    return Profile.from_toml(text, source="p.toml")


@pytest.mark.parametrize(
    ("written", "seconds"),
    [('"2s"', 2.0), ('"1.5s"', 1.5), ('"2m"', 120.0), ('"45"', 45.0), ("10", 10.0), ("2.5", 2.5)],
)
def test_store_lease_takes_seconds_or_minutes(written: str, seconds: float) -> None:
    profile = load(f'store = "{URL}"\nstore_lease = {written}\n')
    assert profile.store_lease == seconds
    assert profile.postgres_store_options()["lease"] == seconds


def test_without_store_lease_the_store_keeps_its_default() -> None:
    profile = load(f'store = "{URL}"\n')
    assert profile.store_lease is None
    assert "lease" not in profile.postgres_store_options()


@pytest.mark.parametrize(
    ("written", "says"),
    [
        ('"fast"', 'like "30s" or "2m"'),
        ('"2h"', 'like "30s" or "2m"'),
        ("true", 'like "30s" or "2m"'),
        ('"0.5s"', 'between "1s" and "60m"'),
        ("0", 'between "1s" and "60m"'),
        ('"61m"', 'between "1s" and "60m"'),
    ],
)
def test_a_bad_store_lease_is_one_clear_error(written: str, says: str) -> None:
    with pytest.raises(ProfileError) as caught:
        load(f'store = "{URL}"\nstore_lease = {written}\n')
    text = str(caught.value)
    assert "store_lease" in text, text
    assert says in text, text
    assert len(text.splitlines()) == 1


def test_store_lease_needs_a_postgresql_store() -> None:
    with pytest.raises(ProfileError, match=r"store_lease.*only a PostgreSQL store"):
        load('store = "sqlite:///var/s.db"\nstore_lease = "5s"\n')


async def test_a_claim_lasts_the_store_lease_when_the_caller_names_none(
    pg_store: PgStoreLocation,
) -> None:
    """The spooler claims without a lease of its own: the claim must last the store's
    lease (the profile's ``store_lease``), not a fixed 30 s, or a paused worker would keep
    its messages for 30 s whatever the profile says."""
    store = await PostgresStore.open(pg_store.url, schema=pg_store.schema, lease=2.0)
    try:
        now = time.time()
        await store.submit(
            b"Subject: x\r\n\r\nbody\r\n", {}, [Recipient("r@example.test")],
            submit_time=now, not_before=None, expires_at=now + 3600,
        )  # fmt: skip
        (claim,) = await store.claim(ROUTE, now=now, worker="w")
        assert claim.lease_until - now == pytest.approx(2.0)
        with psycopg.connect(pg_store.url) as conn:
            (seconds,) = conn.execute(
                f'SELECT lease_seconds FROM "{pg_store.schema}".queue'
            ).fetchone() or (None,)
        assert seconds == 2.0
    finally:
        await store.close()


async def test_a_worker_forgotten_while_paused_registers_again_at_its_next_beat(
    pg_store: PgStoreLocation,
) -> None:
    """A worker paused past its lease (SIGSTOP) is forgotten by the live ones; when it
    resumes, its next heartbeat registers it again, so that it shows among the live
    workers and its new claims are not taken for a dead worker's."""
    store = await PostgresStore.open(pg_store.url, schema=pg_store.schema, lease=1.0)
    try:
        assert await store.acquire_spooler_lock("zombie")
        # What a live worker's heartbeat does once the paused one missed its lease.
        with psycopg.connect(pg_store.url, autocommit=True) as conn:
            conn.execute(f'DELETE FROM "{pg_store.schema}".workers')
        assert await store.live_workers() == []
        await store.heartbeat()
        assert [w["name"] for w in await store.live_workers()] == ["zombie"]
    finally:
        await store.close()


async def test_a_heartbeat_holds_no_claim_lock_while_the_loop_runs_other_work(
    pg_store: PgStoreLocation,
) -> None:
    """A plug-in transport marks its hand-over synchronously (``begin_handoff``): the
    spooler's loop waits while another connection updates the claimed row. A heartbeat
    that renewed the claims in a transaction still open across an ``await`` would hold
    that row's lock meanwhile, and the two would wait for each other for ever (a worker
    stuck mid-send, its lane held). Here each loop turn updates the row synchronously,
    with a lock timeout, while heartbeats run: none may find the row locked."""
    store = await PostgresStore.open(pg_store.url, schema=pg_store.schema, lease=1.0)
    sync = psycopg.connect(pg_store.url, autocommit=True)
    try:
        assert await store.acquire_spooler_lock("a")
        now = time.time()
        await store.submit(
            b"Subject: x\r\n\r\nbody\r\n", {}, [Recipient("r@example.test")],
            submit_time=now, not_before=None, expires_at=now + 3600,
        )  # fmt: skip
        (claim,) = await store.claim(ROUTE, now=now)
        sync.execute("SET lock_timeout = '300ms'")
        update = f'UPDATE "{pg_store.schema}".queue SET handoff = handoff WHERE token = %s'
        locked: list[int] = []
        beating = True

        async def hand_over_synchronously() -> None:
            while beating:
                try:
                    sync.execute(update, (claim.token,))  # blocks the loop, as the bridge does
                except psycopg.errors.LockNotAvailable:
                    locked.append(1)
                await asyncio.sleep(0)

        poking = asyncio.create_task(hand_over_synchronously())
        for _ in range(20):
            await store.heartbeat()
        beating = False
        await poking
        assert locked == []
    finally:
        sync.close()
        await store.close()

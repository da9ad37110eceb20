"""The PostgreSQL store's schema: created on first open, migrated once when several
workers open it together, refused when a newer mapispool wrote it."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from mapispool.mapi import MAPI_E_VERSION, MapiError
from mapispool.store.postgres import PostgresStore
from mapispool.store.postgres._sql import migrations
from tests.servers.postgres import PgStoreLocation


async def test_workers_opening_a_new_store_together_create_it_once(
    pg_store: PgStoreLocation,
) -> None:
    """Five opens at once: every one succeeds and the schema has each version once."""
    stores = await asyncio.gather(
        *(PostgresStore.open(pg_store.url, schema=pg_store.schema) for _ in range(5))
    )
    for store in stores:
        await store.close()
    with psycopg.connect(pg_store.url) as conn:
        rows = conn.execute(
            f'SELECT version FROM "{pg_store.schema}".schema_version ORDER BY version'
        ).fetchall()
    assert [v for (v,) in rows] == [m.version for m in migrations()]


async def test_a_store_written_by_a_newer_mapispool_is_refused(pg_store: PgStoreLocation) -> None:
    store = await PostgresStore.open(pg_store.url, schema=pg_store.schema)
    await store.close()
    with psycopg.connect(pg_store.url, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "{pg_store.schema}".schema_version VALUES (999)')
    with pytest.raises(MapiError) as caught:
        await PostgresStore.open(pg_store.url, schema=pg_store.schema)
    assert caught.value.hresult == MAPI_E_VERSION
    assert "schema version 999" in caught.value.message


async def test_two_schemas_in_one_database_are_two_stores(pg_store: PgStoreLocation) -> None:
    """store_schema keeps several stores apart in one database."""
    from tests.postgres.test_claims import submit

    first = await PostgresStore.open(pg_store.url, schema=pg_store.schema)
    second = await PostgresStore.open(pg_store.url, schema=pg_store.schema + "_b")
    try:
        await submit(first, 2)
        assert sum((await first.count_by_state()).values()) == 2
        assert await second.count_by_state() == {}
    finally:
        await first.close()
        await second.close()
        with psycopg.connect(pg_store.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{pg_store.schema}_b" CASCADE')

"""Fixtures of the PostgreSQL store's own tests: an open store in a fresh schema."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mapispool.store.postgres import PostgresStore
from tests.servers.postgres import PgStoreLocation


@pytest.fixture
async def pg(pg_store: PgStoreLocation) -> AsyncIterator[PostgresStore]:
    """An open ``PostgresStore`` in this test's own schema."""
    store = await PostgresStore.open(pg_store.url, schema=pg_store.schema)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def pg2(pg_store: PgStoreLocation) -> AsyncIterator[PostgresStore]:
    """A second ``PostgresStore`` on the same schema: another worker's view."""
    store = await PostgresStore.open(pg_store.url, schema=pg_store.schema)
    try:
        yield store
    finally:
        await store.close()

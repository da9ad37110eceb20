"""A profile opens the store it names: ``store = "postgresql://..."`` with its schema."""

from __future__ import annotations

import pytest

from mapispool.profile import Profile, ProfileError
from mapispool.store.postgres import PostgresStore
from tests.servers.postgres import PgStoreLocation


async def test_a_postgres_profile_opens_its_schema(pg_store: PgStoreLocation) -> None:
    profile = Profile.from_toml(
        f'store = "{pg_store.url}"\nstore_schema = "{pg_store.schema}"\n', source="p.toml"
    )
    store = await profile.open_store()
    try:
        assert isinstance(store, PostgresStore)
        assert store.schema == pg_store.schema
        assert await store.count_by_state() == {}
    finally:
        await store.close()


def test_a_postgres_store_has_no_path() -> None:
    """store_path() of a PostgreSQL store is a clear error, never a SQLite file that a
    caller expecting a path would open in its place."""
    profile = Profile.from_toml('store = "postgresql://u@h/db"\n', source="p.toml")
    with pytest.raises(ProfileError, match=r"p\.toml: store: names a PostgreSQL store"):
        profile.store_path()

"""A profile opens the store it names: ``store = "postgresql://..."`` with its schema."""

from __future__ import annotations

from mapispool.profile import Profile
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


def test_a_postgres_store_has_a_local_name_per_url_and_schema() -> None:
    """store_path() of a PostgreSQL store names it on this machine (for what lives next to
    a store, such as a control socket): one per URL and schema, never the URL itself."""
    first = Profile.from_toml('store = "postgresql://u@h/db"\n').store_path()
    again = Profile.from_toml('store = "postgresql://u@h/db"\n').store_path()
    other = Profile.from_toml('store = "postgresql://u@h/db"\nstore_schema = "b"\n').store_path()
    assert first == again != other
    assert "postgresql" not in str(first)

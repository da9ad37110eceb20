"""The test cluster itself: started once per session, reachable on loopback, a schema per
test."""

from __future__ import annotations

import psycopg

from tests.servers.postgres import PgStoreLocation


def test_the_session_cluster_answers_on_loopback(postgres_url: str) -> None:
    """The fixture's URL reaches a PostgreSQL server of version 13 or later."""
    with psycopg.connect(postgres_url) as conn:
        version = conn.info.server_version
    assert version >= 130000


def test_each_test_gets_a_schema_of_its_own(pg_store: PgStoreLocation) -> None:
    """The schema named for this test does not exist yet: the store creates it."""
    with psycopg.connect(pg_store.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (pg_store.schema,)
        ).fetchone()
    assert row == (0,)

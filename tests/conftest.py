"""Shared pytest configuration: server fixtures live in tests/servers/.

The ``store_backend`` fixture runs a spooler-level test once per store backend (issue #12:
every spooler and conformance test runs on SQLite and on PostgreSQL). Its test ids carry
the backend, ``[sqlite]`` or ``[postgres]``. ``MAPISPOOL_TEST_BACKENDS=sqlite`` (or
``postgres``) runs only one of them locally; under ``CI=true`` both always run.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapispool.store.base import Store
from tests.servers._util import in_ci

pytest_plugins = ["tests.servers.fixtures"]

#: The backends a spooler-level test runs on, in this order.
SPOOLER_BACKENDS = ("sqlite", "postgres")
#: Comma-separated subset of ``SPOOLER_BACKENDS`` to run (a developer's shortcut).
BACKENDS_ENV = "MAPISPOOL_TEST_BACKENDS"


def selected_backends() -> tuple[str, ...]:
    """The backends chosen by ``MAPISPOOL_TEST_BACKENDS`` (all when unset or under CI)."""
    raw = os.environ.get(BACKENDS_ENV, "").strip()
    if not raw or in_ci():
        return SPOOLER_BACKENDS
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    return tuple(n for n in SPOOLER_BACKENDS if n in names)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only(reason): a spooler-level test that stays on SQLite because it is about"
        " SQLite itself (its file, its locking, its one-spooler rule), not the spooler",
    )
    raw = os.environ.get(BACKENDS_ENV, "").strip()
    if not raw:
        return
    unknown = sorted({n.strip() for n in raw.split(",") if n.strip()} - set(SPOOLER_BACKENDS))
    if unknown or not selected_backends():
        raise pytest.UsageError(
            f"{BACKENDS_ENV}={raw!r}: unknown backend {', '.join(unknown) or '(none)'};"
            f" write a comma-separated list of {', '.join(SPOOLER_BACKENDS)}, or unset it"
        )


class StoreBackend:
    """Where a test keeps its stores on one backend (``name``: "sqlite" or "postgres").

    ``options(label)`` is the profile's store setting for the store called ``label``: a
    file ``<tmp>/<label>.db`` on SQLite, the session's PostgreSQL URL with a schema of its
    own on PostgreSQL. Every schema handed out is dropped at teardown. Tests that need
    two stores (two users) ask for two labels."""

    def __init__(self, name: str, tmp_path: Path, postgres_url: str | None) -> None:
        self.name = name
        self.tmp_path = tmp_path
        self.postgres_url = postgres_url
        self.schemas: dict[str, str] = {}

    @property
    def is_postgres(self) -> bool:
        return self.name == "postgres"

    def schema(self, label: str = "store") -> str:
        """The PostgreSQL schema of the store ``label`` (made up on first use)."""
        return self.schemas.setdefault(label, f"t_{uuid.uuid4().hex[:12]}")

    def options(self, label: str = "store") -> dict[str, str]:
        """The profile keys (``store`` and, on PostgreSQL, ``store_schema``)."""
        if self.postgres_url is None:
            return {"store": str(self.tmp_path / f"{label}.db")}
        return {"store": self.postgres_url, "store_schema": self.schema(label)}

    def toml(self, label: str = "store") -> str:
        """``options(label)`` as profile TOML lines."""
        return "".join(f'{key} = "{value}"\n' for key, value in self.options(label).items())

    async def open(self, label: str = "store") -> Store:
        """Another handle on the store ``label`` (the caller closes it)."""
        if self.postgres_url is None:
            from mapispool.store.sqlite import SqliteStore

            return await SqliteStore.open(str(self.tmp_path / f"{label}.db"))
        from mapispool.store.postgres import PostgresStore

        return await PostgresStore.open(self.postgres_url, schema=self.schema(label))

    def drop(self) -> None:
        """Drop every schema this test used (PostgreSQL); files go with tmp_path."""
        if self.postgres_url is None or not self.schemas:
            return
        import psycopg

        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self.postgres_url, autocommit=True) as conn,
        ):
            for schema in self.schemas.values():
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=selected_backends())
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    """The store backend of a spooler-level test: each test that takes it runs once on
    SQLite and once on PostgreSQL (one throwaway cluster per session, a schema per store)."""
    name = str(request.param)
    url: Any = request.getfixturevalue("postgres_url") if name == "postgres" else None
    backend = StoreBackend(name, tmp_path, url)
    try:
        yield backend
    finally:
        backend.drop()

"""The Store contract tests run once per backend: the ``store`` fixture is parametrized
over ``BACKENDS``, and each name ``N`` there is a fixture ``N_store`` that yields an open,
empty store of that kind and closes it afterwards.

A new backend is one line: add its name to ``BACKENDS`` and make its ``N_store`` fixture
visible here (``postgres_store`` comes from tests/servers/postgres.py).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mapispool.store.base import Store
from mapispool.store.memory import MemoryStore
from mapispool.store.sqlite import SqliteStore

BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture
async def memory_store() -> AsyncIterator[Store]:
    # a name of its own, so that a test may open a second handle on it by location
    store = await MemoryStore.open(f"memory:{uuid.uuid4().hex}")
    yield store
    await store.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await SqliteStore.open(str(tmp_path / "store.db"))
    yield store
    await store.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> Store:
    """An open, empty store of each backend in turn."""
    backend: Store = request.getfixturevalue(f"{request.param}_store")
    return backend

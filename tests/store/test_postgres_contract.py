"""The Store contract tests (tests/store/test_contract_*.py) run against PostgreSQL.

Every contract module's tests are collected here a second time, with ``store`` bound to
a ``PostgresStore`` in a fresh schema (``postgres_store``); a new contract module is
picked up without a change here. Once ``"postgres"`` is in ``BACKENDS`` of
tests/store/conftest.py this module is redundant and may go.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

from mapispool.store.base import Store

for _info in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if _info.name.startswith("test_contract_"):
        _module = importlib.import_module(f"tests.store.{_info.name}")
        globals().update(
            {name: value for name, value in vars(_module).items() if name.startswith("test_")}
        )


@pytest.fixture
def store(postgres_store: Store) -> Store:
    """Every contract test of this module runs on PostgreSQL."""
    return postgres_store

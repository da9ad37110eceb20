"""The Store contract tests (tests/store/test_contract_*.py) run against PostgreSQL.

The contract modules' tests are collected here a second time with ``store`` bound to a
``PostgresStore`` in a fresh schema (``postgres_store``). Once ``"postgres"`` is in
``BACKENDS`` of tests/store/conftest.py this module is redundant and may go.
"""

from __future__ import annotations

import pytest

from mapispool.store.base import Store
from tests.store.test_contract_actions import *  # noqa: F403
from tests.store.test_contract_bookkeeping import *  # noqa: F403
from tests.store.test_contract_claims import *  # noqa: F403
from tests.store.test_contract_inbound import *  # noqa: F403
from tests.store.test_contract_lock import *  # noqa: F403
from tests.store.test_contract_queue import *  # noqa: F403
from tests.store.test_contract_queue_machine import *  # noqa: F403
from tests.store.test_contract_record import *  # noqa: F403


@pytest.fixture
def store(postgres_store: Store) -> Store:
    """Every contract test of this module runs on PostgreSQL."""
    return postgres_store

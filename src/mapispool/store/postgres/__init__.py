"""The PostgreSQL store (DESIGN §9): many spoolers on one queue. Needs the ``postgres``
extra (psycopg 3): ``pip install 'mapispool[postgres]'``."""

from __future__ import annotations

from .store import DEFAULT_SCHEMA, LEASE, PostgresStore, default_worker_name

__all__ = ["DEFAULT_SCHEMA", "LEASE", "PostgresStore", "default_worker_name"]

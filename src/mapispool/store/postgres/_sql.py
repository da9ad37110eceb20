"""The PostgreSQL store's SQL: named queries from ``queries.sql`` and the numbered schema
migrations in ``sql/NNNN_name.sql``, applied in order under an advisory lock so that
workers starting together migrate once. A store written by a newer mapispool is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from psycopg import AsyncConnection, sql

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_QUERY_HEADER = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    text: str


def migrations() -> list[Migration]:
    """Every migration shipped in ``store/postgres/sql``, in version order."""
    found = []
    for item in resources.files(__package__).joinpath("sql").iterdir():
        match = _MIGRATION_NAME.match(item.name)
        if match:
            found.append(Migration(int(match.group(1)), item.name, item.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("PostgreSQL migrations must be numbered 1..n without gaps")
    return found


@cache
def queries() -> dict[str, str]:
    """The named queries of ``queries.sql`` (each after a ``-- name: NAME`` line)."""
    text = resources.files(__package__).joinpath("queries.sql").read_text("utf-8")
    parts = _QUERY_HEADER.split(text)
    pairs = list(zip(parts[1::2], parts[2::2], strict=True))
    named = {name: body.strip().rstrip(";") for name, body in pairs}
    if len(named) != len(pairs):  # a second query of one name would hide the first
        raise RuntimeError("queries.sql names a query twice")
    return named


def q(name: str) -> str:
    """The query called ``name``."""
    return queries()[name]


class SchemaTooNew(RuntimeError):
    """The store was written by a newer mapispool."""


async def migrate(conn: AsyncConnection[Any], schema: str) -> int:
    """Create ``schema`` if needed and bring it to the latest version; return it. All
    steps commit together with their version rows: a crash leaves the old version."""
    steps = migrations()
    ident = sql.Identifier(schema)
    async with conn.transaction():
        # Workers starting together: one migrates, the others wait and then find it done.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('mapispool-migrate'), 0)")
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        row = await (await conn.execute("SELECT max(version) FROM schema_version")).fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > len(steps):
            raise SchemaTooNew(
                f"the store has schema version {current}, but this mapispool knows only "
                f"{len(steps)}; upgrade mapispool or use another store_schema"
            )
        for step in steps[current:]:
            async with conn.transaction():
                await conn.execute(step.text.encode())
                await conn.execute(
                    "INSERT INTO schema_version (version) VALUES (%s)", (step.version,)
                )
    return len(steps)

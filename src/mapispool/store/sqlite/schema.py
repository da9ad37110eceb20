"""Numbered schema migrations: ``migrations/NNNN_name.sql``, applied in order, tracked in
``PRAGMA user_version``. One loader; a store from an older version opens and migrates,
a store from a newer version is refused with an explanation."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped in ``mapispool/store/sqlite/migrations``, in version order."""
    found: list[Migration] = []
    # Beside this file, as ``queries.sql`` (see there why not importlib.resources).
    for item in Path(__file__).with_name("migrations").iterdir():
        match = _NAME.match(item.name)
        if match:
            found.append(Migration(int(match.group(1)), item.name, item.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


def latest_version() -> int:
    """The schema version this mapispool writes."""
    return len(migrations())


class SchemaTooNew(RuntimeError):
    """The store was written by a newer mapispool."""


def migrate(conn: sqlite3.Connection, *, target: int | None = None) -> int:
    """Bring ``conn``'s schema up to ``target`` (default: latest); return the new version.

    Each migration runs in its own transaction together with the version bump, so a crash
    leaves the store at a whole version."""
    steps = migrations()
    target = len(steps) if target is None else target
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > len(steps):
        raise SchemaTooNew(
            f"the store has schema version {current}, but this mapispool knows only "
            f"{len(steps)}; upgrade mapispool or use another store"
        )
    for step in steps[current:target]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(step.sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step.version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return max(current, target)


def _statements(sql: str) -> list[str]:
    """Split a migration file into statements (our files never put ';' inside strings)."""
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [part.strip() for part in body.split(";") if part.strip()]

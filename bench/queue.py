"""Setting up stores for the benchmarks: a profile, and a queue filled fast (untimed)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mapispool.profile import Profile
from mapispool.store.sqlite import writes
from mapispool.store.sqlite.database import Database
from mapispool.submission import prepare

from .common import message


def profile(store: Path, transports: dict[str, dict[str, Any]], **extra: Any) -> Profile:
    data: dict[str, Any] = {"store": str(store), "send_immediately": False}
    data.update(extra)
    data["transports"] = transports
    return Profile.from_dict(data)


def fill_queue(store_path: Path, contents: Iterable[bytes], *, batch: int = 2000) -> int:
    """Queue messages the way ``Session.submit`` does (same ``prepare``, same
    ``Store.submit``), but with durability off and in big transactions, because this is
    setup and not what is measured. Returns how many were queued."""
    # The SQLite store's own submit, on a connection of its own (setup only: the durable
    # path is measured by the submit benchmark).
    db = Database(store_path, migrate_schema=True)
    conn = db.conn
    conn.execute("PRAGMA synchronous = OFF")
    lifetime = 5 * 24 * 3600.0
    count = 0
    conn.execute("BEGIN")

    from contextlib import contextmanager

    @contextmanager
    def no_tx(
        what: str, *, durable: bool = True
    ) -> Any:  # every submit joins the open batch transaction
        yield conn

    db.tx = no_tx  # type: ignore[method-assign]
    try:
        for raw in contents:
            prepared = prepare(raw, recipients=None, now=datetime.now(UTC))
            now = time.time()
            writes.submit(
                db, prepared.content, prepared.props, prepared.recipients,
                submit_time=now, not_before=None, expires_at=now + lifetime, eight_bit=False,
            )  # fmt: skip
            count += 1
            if count % batch == 0:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
        conn.execute("COMMIT")
    finally:
        db.close()
    return count


def fill_numbered(store_path: Path, n: int, size: int = 2048) -> int:
    return fill_queue(store_path, (message(i, size) for i in range(n)))

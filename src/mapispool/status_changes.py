"""Status-table notifications for sessions: MAPI's Advise on the status table
(``fnevTableModified``), as an async iterator and as a callback.

``AsyncSession.status_changes()`` and ``AsyncSession.advise_status(callback)`` are built
from these functions: on the spooler's own table they follow every change as it happens;
a session that is a daemon's client reads the rows the daemon publishes and reports the
rows that differ.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from .mapi import PR_DISPLAY_NAME, PR_ENTRYID
from .spooler.status import SPOOLER_ROW, StatusRow, StatusTable, status_entry_id

log = logging.getLogger("mapispool.status")


@dataclass(frozen=True)
class StatusChange:
    """One changed status row: ``name`` is the row's transport name (``"spooler"`` for the
    spooler's row) and ``row`` a snapshot of every column after the change."""

    name: str
    row: StatusRow


StatusCallback = Callable[[StatusChange], None]


async def watch_table(table: StatusTable) -> AsyncIterator[StatusChange]:
    """Every change of ``table`` from the first ``__anext__`` on, in the order they happened;
    closing the iterator (or leaving the ``async for``) stops the subscription."""
    async for name, row in table.changes():
        yield StatusChange(name, row)


def advise_table(table: StatusTable, callback: StatusCallback) -> Callable[[], None]:
    """Call ``callback`` synchronously on every change of ``table``; returns the Unadvise
    function (calling it twice is harmless). A callback that raises is logged, and the
    spooler goes on."""
    unsubscribe = table.subscribe(lambda name, row: callback(StatusChange(name, row)))
    done = False

    def unadvise() -> None:
        nonlocal done
        if not done:
            done = True
            unsubscribe()

    return unadvise


async def poll_rows(
    read_rows: Callable[[], Awaitable[Sequence[StatusRow]]], interval: float = 1.0
) -> AsyncIterator[StatusChange]:
    """The changes of a status table read from elsewhere (a daemon): the rows are read every
    ``interval`` seconds and each row that differs from its last reading is reported."""
    seen: dict[bytes, StatusRow] = {row.get(PR_ENTRYID, b""): row for row in await read_rows()}
    while True:
        await asyncio.sleep(interval)
        for row in await read_rows():
            key = row.get(PR_ENTRYID, b"")
            if seen.get(key) != row:
                seen[key] = row
                yield StatusChange(_row_name(row), row)


def _row_name(row: StatusRow) -> str:
    """The name a row has in the spooler's own table: ``"spooler"`` for the spooler's row
    (its display name is "Spooler"), the transport's name for the others."""
    if row.get(PR_ENTRYID) == status_entry_id(SPOOLER_ROW):
        return SPOOLER_ROW
    return str(row.get(PR_DISPLAY_NAME, ""))


def advise_iterator(
    changes: AsyncIterator[StatusChange], callback: StatusCallback
) -> Callable[[], None]:
    """The callback form over an iterator (for sessions whose table lives elsewhere): a
    task on the running loop calls ``callback`` for each change until Unadvise."""

    async def pump() -> None:
        async for change in changes:
            try:
                callback(change)
            except Exception:
                log.exception("status callback failed")

    task = asyncio.get_running_loop().create_task(pump())

    def unadvise() -> None:
        task.cancel()

    return unadvise

"""The status table (IMAPISession::GetStatusTable): the spooler's row and one row per
transport logon, with change notifications to callbacks and async iterators."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ..mapi import (
    MAPI_STATUS,
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    PR_OBJECT_TYPE,
    PR_PROVIDER_DISPLAY,
    PR_RESOURCE_METHODS,
    PR_RESOURCE_TYPE,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    STATUS_AVAILABLE,
    STATUS_FAILURE,
    STATUS_INBOUND_ACTIVE,
    STATUS_INBOUND_ENABLED,
    STATUS_INBOUND_FLUSH,
    STATUS_OFFLINE,
    STATUS_OUTBOUND_ACTIVE,
    STATUS_OUTBOUND_ENABLED,
    STATUS_OUTBOUND_FLUSH,
    STATUSROW_UPDATE,
)

log = logging.getLogger("mapispool.status")

SPOOLER_ROW = "spooler"
#: Columns the spooler computes; a transport's ModifyStatusRow never changes them.
COMPUTED_COLUMNS = (PR_ENTRYID, PR_DISPLAY_NAME, PR_RESOURCE_TYPE, PR_OBJECT_TYPE)

StatusRow = Mapping[int, Any]
RowListener = Callable[[str, StatusRow], None]


def status_entry_id(name: str) -> bytes:
    """The stable ``PR_ENTRYID`` of a status row: the same for a name across processes."""
    return b"MSPLSTAT" + hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()


# The order matters: the first matching phrase describes the row best.
_PHRASES = (
    (STATUS_FAILURE, "Failure"),
    (STATUS_OUTBOUND_ACTIVE, "Sending"),
    (STATUS_INBOUND_ACTIVE, "Receiving"),
    (STATUS_OUTBOUND_FLUSH, "Flushing outbound queue"),
    (STATUS_INBOUND_FLUSH, "Flushing inbound queue"),
    (STATUS_OFFLINE, "Offline"),
)


def describe_status_code(code: int) -> str:
    """A short English status string for a ``PR_STATUS_CODE``, used when a status object
    supplies none (spec §2.15: the spooler supplies a default)."""
    for bit, phrase in _PHRASES:
        if code & bit:
            return phrase
    if code & (STATUS_INBOUND_ENABLED | STATUS_OUTBOUND_ENABLED | STATUS_AVAILABLE):
        return "Available"
    return "Not available"


class StatusTable:
    """Rows by name, in order: the spooler's first, then transports in transport order."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[int, Any]] = {}
        self._explicit_string: dict[str, bool] = {}
        self._listeners: list[RowListener] = []
        self._queues: list[asyncio.Queue[tuple[str, StatusRow]]] = []
        self.dirty = False

    def add_row(
        self,
        name: str,
        *,
        display_name: str,
        provider_display: str,
        resource_type: int,
        resource_methods: int,
        status_code: int = STATUS_AVAILABLE,
    ) -> None:
        """Create a row with every required column."""
        self._rows[name] = {
            PR_ENTRYID: status_entry_id(name),
            PR_DISPLAY_NAME: display_name,
            PR_PROVIDER_DISPLAY: provider_display,
            PR_RESOURCE_TYPE: int(resource_type),
            PR_RESOURCE_METHODS: int(resource_methods),
            PR_STATUS_CODE: int(status_code),
            PR_OBJECT_TYPE: int(MAPI_STATUS),
        }
        self._explicit_string[name] = False
        self._refresh_string(name)
        self._changed(name)

    def remove_row(self, name: str) -> None:
        """Drop a row (at transport logoff)."""
        self._rows.pop(name, None)
        self.dirty = True

    def modify(self, name: str, props: Mapping[int, object], flags: int = 0) -> None:
        """``ModifyStatusRow`` semantics: replace (``flags`` 0) or merge (STATUSROW_UPDATE)."""
        row = self._rows[name]
        if not flags & STATUSROW_UPDATE:
            kept: dict[int, Any] = {tag: row[tag] for tag in COMPUTED_COLUMNS if tag in row}
            row.clear()
            row.update(kept)
            row.setdefault(PR_STATUS_CODE, 0)
            self._explicit_string[name] = False
        for tag, value in props.items():
            if tag in COMPUTED_COLUMNS:
                continue
            row[int(tag)] = value
        if PR_STATUS_STRING in props:
            self._explicit_string[name] = props[PR_STATUS_STRING] is not None
        self._refresh_string(name)
        self._changed(name)

    def _refresh_string(self, name: str) -> None:
        row = self._rows[name]
        if not self._explicit_string.get(name) or row.get(PR_STATUS_STRING) is None:
            row[PR_STATUS_STRING] = describe_status_code(int(row.get(PR_STATUS_CODE, 0)))

    def _changed(self, name: str) -> None:
        self.dirty = True
        snapshot = dict(self._rows[name])
        for listener in list(self._listeners):
            try:
                listener(name, snapshot)
            except Exception:  # a broken listener must not break the spooler
                log.exception("status listener failed")
        for queue in self._queues:
            queue.put_nowait((name, snapshot))

    def row(self, name: str) -> dict[int, Any]:
        """A copy of one row."""
        return dict(self._rows[name])

    def code(self, name: str) -> int:
        """The row's ``PR_STATUS_CODE`` (read after every transport call)."""
        return int(self._rows[name].get(PR_STATUS_CODE, 0))

    def names(self) -> list[str]:
        """Row names in table order."""
        return list(self._rows)

    def rows(self) -> list[dict[int, Any]]:
        """Copies of every row, in table order."""
        return [dict(row) for row in self._rows.values()]

    def find(self, entry_id: bytes) -> str | None:
        """The name of the row with this ``PR_ENTRYID``."""
        for name, row in self._rows.items():
            if row[PR_ENTRYID] == entry_id:
                return name
        return None

    def subscribe(self, listener: RowListener) -> Callable[[], None]:
        """Call ``listener(name, row)`` on every change; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def changes(self) -> AsyncIterator[tuple[str, StatusRow]]:
        """Every change from now on, as ``(row name, row snapshot)``."""
        queue: asyncio.Queue[tuple[str, StatusRow]] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.remove(queue)

"""A stand-in for the spooler's side of the SPI, shared by the imap and pop3 tests.

``MemorySupport`` keeps committed messages, dedupe keys and state in memory, the way the
store keeps them on disk: a new logon over the same ``MemorySupport`` is a restarted
process over the same store. ``drive_flush`` runs the inbound half of the flush protocol
(DESIGN §6 steps) exactly as the spooler does. No tests live here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from mapispool.mapi import (
    FLUSH_DOWNLOAD,
    MAPI_E_DISK_ERROR,
    NOTIFY_END_INBOUND_FLUSH,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    STATUS_INBOUND_FLUSH,
    STATUSROW_UPDATE,
    MapiError,
)
from mapispool.spi import InboundMessage, OutboundMessage, Recipient, Support, TransportLogon


class MemorySupport(Support):
    """In-memory IMAPISupport: committed messages, dedupe keys, JSON state, status row.

    ``fail_on_save`` (1-based) makes that save raise before anything is committed, like
    a process dying in the middle of a batch. ``on_save`` runs after each commit.

    Durability is modelled: a ``save_changes(sync=False)`` commit is ``unsynced`` until
    ``sync()`` (the barrier); ``power_loss()`` forgets the unsynced ones, as a power cut
    would after commits with ``synchronous = NORMAL``.
    """

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self._settings = dict(settings or {})
        self._row: dict[int, object] = {}
        self.messages: list[tuple[str | None, bytes]] = []
        self.keys: set[str] = set()
        self.state: dict[str, str] = {}
        self.saves = 0
        self.fail_on_save: int | None = None
        self.on_save: Callable[[int], None] | None = None
        self.notifications: list[int] = []
        self.unsynced: list[str | None] = []
        self.syncs = 0

    @property
    def name(self) -> str:
        return "in"

    @property
    def settings(self) -> Mapping[str, Any]:
        return self._settings

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger("mapispool.test.inbound")

    def modify_status_row(self, props: Mapping[int, object], flags: int = 0) -> None:
        if flags & STATUSROW_UPDATE:
            self._row.update(props)
        else:
            self._row = dict(props)

    def status_row(self) -> Mapping[int, object]:
        return dict(self._row)

    @property
    def status_string(self) -> str:
        return str(self._row.get(PR_STATUS_STRING, ""))

    @property
    def status_code(self) -> int:
        value = self._row.get(PR_STATUS_CODE, 0)
        return value if isinstance(value, int) else 0

    def spooler_notify(self, flags: int, data: object | None = None) -> None:
        self.notifications.append(flags)

    def status_recips(self, message: OutboundMessage, recipients: Any) -> None:
        del message, recipients
        raise AssertionError("inbound transports report no recipients")

    def has_dedupe_key(self, key: str) -> bool:
        return key in self.keys

    def get_state(self, key: str) -> Any:
        value = self.state.get(key)
        return None if value is None else json.loads(value)

    def set_state(self, key: str, value: Any) -> None:
        self.state[key] = json.dumps(value)

    def sync(self) -> None:
        self.syncs += 1
        self.unsynced.clear()

    def power_loss(self) -> None:
        """Forget every commit no ``sync()`` made durable."""
        lost = set(self.unsynced)
        self.unsynced.clear()
        self.keys -= {k for k in lost if k is not None}
        self.messages = [m for m in self.messages if m[0] not in lost]

    def new_message(self) -> InboundMessage:
        return InboundMessage(
            save=self._save, is_known=self.has_dedupe_key, save_unsynced=self._save_unsynced
        )

    def _save_unsynced(self, message: InboundMessage) -> bytes | None:
        entry_id = self._save(message)
        if entry_id is not None:
            self.unsynced.append(message.dedupe_key)
        return entry_id

    def _save(self, message: InboundMessage) -> bytes | None:
        self.saves += 1
        if self.fail_on_save is not None and self.saves >= self.fail_on_save:
            raise MapiError(MAPI_E_DISK_ERROR, "simulated crash in the save path")
        assert message.content is not None
        if message.dedupe_key is not None and message.dedupe_key in self.keys:
            return None
        if message.dedupe_key is not None:
            self.keys.add(message.dedupe_key)
        self.messages.append((message.dedupe_key, message.content))
        if self.on_save is not None:
            self.on_save(len(self.messages))
        return len(self.messages).to_bytes(4, "big")

    def bodies(self) -> list[bytes]:
        """Committed message contents with line ends normalised to LF."""
        return [content.replace(b"\r\n", b"\n") for _, content in self.messages]


async def drive_flush(logon: TransportLogon, support: MemorySupport, limit: int = 100_000) -> int:
    """The inbound part of FlushQueues as the spooler runs it; returns messages saved.

    Exceptions from ``start_message`` propagate after the end notification.
    """
    await logon.flush_queues(FLUSH_DOWNLOAD)
    saved = 0
    try:
        while support.status_code & STATUS_INBOUND_FLUSH and saved < limit:
            message = support.new_message()
            await logon.start_message(message)
            if not message.saved:
                break
            saved += 1
    finally:
        await logon.transport_notify(NOTIFY_END_INBOUND_FLUSH)
    return saved


def make_message(number: int, *, tag: str = "m", size: int = 0) -> bytes:
    """A small RFC 5322 message with a unique Message-ID and ``size`` bytes of body."""
    body = f"message {number}\n" + ("x" * size + "\n" if size else "")
    return (
        f"From: sender@example.test\nTo: rcpt@example.test\nSubject: {tag} {number}\n"
        f"Message-ID: <{tag}-{number}@example.test>\n\n{body}"
    ).encode()


__all__ = ["MemorySupport", "Recipient", "drive_flush", "make_message"]

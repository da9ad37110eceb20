"""``Pop3Logon``: the asynchronous half of the POP3 transport (IXPLogon for inbound).

A *pass* is one POP3 session: UIDL + LIST, skip UIDLs already committed (no RETR; one
store query for the whole listing), leave messages over ``max_size`` on the server
(reported), RETR the rest in batches on the worker thread and commit each batch in one
store transaction (``start_messages``: ``InboundBatch.save(sync=False)``) while the next
batch is already being retrieved (``start_message`` still hands out one per call). With
``action = "delete"`` a message is DELE'd only after ``Support.sync()`` (the durability
barrier, once per batch) made its commit durable, and the deletions take effect at the
QUIT that ends the pass; if the session dies first, the server keeps them and the next
pass deletes them without downloading them again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ...mapi import (
    FLUSH_DOWNLOAD,
    FORCE_XP_DISCONNECT,
    LOGON_SP_POLL,
    MAPI_E_TOO_BIG,
    NOTIFY_END_INBOUND_FLUSH,
    STATUS_AVAILABLE,
    STATUS_FAILURE,
    STATUS_INBOUND_ACTIVE,
    STATUS_INBOUND_FLUSH,
    STATUS_OFFLINE,
    MapiError,
)
from ...spi import InboundBatch, InboundMessage, Support, TransportLogon
from .._inbound.prefetch import Prefetch
from .._inbound.worker import Worker
from .client import Pop3Connection
from .protocol import Entry, Plan, dedupe_key, plan_pass, take_batch
from .settings import Pop3Settings

#: Upper bound, in bytes, of the messages one batch of RETRs holds in memory (counted
#: by what arrives, not by what LIST said, and never less than one message).
FETCH_BYTES = 32 * 1024 * 1024
#: How many RETR commands go out in one write to a server that announces PIPELINING.
PIPELINE_WINDOW = 32


@dataclass
class _Item:
    entry: Entry
    data: bytes


class Pop3Logon(TransportLogon):
    """Downloads new mail from a POP3 maildrop; see the README (Transports, pop3)."""

    logon_flags = LOGON_SP_POLL

    def __init__(self, support: Support, settings: Pop3Settings) -> None:
        super().__init__(support)
        self.settings = settings
        self.common = settings.common
        self._conn = Pop3Connection(settings, support.logger)
        self._worker = Worker(f"pop3-{support.name}")
        self._plan: Plan | None = None
        self._queue: deque[_Item] = deque()
        self._to_delete: list[int] = []
        self._received = 0
        self._notes: list[str] = []
        # Keys of messages whose body went over max_message_size although LIST said less:
        # left on the server and reported, so that one lying size cannot stop every pass.
        self._too_large: dict[str, int] = {}
        # After a pipelined window went over max_message_size: RETR one by one.
        self._one_by_one = False
        # The next batch, retrieved on the worker thread while the current one commits.
        self._prefetch = Prefetch()

    def address_types(self) -> tuple[str, ...]:
        """Inbound only: no address type is handled."""
        return ()

    async def flush_queues(self, flags: int) -> None:
        """MRXP default, and a fresh session for ``FLUSH_DOWNLOAD`` (a POP3 session only
        sees the maildrop as it was when it began)."""
        if flags & FLUSH_DOWNLOAD and self._plan is not None:
            await self._abandon_pass()
        await super().flush_queues(flags)

    async def transport_notify(self, flags: int, data: object | None = None) -> None:
        """MRXP default; at the end of an inbound flush, end an unfinished session with
        QUIT so that the deletions of committed messages take effect."""
        if flags & NOTIFY_END_INBOUND_FLUSH and self._plan is not None:
            await self._abandon_pass()
        await super().transport_notify(flags, data)

    async def start_message(self, message: InboundMessage) -> None:
        """Deliver the next new message, or return without saving when the pass is over.

        Raises ``MapiError`` on a network, login or server failure (after clearing the
        inbound bits and recording the error in the status row); committed messages stay
        committed, nothing uncommitted is deleted on the server.
        """
        try:
            item = await self._next_item()
            if item is None:
                await self._end_pass()
                return
            message.set_content(item.data)
            message.dedupe_key = item.entry.key
            message.save_changes(sync=False)  # durable before its DELE: _flush_deletes
        except MapiError as error:
            await self._fail(error)
            raise
        if not message.duplicate:
            self._received += 1
        if self.common.action == "delete":
            self._to_delete.append(item.entry.number)

    async def start_messages(self, batch: InboundBatch) -> None:
        """Deliver every message of the next RETR batch in one store transaction, the
        next batch already being retrieved meanwhile; return without saving when the
        pass is over. Errors as ``start_message``."""
        try:
            first = await self._next_item()
            if first is None:
                await self._end_pass()
                return
            items = [first, *self._queue]
            self._queue.clear()
            for item in items:
                message = batch.new_message()
                message.set_content(item.data)
                message.dedupe_key = item.entry.key
            plan = self._plan
            if plan is not None and plan.download:
                self._prefetch.start(lambda: self._load_then_delete(plan))
            await batch.save(sync=False)  # durable before any DELE: _flush_deletes
        except MapiError as error:
            await self._fail(error)
            raise
        self._received += sum(1 for m in batch.saved if not m.duplicate)
        if self.common.action == "delete":
            self._to_delete.extend(item.entry.number for item in items)

    async def _next_item(self) -> _Item | None:
        if self._plan is None:
            await self._begin_pass()
        plan = self._plan
        assert plan is not None
        await self._prefetch.finish()
        if not self._queue and plan.download:
            await self._flush_deletes()
            await self._load_batch(plan)
        return self._queue.popleft() if self._queue else None

    async def _load_batch(self, plan: Plan) -> None:
        """RETR the next batch on the worker thread (one hop for the batch), stopping
        once FETCH_BYTES arrived (LIST sizes may be lies). A message over
        max_message_size fails the pass and is left on the server by the next ones."""
        batch = take_batch(plan.download, self.common.batch_size, FETCH_BYTES)
        items, rest, too_big = await self._worker.run(self._retrieve, batch)
        plan.download[:0] = rest
        if too_big is not None:
            self._too_large[too_big[0].key] = too_big[0].size
            raise too_big[1]
        self._queue.extend(items)

    async def _load_then_delete(self, plan: Plan) -> None:
        """The prefetch: RETR the next batch, then DELE what was committed before (the
        barrier first), while the current batch commits."""
        await self._load_batch(plan)
        await self._flush_deletes()

    def _retrieve(
        self, batch: list[Entry]
    ) -> tuple[list[_Item], list[Entry], tuple[Entry, MapiError] | None]:
        """On the worker thread: RETR the entries of ``batch`` until FETCH_BYTES arrived,
        pipelined in windows when the server allows it; (messages, entries not
        retrieved, the entry that went over max_message_size and its error)."""
        items: list[_Item] = []
        arrived = 0
        pipelined = len(batch) > 1 and not self._one_by_one and self._conn.pipelining()
        index = 0
        while index < len(batch):
            if arrived >= FETCH_BYTES:
                return items, batch[index:], None
            window = self._window(batch, index) if pipelined else batch[index : index + 1]
            out: list[bytes] = []
            try:
                if len(window) == 1:
                    out.append(self._conn.retrieve(window[0].number))
                else:
                    self._conn.retrieve_window([e.number for e in window], out)
            except MapiError as error:
                if error.hresult != MAPI_E_TOO_BIG:
                    raise
                if len(window) == 1:
                    return items, [], (window[0], error)
                # Some size LIST gave was a lie, which one is unknown: one by one from
                # now on, so that the next pass finds the culprit and leaves only it.
                self._one_by_one = True
                raise
            items.extend(_Item(entry, data) for entry, data in zip(window, out, strict=True))
            arrived += sum(len(data) for data in out)
            index += len(window)
        return items, [], None

    def _window(self, batch: list[Entry], start: int) -> list[Entry]:
        """The entries from ``start`` to RETR in one pipelined write: at most
        PIPELINE_WINDOW, and, by the sizes LIST gave, at most half of max_message_size
        together (the window shares one message's budget)."""
        room = self._conn.budget.limits.max_message_size // 2
        window: list[Entry] = []
        total = 0
        for entry in batch[start : start + PIPELINE_WINDOW]:
            if window and total + entry.size > room:
                break
            window.append(entry)
            total += entry.size
        return window

    async def _begin_pass(self) -> None:
        self._received = 0
        self._notes = []
        self._to_delete = []
        self.update_status(
            set_bits=STATUS_INBOUND_ACTIVE, text=f"Checking for new mail on {self.common.host}"
        )
        await self._worker.run(self._conn.connect)
        uidls, sizes = await self._worker.run(self._conn.listing)
        plan = self._plan_for(uidls, sizes)
        if self.common.action == "delete":
            self._to_delete.extend(e.number for e in plan.known)
        for entry in plan.oversize:
            if entry.key in self._too_large:
                note = (
                    f"message {entry.number} (UIDL {entry.uidl}) sent more than "
                    f"max_message_size ({self.settings.max_size} bytes) although LIST said "
                    f"{entry.size}: left on the server"
                )
            else:
                what = await self._worker.run(self._conn.describe, entry.number)
                note = (
                    f"message {what} is {entry.size} bytes, over max_message_size "
                    f"({self.settings.max_size}): left on the server"
                )
            self.support.logger.warning("%s", note)
            self._notes.append(note)
        self._plan = plan
        if plan.download:
            self.update_status(text=f"Downloading {len(plan.download)} message(s)")

    def _plan_for(self, uidls: dict[int, str], sizes: dict[int, int]) -> Plan:
        account = self.common.account_id
        known = self.support.known_dedupe_keys([dedupe_key(account, u) for u in uidls.values()])
        return plan_pass(
            uidls,
            sizes,
            account,
            known.__contains__,
            self.settings.max_size,
            too_large=self._too_large,
        )

    async def _flush_deletes(self) -> None:
        """DELE the committed messages, once their commits are durable."""
        if self._to_delete:
            self.support.sync()
            numbers, self._to_delete = self._to_delete, []
            await self._worker.run(self._conn.delete, numbers)

    async def _end_pass(self) -> None:
        await self._flush_deletes()
        await self._worker.run(self._conn.quit)
        self._plan = None
        text = f"Received {self._received} new message(s) from {self.common.host}"
        if self._notes:
            text += "; " + "; ".join(self._notes)
        self.update_status(
            set_bits=STATUS_AVAILABLE,
            clear_bits=STATUS_INBOUND_ACTIVE | STATUS_OFFLINE | STATUS_FAILURE,
            text=text,
        )

    async def _abandon_pass(self) -> None:
        self._prefetch.drop()
        self._queue.clear()
        try:
            await self._flush_deletes()
            await self._worker.run(self._conn.quit)
        except MapiError as error:
            # Committed messages are safe; the next pass deletes them again.
            self.support.logger.warning("ending the POP3 session failed: %s", error)
            await self._worker.run(self._conn.close)
        self._plan = None
        self.update_status(clear_bits=STATUS_INBOUND_ACTIVE)

    async def _fail(self, error: MapiError) -> None:
        self._prefetch.drop()
        self._queue.clear()
        self._plan = None
        self._to_delete = []
        # No QUIT: deletions of this session are rolled back; the next pass redoes them.
        await self._worker.run(self._conn.close)
        self.support.logger.warning("inbound pass failed: %s", error)
        self.report_health(error, also_clear=STATUS_INBOUND_ACTIVE | STATUS_INBOUND_FLUSH)

    # -- polling, state, logoff --------------------------------------------------------

    async def poll(self) -> int:
        """How many messages wait (unknown UIDLs; with action=delete also committed ones
        still to delete), from a short UIDL session. Never raises: a failure is recorded
        in the status row and counts as 0."""
        if self._plan is not None:
            return max(1, len(self._queue) + len(self._plan.download))
        try:
            await self._worker.run(self._conn.connect)
            try:
                uidls, sizes = await self._worker.run(self._conn.listing)
            finally:
                await self._worker.run(self._conn.quit)
        except MapiError as error:
            self.report_health(error)
            return 0
        plan = self._plan_for(uidls, sizes)
        waiting = len(plan.download)
        if self.common.action == "delete":
            waiting += len(plan.known)
        return waiting

    async def validate_state(self, flags: int) -> None:
        """Open and close a session (or only disconnect, with ``FORCE_XP_DISCONNECT``);
        set ``STATUS_AVAILABLE``, ``STATUS_OFFLINE`` or ``STATUS_FAILURE``."""
        if flags & FORCE_XP_DISCONNECT:
            if self._plan is None:
                await self._worker.run(self._conn.close)
            self.update_status(
                set_bits=STATUS_OFFLINE, clear_bits=STATUS_AVAILABLE, text="Disconnected"
            )
            return
        if self._plan is not None:
            return  # a session is open and working; checking it would disturb the pass
        try:
            await self._worker.run(self._conn.connect)
            await self._worker.run(self._conn.quit)
        except MapiError as error:
            self.report_health(error)
            return
        self.report_health(None, connected_text=f"Connected to {self.common.host}")

    async def logoff(self, flags: int) -> None:
        """QUIT an open session (committing deletions of committed messages), stop the
        worker thread. Never raises."""
        self._prefetch.drop()
        try:
            if self._plan is not None:
                await self._abandon_pass()
            await self._worker.run(self._conn.close)
        except Exception:  # logoff is always accepted (SPI contract)
            self.support.logger.debug("POP3 logoff failed", exc_info=True)
        finally:
            self._worker.close()

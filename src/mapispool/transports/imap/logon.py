"""``ImapLogon``: the asynchronous half of the IMAP transport (IXPLogon for inbound).

A *pass* walks the configured folders once: SELECT, reconcile UIDVALIDITY, list the UIDs
above the floor with their sizes (one ``UID FETCH n:* (RFC822.SIZE)``), leave out those
already committed (one store query per folder), download the rest in batches
(``BODY.PEEK[]``, so reading sets no flag), commit each batch in one store transaction
(``start_messages``: ``InboundBatch.save(sync=False)``) while the next batch is already
being fetched, and apply the server action (``\\Seen``, delete, move) to the committed
UIDs, batched, only after ``Support.sync()`` (the durability barrier) made those commits
durable. ``start_message`` still hands out one message per call. A failure drops what was
fetched but not committed; the next pass fetches it again.

Every call into the ``Support`` (dedupe keys, state, status row) happens on the event
loop; every imapclient call happens on the logon's worker thread.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

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
from .._inbound.state import load_state, save_state
from .._inbound.worker import Worker
from .client import Fetched, ImapConnection
from .settings import ImapSettings
from .sync import (
    Cursor,
    FolderState,
    Item,
    advance_floor,
    byte_bounded,
    dedupe_key,
    fingerprint,
    reconcile,
    state_key,
)

#: Upper bound, in bytes, of the messages one FETCH brings into memory.
FETCH_BYTES = 32 * 1024 * 1024
#: How long ``poll`` waits in IDLE for new mail before it answers "nothing".
IDLE_WAIT = 3.0


class ImapLogon(TransportLogon):
    """Downloads new mail from IMAP folders; see the README (Transports, imap)."""

    logon_flags = LOGON_SP_POLL

    def __init__(self, support: Support, settings: ImapSettings) -> None:
        super().__init__(support)
        self.settings = settings
        self.common = settings.common
        self._conn = ImapConnection(settings, support.logger)
        self._worker = Worker(f"imap-{support.name}")
        self._queue: deque[Item] = deque()
        self._cursor: Cursor | None = None
        self._folders: deque[str] | None = None
        self._received = 0
        self._notes: list[str] = []
        # Keys of messages that went over max_message_size on the wire although
        # RFC822.SIZE said less (left on the server and reported from then on), and of
        # those fetched in a batch that did (fetched one by one until the culprit is known).
        self._too_large: set[str] = set()
        self._fetch_alone: set[str] = set()
        self._left: set[str] = set()  # left on the server as too large: poll skips them
        # The next batch, fetched on the worker thread while the current one commits.
        self._prefetch = Prefetch()

    def address_types(self) -> tuple[str, ...]:
        """Inbound only: no address type is handled."""
        return ()

    # -- the inbound loop ---------------------------------------------------------------

    async def flush_queues(self, flags: int) -> None:
        """MRXP default (set the FLUSH bits), and a fresh pass for ``FLUSH_DOWNLOAD`` so
        that a flush sees mail that arrived after an earlier, unfinished pass."""
        if flags & FLUSH_DOWNLOAD and self._folders is not None:
            await self._abandon_pass()
        await super().flush_queues(flags)

    async def transport_notify(self, flags: int, data: object | None = None) -> None:
        """MRXP default; at the end of an inbound flush, apply the server action to what
        was committed, even if the spooler stopped the loop early."""
        if flags & NOTIFY_END_INBOUND_FLUSH and self._folders is not None:
            await self._abandon_pass()
        await super().transport_notify(flags, data)

    async def start_message(self, message: InboundMessage) -> None:
        """Deliver the next new message, or return without saving when the pass is over.

        Raises ``MapiError`` on a network, login or server failure (after clearing the
        inbound bits and recording the error in the status row); what was committed
        stays committed, the rest is fetched again by the next pass.
        """
        try:
            item = await self._next_item()
            if item is None:
                await self._end_pass()
                return
            message.set_content(item.data)
            message.dedupe_key = item.key
            # Durable at the latest when _apply_actions calls the barrier, before any
            # server action; until then a power loss loses the commit and the server
            # still has the message.
            message.save_changes(sync=False)
        except MapiError as error:
            await self._fail(error)
            raise
        if not message.duplicate:
            self._received += 1
        assert self._cursor is not None
        self._cursor.done.append(item.uid)

    async def start_messages(self, batch: InboundBatch) -> None:
        """Deliver every message of the next FETCH batch in one store transaction, the
        next batch already on the wire meanwhile; return without saving when the pass is
        over. Errors as ``start_message``."""
        try:
            items = await self._next_batch()
            if not items:
                await self._end_pass()
                return
            for item in items:
                message = batch.new_message()
                message.set_content(item.data)
                message.dedupe_key = item.key
            cursor = self._cursor
            assert cursor is not None
            # Pending for the keep-mode floor until committed (the prefetch may move it).
            cursor.committing = [item.uid for item in items]
            if cursor.remaining:
                self._prefetch.start(lambda: self._load_then_act(cursor))
            # Durable at the latest when _apply_actions calls the barrier (see above).
            await batch.save(sync=False)
        except MapiError as error:
            await self._fail(error)
            raise
        self._received += sum(1 for m in batch.saved if not m.duplicate)
        cursor.done.extend(cursor.committing)
        cursor.committing = []

    async def _next_batch(self) -> list[Item]:
        """Every message of the next batch (empty when the pass is over)."""
        first = await self._next_item()
        if first is None:
            return []
        items = [first, *self._queue]
        self._queue.clear()
        return items

    async def _next_item(self) -> Item | None:
        if self._folders is None:
            self._begin_pass()
        assert self._folders is not None
        await self._prefetch.finish()
        while not self._queue:
            cursor = self._cursor
            if cursor is not None and cursor.remaining:
                await self._apply_actions(cursor)
                await self._load_batch(cursor)
                continue
            if cursor is not None:
                await self._apply_actions(cursor)
                self._cursor = None
            if not self._folders:
                return None
            self._cursor = await self._open_folder(self._folders.popleft())
        return self._queue.popleft()

    def _begin_pass(self) -> None:
        self._folders = deque(self.settings.folders)
        self._received = 0
        self._notes = []
        self.update_status(
            set_bits=STATUS_INBOUND_ACTIVE, text=f"Checking for new mail on {self.common.host}"
        )

    async def _end_pass(self) -> None:
        self._folders = None
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
        cursor = self._cursor
        self._cursor = None
        self._folders = None
        if cursor is not None and cursor.done:
            try:
                # The queue still counts as pending here: the floor stays below it.
                await self._apply_actions(cursor)
            except MapiError as error:
                # Committed messages are safe; the next pass applies the action again.
                self.support.logger.warning("server action deferred: %s", error)
        self._queue.clear()
        self.update_status(clear_bits=STATUS_INBOUND_ACTIVE)

    async def _fail(self, error: MapiError) -> None:
        self._prefetch.drop()
        self._queue.clear()
        self._cursor = None
        self._folders = None
        self.support.logger.warning("inbound pass failed: %s", error)
        self.report_health(error, also_clear=STATUS_INBOUND_ACTIVE | STATUS_INBOUND_FLUSH)

    # -- folders and batches -----------------------------------------------------------

    def _key(self, cursor: Cursor, uid: int) -> str:
        return dedupe_key(self.common.account_id, cursor.info.name, cursor.info.uidvalidity, uid)

    def _save_state(self, folder: str, state: FolderState) -> None:
        save_state(self.support, state_key(self.common.account_id, folder), state.to_json())

    async def _open_folder(self, folder: str) -> Cursor:
        await self._worker.run(self._conn.ensure)
        info = await self._worker.run(self._conn.select, folder)
        stored = FolderState.from_json(
            load_state(self.support, state_key(self.common.account_id, folder))
        )
        outcome = reconcile(stored, info.uidvalidity, info.uidnext)
        if outcome.changed:
            note = (
                f"UIDVALIDITY of {folder} changed from {outcome.previous} to "
                f"{info.uidvalidity}: re-baselined by Message-ID and size"
            )
            self.support.logger.warning("%s", note)
            self._notes.append(note)
            self.update_status(text=note)
        if outcome.state != stored:
            self._save_state(folder, outcome.state)
        keep = self.common.action == "keep"
        floor = outcome.state.floor if keep else 0
        sizes = await self._worker.run(self._conn.sizes_above, floor) if info.exists else {}
        cursor = Cursor(info=info, state=outcome.state, remaining=[], sizes=sizes)
        keys = {uid: self._key(cursor, uid) for uid in sorted(sizes)}
        known = self.support.known_dedupe_keys(list(keys.values()))
        for uid, key in keys.items():
            if key in known:
                cursor.done.append(uid)
            else:
                cursor.remaining.append(uid)
        if cursor.remaining:
            self.update_status(text=f"Downloading {len(cursor.remaining)} message(s) from {folder}")
        return cursor

    def _fingerprint_index(self, cursor: Cursor) -> dict[str, str]:
        if cursor.fingerprints is None:
            index: dict[str, str] = {}
            for page in range(cursor.state.fp_batches):
                value = load_state(
                    self.support, state_key(self.common.account_id, cursor.info.name, f"fp:{page}")
                )
                if isinstance(value, dict):
                    index.update({k: v for k, v in value.items() if isinstance(v, str)})
            cursor.fingerprints = index
        return cursor.fingerprints

    async def _rebaseline(self, cursor: Cursor, batch: list[int]) -> list[int]:
        """Of ``batch`` (UIDs from before a UIDVALIDITY change), mark those whose
        fingerprint belongs to a message already committed as done and return the rest,
        leaving out UIDs that no longer exist."""
        heads = await self._worker.run(self._conn.headers, batch)
        index = self._fingerprint_index(cursor)
        rest: list[int] = []
        priors: dict[int, str] = {}
        for uid in batch:
            if uid not in heads:
                continue
            prior = index.get(fingerprint(*heads[uid]))
            if prior is not None:
                priors[uid] = prior
            else:
                rest.append(uid)
        known = self.support.known_dedupe_keys(list(priors.values())) if priors else set()
        for uid, prior in priors.items():
            if prior in known:
                cursor.done.append(uid)
            else:
                rest.append(uid)
        return sorted(rest)

    async def _load_batch(self, cursor: Cursor) -> None:
        batch = cursor.remaining[: self.common.batch_size]
        del cursor.remaining[: len(batch)]
        # Until queued, these UIDs are pending for the keep-mode floor (a failed or
        # dropped prefetch leaves them here: the floor never passes them).
        cursor.in_flight = list(batch)
        until = cursor.state.rebaseline_until
        old = [u for u in batch if u <= until]
        if old:
            kept = set(await self._rebaseline(cursor, old))
            batch = [u for u in batch if u > until or u in kept]
        if not batch:
            cursor.in_flight = []
            return
        sizes = cursor.sizes
        batch = self._leave_too_large(cursor, [u for u in batch if u in sizes], sizes)
        # A UID to fetch alone counts as a full group, so that it gets a FETCH of its own.
        weights = {
            u: FETCH_BYTES if self._key(cursor, u) in self._fetch_alone else sizes[u] for u in batch
        }
        groups = byte_bounded(batch, weights, FETCH_BYTES)
        if not groups:
            cursor.in_flight = []
            return
        # Fetch one memory-bounded group now; the others go back to the front of the line.
        cursor.remaining[:0] = [u for g in groups[1:] for u in g]
        fetched = await self._fetch(cursor, groups[0])
        items = [Item(f.uid, self._key(cursor, f.uid), f.data) for f in fetched]
        # The fingerprints are written before anything is committed: a fingerprint whose
        # key never got committed is ignored by the re-baseline (has_dedupe_key is false).
        page = {
            fingerprint(f.data, f.size): item.key for f, item in zip(fetched, items, strict=True)
        }
        if page:
            number = cursor.state.fp_batches
            save_state(
                self.support,
                state_key(self.common.account_id, cursor.info.name, f"fp:{number}"),
                page,
            )
            cursor.state = replace(cursor.state, fp_batches=number + 1)
            self._save_state(cursor.info.name, cursor.state)
        self._queue.extend(items)
        cursor.in_flight = []

    async def _load_then_act(self, cursor: Cursor) -> None:
        """The prefetch: fetch the next batch, then apply the server action to what was
        committed before (the barrier first), while the current batch commits."""
        await self._load_batch(cursor)
        await self._apply_actions(cursor)

    def _leave_too_large(
        self, cursor: Cursor, batch: list[int], sizes: dict[int, int]
    ) -> list[int]:
        """``batch`` without the messages over ``max_message_size`` (by RFC822.SIZE, or
        by what the server sent earlier), which stay on the server and are reported."""
        limit = self.common.max_message_size
        kept: list[int] = []
        for uid in batch:
            lied = self._key(cursor, uid) in self._too_large
            if sizes[uid] <= limit and not lied:
                kept.append(uid)
                continue
            cursor.skipped.append(uid)
            self._left.add(self._key(cursor, uid))
            said = f"although RFC822.SIZE said {sizes[uid]}" if lied else f"is {sizes[uid]} bytes"
            note = (
                f"message UID {uid} in {cursor.info.name} {said}, over max_message_size "
                f"({limit}): left on the server"
            )
            self.support.logger.warning("%s", note)
            self._notes.append(note)
        return kept

    async def _fetch(self, cursor: Cursor, group: list[int]) -> list[Fetched]:
        """Download ``group``; a message that crosses ``max_message_size`` on the wire is
        remembered (alone in its FETCH: the culprit; else the group is fetched one by
        one next time) before the error ends the pass."""
        try:
            return await self._worker.run(self._conn.bodies, group, FETCH_BYTES)
        except MapiError as error:
            if error.hresult == MAPI_E_TOO_BIG:
                keys = {self._key(cursor, uid) for uid in group}
                if len(group) == 1:
                    self._too_large.update(keys)
                else:
                    self._fetch_alone.update(keys)
            raise

    async def _apply_actions(self, cursor: Cursor) -> None:
        """Make the commits durable (``Support.sync()``), then apply the server action to
        the committed UIDs and move the keep-mode floor."""
        if not cursor.done:
            return
        uids = sorted(set(cursor.done))
        action = self.common.action
        self.support.sync()
        # Taken now: a batch committed while the action below runs (the prefetch runs it
        # beside the commit) stays in ``done`` for the next action.
        acted = set(uids)
        cursor.done = [u for u in cursor.done if u not in acted]
        if action == "keep":
            await self._worker.run(self._conn.mark_seen, uids)
        elif action == "delete":
            await self._worker.run(self._conn.delete, uids)
        else:
            assert self.settings.move_to is not None
            await self._worker.run(self._conn.move, uids, self.settings.move_to)
        if action == "keep":
            pending = [
                *cursor.remaining,
                *(item.uid for item in self._queue),
                *cursor.skipped,
                *cursor.in_flight,
                *cursor.committing,
            ]
            floor = advance_floor(cursor.state.floor, uids, pending)
            if floor != cursor.state.floor:
                cursor.state = replace(cursor.state, floor=floor)
                self._save_state(cursor.info.name, cursor.state)

    # -- polling, state, logoff --------------------------------------------------------

    async def poll(self) -> int:
        """How many messages wait (a lower bound); 0 when none. Checks each folder with
        SELECT + UID SEARCH above the floor; when nothing waits and the server offers
        IDLE (and ``idle = true``), waits up to ``IDLE_WAIT`` seconds for new mail.
        Never raises: a failure is recorded in the status row and counts as 0."""
        if self._queue or self._cursor is not None:
            return max(1, len(self._queue))
        try:
            return await self._count_waiting()
        except MapiError as error:
            self.report_health(error)
            return 0

    async def _count_waiting(self) -> int:
        await self._worker.run(self._conn.ensure)
        keep = self.common.action == "keep"
        waiting = 0
        for folder in self.settings.folders:
            info = await self._worker.run(self._conn.select, folder)
            state = FolderState.from_json(
                load_state(self.support, state_key(self.common.account_id, folder))
            )
            if state.uidvalidity != info.uidvalidity:
                waiting += info.exists
                continue
            uids = await self._worker.run(self._conn.uids_above, state.floor if keep else 0)
            keys = {
                u: dedupe_key(self.common.account_id, folder, info.uidvalidity, u) for u in uids
            }
            uids = [u for u in uids if keys[u] not in self._left]
            if keep and uids:
                known = self.support.known_dedupe_keys([keys[u] for u in uids])
                uids = [u for u in uids if keys[u] not in known]
            waiting += len(uids)
        if waiting or not self.settings.idle or "IDLE" not in self._conn.capabilities:
            return waiting
        if len(self.settings.folders) > 1:
            await self._worker.run(self._conn.select, self.settings.folders[0])
        news = await self._worker.run(self._conn.idle_for_news, IDLE_WAIT)
        return 1 if news else 0

    async def validate_state(self, flags: int) -> None:
        """Reconnect (or, with ``FORCE_XP_DISCONNECT``, disconnect) and set
        ``STATUS_AVAILABLE``, ``STATUS_OFFLINE`` or ``STATUS_FAILURE`` with a status
        string. Records failures in the row instead of raising."""
        if flags & FORCE_XP_DISCONNECT:
            await self._worker.run(self._conn.close)
            self.update_status(
                set_bits=STATUS_OFFLINE, clear_bits=STATUS_AVAILABLE, text="Disconnected"
            )
            return
        try:
            await self._worker.run(self._conn.ensure)
        except MapiError as error:
            self.report_health(error)
            return
        self.report_health(None, connected_text=f"Connected to {self.common.host}")

    async def logoff(self, flags: int) -> None:
        """LOGOUT and stop the worker thread. Never raises."""
        self._prefetch.drop()
        self._queue.clear()
        self._cursor = None
        self._folders = None
        try:
            await self._worker.run(self._conn.close)
        except Exception:  # logoff is always accepted (SPI contract)
            self.support.logger.debug("IMAP logout failed", exc_info=True)
        finally:
            self._worker.close()

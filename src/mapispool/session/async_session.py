"""``AsyncSession``: the client side of mapispool (DESIGN §6), as coroutines.

It talks to the store through the ``Store`` interface and to the spooler through the
spooler's public methods. A session of another kind, the client of a spooler that another
process runs (``mapispool serve``), lives above this package and plugs in through
``register_client_mode``: this package imports neither ``app`` nor ``daemon``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.message import Message
from typing import Any

from ..mapi import (
    MAPI_E_BUSY,
    MAPI_E_NO_SUPPORT,
    MAPI_E_NOT_FOUND,
    MAPI_E_UNABLE_TO_ABORT,
    MapiError,
)
from ..profile import Profile
from ..spi import InboundMessage
from ..spooler.engine import Spooler
from ..spooler.status import SPOOLER_ROW, StatusRow
from ..status_changes import StatusCallback, StatusChange, advise_table, watch_table
from ..store import (
    PAGE,
    Event,
    InvalidTransition,
    QueueAction,
    QueueEntry,
    QueueState,
    SqliteStore,
    Store,
)
from ..store.types import QUEUE_ACTIONS, Submission, action_applies, action_starts
from ..submission import RecipientSpec, prepare
from .folder import AsyncFolder
from .profiles import load_profile
from .rules import not_allowed
from .status import AsyncStatus

log = logging.getLogger("mapispool.session")

_STORE_ONLY = (
    "this session was opened on the store alone (open()), so no spooler runs in it; "
    "use logon() to flush (it reaches a running 'mapispool serve' too)"
)

#: ``attach(profile, store)``: a session that is the client of the spooler another
#: process runs on ``store``, or None when that spooler cannot be reached that way.
ClientMode = Callable[[Profile, Store], Awaitable["AsyncSession | None"]]
_client_modes: list[ClientMode] = []


def register_client_mode(attach: ClientMode) -> None:
    """Let ``AsyncSession.logon`` become a client of a spooler another process runs.

    When the store's spooler lock is held by another process, ``logon`` tries each
    registered ``attach`` in order of registration and returns the first session one
    gives; with none (or all giving None) the logon fails with ``MAPI_E_BUSY``.
    ``mapispool.daemon.attached`` registers the client of ``mapispool serve`` when the
    ``mapispool`` package is imported. Registering the same callable twice is a no-op."""
    if attach not in _client_modes:
        _client_modes.append(attach)


class AsyncSession:
    """A logged-on session. Use ``await AsyncSession.logon()`` (or ``open()``).

    ``mode`` says where its spooler is: ``"spooler"`` (started in this process by
    ``logon``), ``"client"`` (a running ``mapispool serve``'s: ``logon`` attached to it,
    see ``daemon.attached``) or ``"store"`` (none: ``open``)."""

    def __init__(
        self, profile: Profile, store: Store, spooler: Spooler, *, spooler_running: bool = True
    ) -> None:
        self.profile = profile
        self.store = store
        self.spooler = spooler
        self.spooler_running = spooler_running
        self._closed = False

    @classmethod
    async def logon(
        cls,
        profile: Profile | str | os.PathLike[str] | None = None,
        *,
        attach: bool = True,
        worker: str = "",
    ) -> AsyncSession:
        """Load the profile, open the store and start the spooler (transports log on).

        When another process runs the store's spooler and it is a ``mapispool serve`` of
        this user (its control socket answers), the session is that daemon's client
        (``mode == "client"``) unless ``attach`` is False; other spoolers (a running
        ``mapispool flush``, another program's session) give ``MAPI_E_BUSY``.

        On a store that many workers share (PostgreSQL) the spooler registers as the
        worker ``worker`` (default ``host:pid``) beside the others."""
        loaded = load_profile(profile)
        store = await loaded.open_store()
        spooler = Spooler(loaded, store, worker)
        try:
            await spooler.start()
        except MapiError as exc:
            busy = exc.hresult == MAPI_E_BUSY
            client = await cls._attach(loaded, store) if busy and attach else None
            if client is None:
                await store.close()
                raise
            return client
        except BaseException:
            await store.close()
            raise
        return cls(loaded, store, spooler)

    @staticmethod
    async def _attach(profile: Profile, store: Store) -> AsyncSession | None:
        """The first client-mode session a registered ``attach`` gives, else None."""
        for attach in list(_client_modes):
            session = await attach(profile, store)
            if session is not None:
                return session
        return None

    @classmethod
    def open(cls, profile: Profile | str | os.PathLike[str] | None = None) -> AsyncSession:
        """A session on the store alone: no spooler runs and no transport logs on.

        Enough to submit, list and manage the queue and read folders while another process
        (a daemon) runs the spooler, or before one starts: submitted mail waits in the
        store. ``spooler_status().flush_queues`` is not available on such a session."""
        loaded = load_profile(profile)
        if loaded.store_is_postgres:
            raise MapiError(
                MAPI_E_NO_SUPPORT,
                "a PostgreSQL store is opened over the network: use "
                "'await AsyncSession.open_async(profile)' (Session.open does)",
            )
        store = SqliteStore(loaded.store_path())
        return cls(loaded, store, Spooler(loaded, store), spooler_running=False)

    @classmethod
    async def open_async(
        cls, profile: Profile | str | os.PathLike[str] | None = None
    ) -> AsyncSession:
        """``open`` for any store, the PostgreSQL one included (opening it connects)."""
        loaded = load_profile(profile)
        if not loaded.store_is_postgres:
            return cls.open(loaded)
        store = await loaded.open_store()
        return cls(loaded, store, Spooler(loaded, store), spooler_running=False)

    @property
    def mode(self) -> str:
        """``"spooler"``, ``"client"`` or ``"store"`` (see the class docstring)."""
        return "spooler" if self.spooler_running else "store"

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.logoff()

    async def submit(
        self,
        message: Message | bytes,
        *,
        recipients: Sequence[RecipientSpec] | None = None,
        deferred_send_time: datetime | None = None,
        delete_after_submit: bool = False,
        sender: str | None = None,
        props: Mapping[int, Any] | None = None,
    ) -> bytes:
        """Queue a message; returns its entry id. Recipients are ``"TYPE:address"`` or bare
        addresses (SMTP); None takes them from the To/Cc/Bcc headers; ``props`` are extra
        MAPI properties stored with it. The message and its queue entry are written in
        one transaction, fsync'd before this returns."""
        item = self.prepare_submission(
            message,
            recipients=recipients,
            deferred_send_time=deferred_send_time,
            delete_after_submit=delete_after_submit,
            sender=sender,
            props=props,
        )
        entry_id = await self.store.submit(
            item.content,
            item.props,
            item.recipients,
            submit_time=item.submit_time,
            not_before=item.not_before,
            expires_at=item.expires_at,
            eight_bit=item.eight_bit,
            canonical=item.canonical,
        )
        await self.announce_submitted(entry_id)
        return entry_id

    def prepare_submission(
        self,
        message: Message | bytes,
        *,
        recipients: Sequence[RecipientSpec] | None = None,
        deferred_send_time: datetime | None = None,
        delete_after_submit: bool = False,
        sender: str | None = None,
        props: Mapping[int, Any] | None = None,
    ) -> Submission:
        """What ``submit`` hands to the store: the message checked and in canonical form
        (``submission.prepare``), parsed once, with its times. Pure computation, safe on
        any thread (the synchronous ``Session.submit`` runs it on the caller's)."""
        now = datetime.now(UTC)
        prepared = prepare(
            message,
            recipients=recipients,
            now=now,
            deferred_send_time=deferred_send_time,
            delete_after_submit=delete_after_submit,
            sender=sender,
        )
        if props:
            prepared.props.update(props)
        submit_time = now.timestamp()
        not_before = deferred_send_time.timestamp() if deferred_send_time is not None else None
        return Submission(
            prepared.content,
            prepared.props,
            prepared.recipients,
            submit_time,
            not_before,
            submit_time + self.profile.retry.lifetime,
            eight_bit=prepared.eight_bit,
            canonical=True,
        )

    def announces_in_process(self) -> bool:
        """True when ``announce_submitted`` only pokes the spooler of this process (no
        I/O): a caller on another thread may then store a message itself and wake the
        spooler with ``spooler.queue_changed`` on the session's loop, without awaiting."""
        return type(self).announce_submitted is AsyncSession.announce_submitted

    async def announce_submitted(self, entry_id: bytes) -> None:
        """Tell what sends this session's mail that ``entry_id`` was queued, so that it
        looks at the queue now rather than at its next wake-up: the in-process spooler
        here, the daemon in client mode. ``submit`` calls it; so does the daemon for a
        client that wrote a message to the store itself."""
        self.spooler.queue_changed()

    async def status_table(self) -> list[StatusRow]:
        """Every status row: the spooler's first, then one per transport in order."""
        return list(self.spooler.status.rows())

    def status_changes(self) -> AsyncIterator[StatusChange]:
        """MAPI's Advise on the status table: every row change from the iterator's first
        step on, as ``StatusChange(name, row)``; leave the ``async for`` to stop."""
        return watch_table(self.spooler.status)

    def advise_status(self, callback: StatusCallback) -> Callable[[], None]:
        """The callback form of ``status_changes`` (called on the session's loop);
        returns the Unadvise function."""
        return advise_table(self.spooler.status, callback)

    async def saved_status_table(self) -> list[StatusRow]:
        """The status table as the store's spooler last saved it (a spooler in another
        process saves it every second or so); empty when none ever ran."""
        return list(await self.store.load_status_rows())

    def on_newmail(self, listener: Callable[[InboundMessage], None]) -> None:
        """Call ``listener`` with each message the spooler stores in the Inbox
        (MAPI's new-mail notification); it runs on the session's loop and must not block."""
        self.spooler.on_newmail(listener)

    def spooler_status(self) -> AsyncStatus:
        """The spooler's status object (where Send/Receive is asked for)."""
        if not self.spooler_running:
            return AsyncStatus(self.spooler, SPOOLER_ROW, unavailable=_STORE_ONLY)
        return AsyncStatus(self.spooler, SPOOLER_ROW)

    def open_status(self, entry_id: bytes) -> AsyncStatus:
        """The status object of the row with this ``PR_ENTRYID``."""
        name = self.spooler.status.find(bytes(entry_id))
        if name is None:
            raise MapiError(
                MAPI_E_NOT_FOUND, f"no status row with entry id {bytes(entry_id).hex()}"
            )
        return AsyncStatus(self.spooler, name)

    def folder(self, name: str) -> AsyncFolder:
        return AsyncFolder(self.store, name)

    async def folder_names(self) -> list[str]:
        """The store's folders (Outbox, Inbox, Sent Items, Deleted Items)."""
        return list(self.store.folder_names())

    async def outgoing_queue(self, *, include_finished: bool = False) -> list[QueueEntry]:
        """Every submitted message not yet finished, in submit order; with
        ``include_finished`` also the sent, failed and cancelled ones still recorded."""
        return await all_entries(self.store, include_finished=include_finished)

    async def queue_events(self, entry_id: bytes) -> list[Event]:
        """The history of one queued message (submitted, attempts, outcomes), oldest first."""
        return list(await self.store.events(entry_id))

    async def queue_entry(self, entry_id: bytes) -> QueueEntry:
        return await self.store.queue_entry(entry_id)

    # -- queue management ---------------------------------------------------------------

    async def cancel(self, entry_id: bytes) -> None:
        """Cancel a queued message (moved to Deleted Items). A message a transport deferred
        is taken back with ``NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE``."""
        entry = await self.store.queue_entry(entry_id)
        if entry.state is QueueState.IN_FLIGHT:
            raise MapiError(MAPI_E_UNABLE_TO_ABORT, "the message is being sent right now")
        await self._take_back_parked(entry)
        async with self._explained(entry_id, QueueAction.CANCEL):
            await self.store.act(entry_id, QueueAction.CANCEL)

    async def hold(self, entry_id: bytes) -> None:
        """Keep a queued message from being sent until ``release``. A message a transport
        deferred is taken back first (``NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE``)."""
        entry = await self.store.queue_entry(entry_id)
        await self._take_back_parked(entry)
        async with self._explained(entry_id, QueueAction.HOLD):
            await self.store.act(entry_id, QueueAction.HOLD)

    async def release(self, entry_id: bytes) -> None:
        """Let a held message go again."""
        async with self._explained(entry_id, QueueAction.RELEASE):
            await self.store.act(entry_id, QueueAction.RELEASE)
        self.spooler.queue_changed()

    async def retry(self, entry_id: bytes) -> None:
        """Send again now: a message waiting for its backoff, its deferred send time, a
        person's hold or a transport that deferred it (taken back first, with
        ``NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE``), an uncertain one, or a failed
        one (its failed recipients are tried again, with a new lifetime)."""
        entry = await self.store.queue_entry(entry_id, with_recipients=False)
        if action_applies(QueueAction.RETRY, entry.state):
            await self._take_back_parked(entry)
        async with self._explained(entry_id, QueueAction.RETRY):
            await self.store.act(
                entry_id, QueueAction.RETRY, expires_at=time.time() + self.profile.retry.lifetime
            )
        await self.spooler.retry_requested(entry_id)

    async def purge(self, entry_id: bytes) -> None:
        """Delete a message that is not being sent, for good. A message a transport
        deferred is taken back first (``NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE``)."""
        entry = await self.store.queue_entry(entry_id)
        if entry.state is QueueState.IN_FLIGHT:
            raise MapiError(MAPI_E_UNABLE_TO_ABORT, "the message is being sent right now")
        await self._take_back_parked(entry)
        await self.store.act(entry_id, QueueAction.PURGE)

    async def _take_back_parked(self, entry: QueueEntry) -> None:
        """Before a hold, purge or cancel of a message a transport holds (END_DONT_RESEND):
        tell that transport, ``NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE``. The
        person's request goes ahead whatever the transport answers."""
        if entry.state is QueueState.PARKED and entry.parked_by:
            await self.spooler.take_back_parked(entry.parked_by, entry.entry_id)

    @contextlib.asynccontextmanager
    async def _explained(self, entry_id: bytes, action: QueueAction) -> AsyncIterator[None]:
        """A queue action the message's state does not allow becomes a one-line
        ``MapiError`` (MAPI_E_INVALID_PARAMETER) saying what the state is and where the
        action applies (``store.types.QUEUE_ACTIONS``), never the store's internal
        ``InvalidTransition``."""
        try:
            yield
        except InvalidTransition:
            state = (await self.store.queue_entry(entry_id, with_recipients=False)).state
            _starts, new, _event = QUEUE_ACTIONS[action]
            raise not_allowed(entry_id, action.value, state, new, action_starts(action)) from None

    async def logoff(self) -> None:
        """Stop the spooler (a flush in progress ends cleanly) and close the store."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.spooler_running:
                await self.spooler.shutdown()
        finally:
            await self.store.close()


async def all_entries(store: Store, *, include_finished: bool = False) -> list[QueueEntry]:
    """Every queue entry (unfinished ones only unless ``include_finished``), in submit
    order, read page by page."""
    states = list(QueueState) if include_finished else None
    entries: list[QueueEntry] = []
    while True:
        after = (entries[-1].submit_time, entries[-1].seq) if entries else None
        page = await store.queue_page(states=states, after=after)
        entries += page
        if len(page) < PAGE:
            return entries

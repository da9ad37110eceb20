"""The data of one in-memory store (``memory.py``) and the writes that take more than a
line: applying an ``Outcome``, repairing after a stop (``recover``), a person's queue
actions. The caller holds ``Data.lock``.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..mapi import MAPI_E_INVALID_PARAMETER, MapiError
from .base import FOLDERS
from .memory_rows import (
    MessageRow,
    QueueRow,
    RecipientRow,
    Waiters,
    check_folder,
    check_move,
    copy_props,
    copy_recipient,
    not_found,
)
from .model import (
    FINISHED_STATES,
    Event,
    InvalidTransition,
    QueueState,
    Recipient,
    StaleClaim,
    recovered_state,
)
from .types import QUEUE_ACTIONS, Delivery, Outcome, QueueAction, Recorded, action_applies

_S = QueueState
#: States that make a message due (or due at its time): reaching one wakes the spooler.
WAKING = frozenset({_S.QUEUED, _S.RETRY, _S.DEFERRED})


@dataclass
class Data:
    """Everything one in-memory store holds; store objects opened on the same name share
    it (the way processes share a store file), under ``lock``."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    messages: dict[bytes, MessageRow] = field(default_factory=dict)
    events: dict[bytes, list[Event]] = field(default_factory=dict)
    dedupe: dict[str, int | None] = field(default_factory=dict)
    transport_state: dict[tuple[str, str], str] = field(default_factory=dict)
    status_rows: dict[str, list[str]] = field(default_factory=dict)
    folder_ids: dict[str, bytes] = field(
        default_factory=lambda: {name: uuid.uuid4().bytes for name in FOLDERS}
    )
    waiters: Waiters = field(default_factory=Waiters)
    spooler: Any = None  # the store object holding the spooler lock, or None
    next_seq: int = 1
    next_token: int = 1

    def new_message(
        self,
        folder: str,
        content: bytes,
        props: Mapping[int, Any],
        recipients: Sequence[Recipient],
        *,
        eight_bit: bool = False,
        canonical: bool = False,
    ) -> MessageRow:
        """Add a message to ``folder`` (a valid name) and return its row."""
        row = MessageRow(
            seq=self.next_seq,
            entry_id=uuid.uuid4().bytes,
            folder=folder,
            props=copy_props(props),
            content=bytes(content),
            recipients=[RecipientRow(copy_recipient(r, i)) for i, r in enumerate(recipients)],
            eight_bit=eight_bit,
            canonical=canonical,
        )
        self.next_seq += 1
        self.messages[row.entry_id] = row
        return row

    def file(self, item: Delivery, now: float) -> bytes:
        row = self.new_message(item.folder, item.content, item.props, item.recipients)
        self.log(row.entry_id, "received", None, item.folder, now)
        return row.entry_id

    def go(
        self,
        row: MessageRow,
        q: QueueRow,
        new: QueueState,
        folder: str | None,
        *,
        delete: bool = False,
    ) -> None:
        """Set the state (already checked); a finished message moves to ``folder`` when
        given, or is deleted with its queue entry for ``delete``."""
        q.state, q.handoff = new, False
        if new is not QueueState.IN_FLIGHT:
            q.token, q.lease_until = None, None
        if new in FINISHED_STATES:
            q.not_before = None
            if delete:
                del self.messages[row.entry_id]
            elif folder is not None:
                row.folder = folder

    def row(self, entry_id: bytes, *, queued: bool = False) -> MessageRow:
        """The message ``entry_id`` (with a queue entry, for ``queued``), or NOT_FOUND."""
        row = self.messages.get(entry_id)
        if row is None or (queued and row.queue is None):
            where = "in the outgoing queue" if queued else "in the store"
            raise not_found(f"no message with entry id {entry_id.hex()} {where}")
        return row

    def queued(self, entry_id: bytes, token: int | None = None) -> tuple[MessageRow, QueueRow]:
        """A submitted message and its queue entry; ``StaleClaim`` when ``token`` is
        given and is not its current claim's (the message may be gone with it)."""
        found = self.messages.get(entry_id)
        if token is not None and (found is None or found.queue is None):
            raise StaleClaim(entry_id, token)
        row = self.row(entry_id, queued=True)
        assert row.queue is not None
        if token is not None and row.queue.token != token:
            raise StaleClaim(entry_id, token)
        return row, row.queue

    def apply(self, o: Outcome, now: float) -> Recorded:
        """One outcome, checked whole before anything changes (the savepoint of the
        durable stores: a refused outcome leaves no trace)."""
        row, q = self.queued(o.entry_id, o.token)
        old = q.state
        if o.state is not None:
            check_move(o.entry_id, old, o.state, o.expect)
            if o.state in FINISHED_STATES and o.folder is not None:
                check_folder(o.folder)
        by_row = {r.recipient.row_id: r for r in row.recipients}
        for given in o.recipients:
            if given.row_id in by_row:
                by_row[given.row_id].recipient = copy_recipient(given)
        for result in o.recipient_outcomes:
            for row_id in result.row_ids:
                if row_id in by_row:
                    r = by_row[row_id]
                    r.outcome, r.transport = result.outcome, result.transport
                    r.report_text = result.report_text
                    r.recipient.responsibility = True
        if o.declined is not None and o.declined not in q.declined:
            q.declined.append(o.declined)
        for note in o.notes:
            self.log(o.entry_id, note.kind, note.transport, note.detail, now)
        if o.state is not None:
            q.not_before, q.parked_by = o.not_before, o.parked_by
            # A sent message carries no stale error; a failed one keeps why it failed.
            if o.state is QueueState.SENT:
                q.last_error = None
            elif o.error is not None:
                q.last_error = o.error
            q.attempts += int(o.count_attempt)
            self.go(row, q, o.state, o.folder, delete=o.delete)
            finished = o.state in FINISHED_STATES
            detail = o.error if o.error is not None else (o.folder if finished else None)
            self.log(o.entry_id, o.event or o.state.value, o.transport, detail, now)
            if o.state in WAKING:
                self.waiters.wake()
        report_ids = []
        for report in o.reports:
            for row_id in report.ndr_rows:
                if row_id in by_row:
                    by_row[row_id].ndr_sent = True
            q.delay_notified = q.delay_notified or report.delay_notice
            if report.content is not None:
                report_ids.append(self.file(Delivery("Inbox", report.content, report.props), now))
        return Recorded(old=old, report_ids=tuple(report_ids))

    def recover(self, parked: bool, now: float | None, at: float) -> dict[str, int]:
        """``Store.recover``: in-flight messages (whose lease ended before ``now``, if
        given) back to queued, or uncertain when their hand-over began and a recipient
        has no outcome; with ``parked``, parked ones queued again."""
        counts = {"requeued": 0, "uncertain": 0, "unparked": 0}
        for row in list(self.messages.values()):
            q = row.queue
            if q is None:
                continue
            if q.state is _S.PARKED:
                if not parked:
                    continue
            elif q.state is not _S.IN_FLIGHT or (
                now is not None and (q.lease_until is None or q.lease_until >= now)
            ):
                continue
            pending = sum(1 for r in row.recipients if r.outcome is None)
            new, key, why = recovered_state(q.state.value, q.handoff, pending)
            self.go(row, q, new, None)
            q.parked_by, q.last_error = None, why
            self.log(row.entry_id, f"recovered-{new.value}", None, why, at)
            counts[key] += 1
        if counts["requeued"] or counts["unparked"]:
            self.waiters.wake()
        return counts

    def act(
        self, entry_id: bytes, action: QueueAction, expires_at: float | None, now: float
    ) -> QueueState:
        """``Store.act``: a person's action, checked against the state machine."""
        row, q = self.queued(entry_id)
        old = q.state
        if action is QueueAction.PURGE:
            if not action_applies(action, old):
                raise InvalidTransition(
                    f"{entry_id.hex()}: cannot {action.value} a message that is {old.value}"
                )
            del self.messages[entry_id]
            self.log(entry_id, "deleted", None, None, now)
            return old
        if not action_applies(action, old):
            raise InvalidTransition(
                f"{entry_id.hex()}: cannot {action.value} a message that is {old.value}"
            )
        _starts, new, event = QUEUE_ACTIONS[action]
        check_move(entry_id, old, new, None)
        if action is QueueAction.RETRY and old is _S.FAILED:
            if expires_at is None:
                raise MapiError(
                    MAPI_E_INVALID_PARAMETER, "retrying a failed message needs expires_at"
                )
            for r in row.recipients:
                if r.outcome == "failed":
                    r.outcome = r.transport = r.report_text = None
                    r.ndr_sent, r.recipient.responsibility = False, False
            q.expires_at, q.due_at, q.declined, q.delay_notified = expires_at, now, [], False
        if new is _S.QUEUED:
            q.not_before = None
        self.go(row, q, new, "Deleted Items")
        q.parked_by = None  # as the other stores: an action ends a transport's hold
        self.log(entry_id, event, None, None, now)
        if new is _S.QUEUED:
            self.waiters.wake()
        return old

    def log(
        self, entry_id: bytes, kind: str, transport: str | None, detail: str | None, at: float
    ) -> None:
        self.events.setdefault(entry_id, []).append(Event(at, kind, transport, detail))


#: Stores opened by name share their data while any of them is open.
REGISTRY: weakref.WeakValueDictionary[str, Data] = weakref.WeakValueDictionary()

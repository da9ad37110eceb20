"""The rows of the in-memory store (``memory.py``): a message, its recipients and its queue
entry, as mutable records, and their conversion to the plain values the ``Store``
interface hands out.

Every value that crosses the interface is a copy made through the same JSON codec the
SQLite store uses (``codec``), so a caller that mutates what it got back changes nothing
in the store, and property values come back with the types a real store gives them (a
tuple comes back as a list, a lone surrogate is made storable).
"""

from __future__ import annotations

from asyncio import AbstractEventLoop, Future
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..mapi import MAPI_E_NOT_FOUND, PR_SUBJECT, MapiError, RecipientType
from .base import FOLDERS
from .codec import dump_props, load_props
from .model import (
    TRANSITIONS,
    InvalidTransition,
    QueueEntry,
    QueueState,
    Recipient,
    StoredMessage,
)


def copy_props(props: Mapping[int, Any]) -> dict[int, Any]:
    """A deep copy of ``props`` as a store would give it back."""
    return load_props(dump_props(props))


def copy_recipient(r: Recipient, row_id: int | None = None) -> Recipient:
    """A copy of ``r`` (with ``row_id`` when given); responsibility travels in its props."""
    return Recipient(
        address=r.address,
        addrtype=r.addrtype,
        recipient_type=RecipientType(int(r.recipient_type)),
        display_name=r.display_name,
        props=copy_props(r.props),
        row_id=r.row_id if row_id is None else row_id,
    )


def not_found(what: str) -> MapiError:
    return MapiError(MAPI_E_NOT_FOUND, what)


def check_folder(name: str) -> str:
    """``name`` when it is a folder's, else ``MAPI_E_NOT_FOUND`` naming the folders."""
    if name not in FOLDERS:
        raise not_found(f"no folder called {name!r}; use one of {FOLDERS}")
    return name


def check_move(entry_id: bytes, old: QueueState, new: QueueState, expect: Any = None) -> None:
    """Refuse (``InvalidTransition``) what the state machine or ``expect`` does not allow."""
    if (expect is not None and old not in expect) or new not in TRANSITIONS[old]:
        raise InvalidTransition(f"{entry_id.hex()}: cannot go from {old.value} to {new.value}")


def is_due(q: QueueRow, now: float, ignore_backoff: bool = False) -> bool:
    """Queued; deferred or retrying with its time come (every retry with
    ``ignore_backoff``, as FLUSH_FORCE asks)."""
    waits_until = q.not_before or 0.0
    return (
        q.state is QueueState.QUEUED
        or (q.state is QueueState.DEFERRED and waits_until <= now)
        or (q.state is QueueState.RETRY and (ignore_backoff or waits_until <= now))
    )


@dataclass
class RecipientRow:
    """A recipient and what became of it (``Store.recipient_outcomes``)."""

    recipient: Recipient
    outcome: str | None = None
    transport: str | None = None
    report_text: str | None = None
    ndr_sent: bool = False

    @property
    def pending(self) -> bool:
        """No outcome and no transport responsible: still to be offered."""
        return self.outcome is None and not self.recipient.responsibility


@dataclass
class QueueRow:
    """A message's queue entry, with the claim that holds it, if any."""

    state: QueueState
    submit_time: float
    not_before: float | None
    expires_at: float
    due_at: float
    attempts: int = 0
    last_error: str | None = None
    parked_by: str | None = None
    declined: list[str] = field(default_factory=list)
    handoff: bool = False
    delay_notified: bool = False
    token: int | None = None  # the current claim's fencing token
    lease_until: float | None = None
    claimed_from: QueueState = QueueState.QUEUED


@dataclass
class MessageRow:
    """A message in a folder, with its queue entry when it was submitted."""

    seq: int
    entry_id: bytes
    folder: str
    props: dict[int, Any]
    content: bytes
    recipients: list[RecipientRow]
    eight_bit: bool = False
    #: Stored in canonical form (``Store.submit(canonical=True)``).
    canonical: bool = False
    queue: QueueRow | None = None

    @property
    def order(self) -> tuple[float, int]:
        """The message's place in submit order (``QueuePosition``)."""
        assert self.queue is not None
        return (self.queue.submit_time, self.seq)

    def pending_types(self) -> list[str]:
        return [r.recipient.addrtype for r in self.recipients if r.pending]

    def entry(self, *, with_recipients: bool = True) -> QueueEntry:
        """This message's ``QueueEntry`` (it must have a queue entry)."""
        q = self.queue
        assert q is not None
        recipients = tuple(r.recipient.one_off for r in self.recipients) if with_recipients else ()
        return QueueEntry(
            entry_id=self.entry_id,
            state=q.state,
            submit_time=q.submit_time,
            not_before=q.not_before,
            expires_at=q.expires_at,
            attempts=q.attempts,
            last_error=q.last_error,
            parked_by=q.parked_by,
            declined=tuple(q.declined),
            subject=str(self.props.get(PR_SUBJECT, "")),
            size=len(self.content),
            recipients=recipients,
            seq=self.seq,
        )

    def stored(self, *, content: bool = True) -> StoredMessage:
        return StoredMessage(
            entry_id=self.entry_id,
            folder=self.folder,
            props=copy_props(self.props),
            content=self.content if content else b"",
            recipients=tuple(copy_recipient(r.recipient) for r in self.recipients),
            seq=self.seq,
        )

    def recipient_copies(self) -> list[Recipient]:
        return [copy_recipient(r.recipient) for r in self.recipients]


class Waiters:
    """Wake-ups for ``wait_for_work`` across event loops and threads: a generation number
    that every wake-up increases, and the futures of the callers waiting right now."""

    def __init__(self) -> None:
        self.generation = 0
        self._futures: list[tuple[AbstractEventLoop, Future[None]]] = []

    def add(self, loop: AbstractEventLoop) -> Future[None]:
        future: Future[None] = loop.create_future()
        self._futures.append((loop, future))
        return future

    def discard(self, future: Future[None]) -> None:
        self._futures = [(lp, f) for lp, f in self._futures if f is not future]

    def wake(self) -> None:
        self.generation += 1
        futures, self._futures = self._futures, []
        for loop, future in futures:
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: Future[None]) -> None:
    if not future.done():
        future.set_result(None)

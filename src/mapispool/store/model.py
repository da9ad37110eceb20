"""What the store holds, as plain values: recipients, queue states and their legal transitions,
queue entries, stored messages and events (DESIGN §7)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..mapi import MAPI_TO, PR_RESPONSIBILITY, HResult, MapiError, RecipientType


@dataclass
class Recipient:
    """One recipient of a message (a row of the MAPI recipient table).

    ``address`` and ``addrtype`` form the one-off address (``SMTP:bob@example.com``);
    ``props`` holds the recipient's MAPI properties and is mutable: a transport takes
    responsibility for a recipient by setting ``PR_RESPONSIBILITY`` (or ``responsibility``)
    to ``True`` in ``submit_message``.

    Responsibility means "this transport handles this recipient in this attempt", never
    "delivered": the attempt's end decides (``TransportLogon.end_message``). Partial
    delivery in an attempt that does not end well is reported explicitly with
    ``Support.delivered_recips``.
    """

    address: str
    addrtype: str = "SMTP"
    recipient_type: RecipientType = MAPI_TO
    display_name: str = ""
    props: dict[int, Any] = field(default_factory=dict)
    row_id: int = 0

    @property
    def responsibility(self) -> bool:
        """``PR_RESPONSIBILITY``: true for a recipient some transport handles (or has
        handled): not one to offer to this transport."""
        return bool(self.props.get(PR_RESPONSIBILITY, False))

    @responsibility.setter
    def responsibility(self, value: bool) -> None:
        self.props[PR_RESPONSIBILITY] = bool(value)

    @property
    def one_off(self) -> str:
        """The MAPI one-off form, ``"TYPE:address"``."""
        return f"{self.addrtype}:{self.address}"


class QueueState(StrEnum):
    """The persisted state of one submitted message (DESIGN §7)."""

    QUEUED = "queued"  # ready to go
    DEFERRED = "deferred"  # client "send later": waits until not_before
    IN_FLIGHT = "in_flight"  # offered to a transport right now
    RETRY = "retry"  # waits for its backoff (not_before) after a temporary failure
    PARKED = "parked"  # a transport deferred it (END_DONT_RESEND) until NOTIFY_SENTDEFERRED
    HELD = "held"  # a person put it on hold
    UNCERTAIN = "uncertain"  # died after the data was handed over: reported, never resent
    SENT = "sent"
    FAILED = "failed"  # every recipient is done and none was delivered, or it expired
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Terminal states: the spooler never touches the message again by itself."""
        return self in FINISHED_STATES


FINISHED_STATES = frozenset({QueueState.SENT, QueueState.FAILED, QueueState.CANCELLED})

#: States from which the scheduler may pick a message once ``not_before`` has passed.
DUE_STATES = (QueueState.QUEUED, QueueState.DEFERRED, QueueState.RETRY)

_S = QueueState
#: Every legal transition; the store refuses anything else (a bug, never a user error).
TRANSITIONS: Mapping[QueueState, frozenset[QueueState]] = {
    _S.QUEUED: frozenset({_S.IN_FLIGHT, _S.HELD, _S.CANCELLED, _S.FAILED, _S.SENT}),
    _S.DEFERRED: frozenset({_S.QUEUED, _S.IN_FLIGHT, _S.HELD, _S.CANCELLED}),
    _S.RETRY: frozenset({_S.QUEUED, _S.IN_FLIGHT, _S.HELD, _S.CANCELLED, _S.FAILED, _S.SENT}),
    _S.IN_FLIGHT: frozenset(
        {_S.QUEUED, _S.RETRY, _S.PARKED, _S.UNCERTAIN, _S.SENT, _S.FAILED, _S.CANCELLED}
    ),
    _S.PARKED: frozenset({_S.QUEUED, _S.IN_FLIGHT, _S.CANCELLED, _S.HELD}),
    _S.HELD: frozenset({_S.QUEUED, _S.CANCELLED}),
    _S.UNCERTAIN: frozenset({_S.QUEUED, _S.SENT, _S.CANCELLED}),
    _S.FAILED: frozenset({_S.QUEUED}),
    _S.SENT: frozenset(),
    _S.CANCELLED: frozenset(),
}


def initial_placement(
    submit_time: float, not_before: float | None, expires_at: float
) -> tuple[QueueState, float, float]:
    """Where ``Store.submit`` puts a new message: its state (deferred when ``not_before``
    lies after the submit time, else queued), when it is first due, and its expiry moved
    by the deferral, so that a message sent later keeps its whole lifetime."""
    deferred = not_before is not None and not_before > submit_time
    due_at = not_before if deferred and not_before is not None else submit_time
    state = QueueState.DEFERRED if deferred else QueueState.QUEUED
    # The lifetime first: ``due_at + lifetime`` is exactly the expiry a caller computes
    # from the due time, where ``expires_at + due_at - submit_time`` may be one unit in
    # the last place short of it (the sum passes 2**31 seconds and drops a bit).
    return state, due_at, due_at + (expires_at - submit_time)


def recovered_state(state: str, handoff: bool, pending: int) -> tuple[QueueState, str, str]:
    """What ``Store.recover`` makes of a stranded message: its new state, the count it
    goes to (``requeued``, ``uncertain`` or ``unparked``) and why, from its state, whether
    its hand-over had begun and how many recipients have no recorded outcome."""
    if state == QueueState.PARKED.value:
        return QueueState.QUEUED, "unparked", "the spooler restarted"
    if handoff and not pending:
        # Every recipient's outcome was committed before the crash: nothing is unknown,
        # and the spooler finishes the message (Spooler.start).
        why = "the spooler stopped after recording every recipient's outcome"
        return QueueState.QUEUED, "requeued", why
    if handoff:
        why = "the spooler stopped after the message was handed over"
        return QueueState.UNCERTAIN, "uncertain", why
    return QueueState.QUEUED, "requeued", "the spooler stopped before the message was handed over"


class InvalidTransition(MapiError):
    """A state change the state machine does not allow (``MAPI_E_CALL_FAILED``): a bug
    when the spooler asks for it, a person's request that does not apply otherwise."""

    def __init__(self, message: str) -> None:
        super().__init__(HResult.MAPI_E_CALL_FAILED, message)


class StaleClaim(MapiError):
    """A write carried the fencing token of a claim that is no longer current: its lease
    ran out and the message was claimed again, released, or repaired by ``recover``.
    The writer's attempt no longer owns the message; nothing was written."""

    def __init__(self, entry_id: bytes, token: int | None) -> None:
        super().__init__(
            HResult.MAPI_E_OBJECT_CHANGED,
            f"message {entry_id.hex()}: claim {token} is no longer current (its lease "
            "ran out or it was released); the attempt's outcome was not recorded",
        )
        self.entry_id = entry_id
        self.token = token


@dataclass(frozen=True)
class QueueEntry:
    """One row of the outgoing queue, in submit order."""

    entry_id: bytes
    state: QueueState
    submit_time: float
    not_before: float | None
    expires_at: float
    attempts: int
    last_error: str | None
    parked_by: str | None
    declined: tuple[str, ...]
    subject: str
    size: int
    recipients: tuple[str, ...] = ()
    seq: int = 0  # the message's row id: breaks ties in submit order, pages the queue

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (entry id in hex)."""
        return {
            "entry_id": self.entry_id.hex(),
            "state": self.state.value,
            "submit_time": self.submit_time,
            "not_before": self.not_before,
            "expires_at": self.expires_at,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "parked_by": self.parked_by,
            "subject": self.subject,
            "size": self.size,
            "recipients": list(self.recipients),
        }


@dataclass(frozen=True)
class StoredMessage:
    """A message in a folder: its entry id, MAPI properties, recipients and content."""

    entry_id: bytes
    folder: str
    props: Mapping[int, Any]
    content: bytes
    recipients: tuple[Recipient, ...] = field(default_factory=tuple)
    seq: int = 0  # the message's row number: pages a folder (``Store.messages``)

    @property
    def message_class(self) -> str:
        from ..mapi import PR_MESSAGE_CLASS

        return str(self.props.get(PR_MESSAGE_CLASS, "IPM.Note"))

    @property
    def subject(self) -> str:
        from ..mapi import PR_SUBJECT

        return str(self.props.get(PR_SUBJECT, ""))


@dataclass(frozen=True)
class Event:
    """One line of a message's history."""

    at: float
    kind: str
    transport: str | None
    detail: str | None

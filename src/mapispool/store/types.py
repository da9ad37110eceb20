"""The values that cross the ``Store`` interface in batches (DESIGN §7): the recipient,
a claim on a queued message, the outcome of an attempt, an inbound delivery, a report
to file, the route a claim follows and the queue actions a person may take.

Plain data: nothing here touches a database, so every store implementation (SQLite,
in memory, PostgreSQL) shares them, and the layers above build them without knowing
which store they talk to.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..mapi import MapiError
from .model import QueueEntry, QueueState, Recipient

__all__ = [
    "Claim",
    "Delivery",
    "Note",
    "Outcome",
    "PURGE_FROM",
    "QUEUE_ACTIONS",
    "QueueAction",
    "Recipient",
    "RecipientOutcome",
    "Recorded",
    "Report",
    "Route",
    "Submission",
    "TransportList",
    "action_applies",
    "action_starts",
    "order_by_sender",
    "sender_matches",
]


#: Transports in order, each with what it lists: ``Route.order`` (address types) and
#: ``Route.senders`` (sender patterns) share this shape.
TransportList = tuple[tuple[str, tuple[str, ...]], ...]


def sender_matches(patterns: Collection[str], sender: str) -> bool:
    """True when ``sender`` is one of ``patterns`` (lower-case addresses or ``*@domain``);
    case is ignored, and ``*@example.com`` matches exactly that domain."""
    address = sender.strip().lower()
    if "@" not in address:
        return False
    domain = address.rpartition("@")[2]
    return any(p == address or (p.startswith("*@") and p[2:] == domain) for p in patterns)


def order_by_sender(
    order: Sequence[tuple[str, tuple[str, ...]]], sender: str | None, senders: TransportList
) -> list[tuple[str, tuple[str, ...]]]:
    """``order`` as it applies to a message from ``sender`` (the ``senders`` rule of
    transport sections, as msmtp's ``--from`` matching and Postfix's
    ``sender_dependent_relayhost_maps``): the transports whose ``senders`` match first,
    then those without a list, then the rest (so that a sender no list matches still has
    a transport), each group in transport order. Unchanged without ``senders`` or sender."""
    if not senders or not sender:
        return list(order)
    lists = dict(senders)
    matched = [t for t in order if t[0] in lists and sender_matches(lists[t[0]], sender)]
    open_ = [t for t in order if t[0] not in lists]
    rest = [t for t in order if t not in matched and t not in open_]
    return matched + open_ + rest


@dataclass(frozen=True)
class Route:
    """Which recipients a claiming transport gets: ``order`` is every logged-on
    transport in transport order with the address types it accepts (``"*"`` = any).
    A pending recipient goes to the first transport in ``order`` that accepts its
    address type and has not declined the message (MAPI_E_NOT_ME).

    ``senders`` lists the transports that take mail only from some senders, with their
    lower-case patterns (addresses or ``*@domain``). When it is not empty, the order for
    a message is ``for_sender(its PR_SENDER_EMAIL_ADDRESS)``: a store's ``claim`` must
    read each candidate's envelope sender (it needs nothing else from the props)."""

    transport: str
    order: TransportList
    senders: TransportList = ()

    def for_sender(self, sender: str | None) -> Route:
        """This route as it applies to a message from ``sender`` (``order_by_sender``)."""
        if not self.senders or not sender:
            return self
        order = tuple(order_by_sender(self.order, sender, self.senders))
        return Route(self.transport, order, self.senders)

    def owner(self, addrtype: str, declined: Collection[str] = ()) -> str | None:
        """The transport a pending recipient of type ``addrtype`` goes to, or None."""
        for name, types in self.order:
            if name not in declined and ("*" in types or addrtype in types):
                return name
        return None

    def takes(self, pending_types: Collection[str], declined: Collection[str] = ()) -> bool:
        """True when at least one pending recipient of a message goes to ``transport``."""
        return any(self.owner(t, declined) == self.transport for t in pending_types)


@dataclass
class Claim:
    """A queued message claimed for one attempt by one transport (``Store.claim``).

    While the lease runs (``lease_until``, renewed by ``Store.renew``) nobody else claims
    the message; its queue state is ``in_flight``. ``token`` is the fencing token: every
    write that acts on the claim (``mark_handoff``, ``record``, ``renew``, ``release``)
    carries it, and the store refuses it once the claim was lost (the lease ran out and
    someone else claimed the message, or ``recover`` ran), so a worker that stalled can
    never overwrite a newer attempt. ``content`` holds the message when it is no bigger
    than the claim's ``inline_limit``; otherwise it is None and ``Store.open_content``
    streams it. ``recipients`` are all of the message's recipients, in row order, with
    their responsibility as stored."""

    entry: QueueEntry
    props: dict[int, Any]
    recipients: list[Recipient]
    content: bytes | None
    token: int
    lease_until: float
    eight_bit: bool = False
    #: True when the content was stored in canonical form (``Store.submit``): CRLF line
    #: ends, no Bcc field, and ``eight_bit`` exact. False for a message stored by an older
    #: version, whose content must be sent the careful way.
    canonical: bool = False
    #: The state the message was claimed from (``release`` puts it back there).
    claimed_from: QueueState = QueueState.QUEUED

    @property
    def entry_id(self) -> bytes:
        return self.entry.entry_id


@dataclass(frozen=True)
class RecipientOutcome:
    """The fate of some recipients in one attempt: ``outcome`` is ``"delivered"`` or
    ``"failed"`` (a failed one gets its NDR from ``Report``)."""

    row_ids: tuple[int, ...]
    outcome: str
    transport: str | None = None
    report_text: str | None = None


@dataclass(frozen=True)
class Report:
    """A report (NDR, delay notice, delivery report) about a message, filed in the Inbox
    in the same transaction that remembers it was sent: ``ndr_rows`` get their
    ``ndr_sent`` mark, ``delay_notice`` sets the message's delay-notified mark. A
    ``content`` of None records the marks without filing a message."""

    content: bytes | None
    props: Mapping[int, Any] = field(default_factory=dict)
    ndr_rows: tuple[int, ...] = ()
    delay_notice: bool = False


@dataclass(frozen=True)
class Note:
    """One line for a message's history (``Store.events``)."""

    kind: str
    transport: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Outcome:
    """Everything one attempt (or one spooler decision) changes about one message, for
    ``Store.record``, which applies many of them in one transaction.

    Applied in this order: ``recipients`` (responsibility and properties saved),
    ``recipient_outcomes``, ``declined`` (added to the transports that answered
    MAPI_E_NOT_ME), ``notes``, the state change to ``state`` (None: no state change),
    then ``reports``. The state change is checked against the state machine and
    ``expect``; it sets ``not_before``, ``parked_by`` (both cleared when None), the last
    error (kept when ``error`` is None; cleared when the new state is sent: a sent
    message has no last error), counts an attempt with ``count_attempt``, clears
    the hand-over mark and logs the event ``event`` (default: the new state's name) with
    ``transport`` and, as detail, ``error`` (for a finished state without error: the
    folder). Going to a finished state moves the message to ``folder`` (Sent Items,
    Deleted Items, Outbox) when given, or deletes it (queue entry, recipients and
    content) with ``delete``; both are ignored otherwise. ``token`` fences the write to
    the claim that produced it (None for a decision not tied to a claim: the spooler's
    expiry, settling leftovers)."""

    entry_id: bytes
    state: QueueState | None = None
    token: int | None = None
    expect: tuple[QueueState, ...] | None = None
    not_before: float | None = None
    error: str | None = None
    parked_by: str | None = None
    count_attempt: bool = False
    event: str | None = None
    transport: str | None = None
    folder: str | None = None
    delete: bool = False
    recipients: Sequence[Recipient] = ()
    recipient_outcomes: Sequence[RecipientOutcome] = ()
    declined: str | None = None
    notes: Sequence[Note] = ()
    reports: Sequence[Report] = ()


@dataclass(frozen=True)
class Recorded:
    """What ``Store.record`` did with one ``Outcome``: the state before the change
    (``old``), the entry ids of the reports filed, or the error that refused this one
    outcome (``InvalidTransition``, a stale token, an unknown message), which left the
    others in the batch untouched."""

    old: QueueState | None = None
    report_ids: tuple[bytes, ...] = ()
    error: MapiError | None = None

    def check(self) -> Recorded:
        """Raise ``error`` if there is one; else return self."""
        if self.error is not None:
            raise self.error
        return self


@dataclass(frozen=True)
class Delivery:
    """One message to file (received mail, a generated message) for ``Store.deliver``:
    stored in ``folder`` atomically with ``dedupe_key`` unless that key is stored."""

    folder: str
    content: bytes
    props: Mapping[int, Any] = field(default_factory=dict)
    dedupe_key: str | None = None
    recipients: Sequence[Recipient] = ()


@dataclass(frozen=True)
class Submission:
    """The arguments of one ``Store.submit``, as one value (a store that batches
    submissions queues these)."""

    content: bytes
    props: Mapping[int, Any]
    recipients: Sequence[Recipient]
    submit_time: float
    not_before: float | None
    expires_at: float
    eight_bit: bool = False
    canonical: bool = False


class QueueAction(StrEnum):
    """What a person may do to a queued message (``Store.act``); where each applies is
    ``QUEUE_ACTIONS`` (and ``PURGE_FROM``), the one table every store and the layers above
    use."""

    HOLD = "hold"  # queued, deferred, retry or parked -> held
    RELEASE = "release"  # held -> queued
    RETRY = "retry"  # retry, deferred, parked, held, uncertain, failed -> queued now
    CANCEL = "cancel"  # any unfinished state but in_flight -> cancelled, to Deleted Items
    PURGE = "purge"  # removed for good, with its message, in any state but in_flight


_S = QueueState
#: A person's actions (``Store.act``, PURGE apart): the states each may start from, the
#: state it goes to, and its event. The contract (README "queue", ``Store.act``): a
#: message being handed to a server (in flight) is never cancelled, held or purged, only
#: what waits can be; "retry" sends now anything that waits for something (its backoff,
#: its deferred send time, the transport that parked it, a person's hold, a decision
#: about an uncertain hand-over) or that failed (reopened with a new lifetime); a
#: finished message (sent, failed, cancelled) is not cancelled, only purged.
QUEUE_ACTIONS: Mapping[QueueAction, tuple[frozenset[QueueState], QueueState, str]] = {
    QueueAction.HOLD: (frozenset({_S.QUEUED, _S.DEFERRED, _S.RETRY, _S.PARKED}), _S.HELD, "held"),
    QueueAction.RELEASE: (frozenset({_S.HELD}), _S.QUEUED, "released"),
    QueueAction.RETRY: (
        frozenset({_S.RETRY, _S.DEFERRED, _S.PARKED, _S.HELD, _S.UNCERTAIN, _S.FAILED}),
        _S.QUEUED,
        "retry-requested",
    ),
    QueueAction.CANCEL: (
        frozenset({_S.QUEUED, _S.DEFERRED, _S.RETRY, _S.PARKED, _S.HELD, _S.UNCERTAIN}),
        _S.CANCELLED,
        "cancelled",
    ),
}

#: The states ``QueueAction.PURGE`` applies to: all but in flight.
PURGE_FROM: frozenset[QueueState] = frozenset(QueueState) - {_S.IN_FLIGHT}


def action_applies(action: QueueAction, state: QueueState) -> bool:
    """Whether a person's ``action`` applies to a message in ``state`` (the one table)."""
    if action is QueueAction.PURGE:
        return state in PURGE_FROM
    return state in QUEUE_ACTIONS[action][0]


def action_starts(action: QueueAction) -> frozenset[QueueState]:
    """The states ``action`` applies to, in ``QueueState`` order of definition."""
    return PURGE_FROM if action is QueueAction.PURGE else QUEUE_ACTIONS[action][0]

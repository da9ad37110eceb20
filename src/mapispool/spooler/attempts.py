"""The values of one offer: what it ended in (``Result``, ``Offered``) and the
bookkeeping of one submit/end pair (``Attempt``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..spi import OutboundMessage, Recipient
from ..store import QueueEntry, StaleClaim
from .handles import LogonHandle

log = logging.getLogger("mapispool.spooler")


def printable(text: str) -> str:
    """``text`` made safe to store and show: characters that cannot be encoded (lone
    surrogates from a reply decoded with surrogateescape) become backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def lost_claim(entry_id: bytes, transport: str, refused: StaleClaim) -> Result:
    """The store refused an attempt's outcome (``refused``: its claim is no longer
    current): another worker took the message over, after this one's lease ran out or a
    repair. The attempt's result is dropped, never retried by this worker and never
    shown as an error (the other worker's attempt is the one that counts); a warning
    says so."""
    log.warning(
        "message %s: the outcome of its attempt on %s was dropped: another worker has the "
        "message now (claim %s was taken over)", entry_id.hex(), transport, refused.token,
    )  # fmt: skip
    return Result.LOST


class Result(Enum):
    """What one offer of a message to a transport ended in."""

    NOTHING = "nothing"  # the transport had no recipient of this message
    SENT = "sent"  # the attempt delivered its recipients (others may remain)
    DECLINED = "declined"  # MAPI_E_NOT_ME, or it took none of its recipients
    RETRY = "retry"
    PARKED = "parked"
    UNCERTAIN = "uncertain"
    CANCELLED = "cancelled"
    FAILED = "failed"
    #: The claim was lost (another worker took the message over): the attempt's result
    #: was refused by the store and dropped; the message is the other worker's now.
    LOST = "lost"


@dataclass(frozen=True)
class Offered:
    """The result of ``OutboundRunner.offer``: the outcome, the recipients reported failed
    in this attempt, the message size, and how many recipients the attempt handled.

    ``finished`` is True only when the message is known to have left the queue for good
    (sent whole, cancelled, every recipient done): it can never be offered again, so a
    flush need not remember it. False when unsure: ``Result.SENT`` also means a hand-over
    that left recipients for other transports."""

    outcome: Result
    failed: int = 0
    size: int = 0
    handled: int = 0
    finished: bool = False


@dataclass
class Attempt:
    """The bookkeeping of one submit/end pair."""

    handle: LogonHandle
    entry: QueueEntry
    message: OutboundMessage
    mine: list[Recipient]
    failed_rows: set[int]
    #: The message's properties as stored (the transport may change ``message.props``).
    stored_props: dict[int, Any]
    #: Recipients reported with ``delivered_recips`` (their outcome is recorded already).
    delivered_rows: set[int] = field(default_factory=set)
    #: The fencing token of the claim the attempt runs under (``Claim.token``): every
    #: write of the attempt's outcome carries it, so that the store refuses it once
    #: another worker has taken the message over (DESIGN §9).
    token: int | None = None
    #: Set when the attempt's outcome finished the message (``Offered.finished``).
    finished: bool = False

    def offered(self, outcome: Result) -> Offered:
        """The attempt's result as ``OutboundRunner.offer`` returns it (a cancelled
        message is finished whichever path cancelled it)."""
        finished = self.finished or outcome is Result.CANCELLED
        return Offered(outcome, len(self.failed_rows), self.entry.size, len(self.mine), finished)

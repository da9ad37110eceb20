"""The values of one offer: what it ended in (``Result``, ``Offered``) and the
bookkeeping of one submit/end pair (``Attempt``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..spi import OutboundMessage, Recipient
from ..store import QueueEntry
from .handles import LogonHandle


def printable(text: str) -> str:
    """``text`` made safe to store and show: characters that cannot be encoded (lone
    surrogates from a reply decoded with surrogateescape) become backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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


@dataclass(frozen=True)
class Offered:
    """The result of ``OutboundRunner.offer``: the outcome, the recipients reported failed
    in this attempt, the message size, and how many recipients the attempt handled."""

    outcome: Result
    failed: int = 0
    size: int = 0
    handled: int = 0


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

"""How the session explains a queue action that the message's state does not allow."""

from __future__ import annotations

from collections.abc import Collection

from ..mapi import MAPI_E_INVALID_PARAMETER, MapiError
from ..store import TRANSITIONS, QueueState


def not_allowed(
    entry_id: bytes,
    action: str,
    state: QueueState,
    new: QueueState,
    expect: Collection[QueueState] | None,
) -> MapiError:
    """The error for a queue action the message's state does not allow, e.g. ``cannot
    hold message 3fa2...: it is sent (hold applies to messages that are queued, deferred,
    retry or parked)``."""
    where = [
        s.value.replace("_", " ")
        for s in QueueState
        if new in TRANSITIONS[s] and s is not QueueState.IN_FLIGHT
        and (expect is None or s in expect)
    ]  # fmt: skip
    now = "being sent right now" if state is QueueState.IN_FLIGHT else state.value
    states = where[0] if len(where) == 1 else f"{', '.join(where[:-1])} or {where[-1]}"
    return MapiError(
        MAPI_E_INVALID_PARAMETER,
        f"cannot {action} message {entry_id.hex()}: it is {now}"
        f" ({action} applies to messages that are {states})",
    )

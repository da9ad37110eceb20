"""The outgoing queue as operations: list, show one message with its history, and the
actions a person takes on a message (cancel, hold, release, retry, purge)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..mapi import MAPI_E_INVALID_PARAMETER, MAPI_E_NOT_FOUND, MapiError
from ..session import AsyncSession
from ..store.types import QueueAction
from .types import Emit, Params

#: The actions a person may name, from the store's one table (``store.types.QueueAction``).
QUEUE_ACTIONS = tuple(action.value for action in QueueAction)


async def resolve_entry(session: AsyncSession, text: str) -> bytes:
    """The entry id a person typed: the full hex id or a unique prefix of it."""
    wanted = text.strip().lower()
    if not wanted or any(ch not in "0123456789abcdef" for ch in wanted):
        raise MapiError(MAPI_E_INVALID_PARAMETER, f"{text!r} is not an entry id in hex")
    entries = await session.outgoing_queue(include_finished=True)
    matches = [e.entry_id for e in entries if e.entry_id.hex().startswith(wanted)]
    if not matches:
        raise MapiError(MAPI_E_NOT_FOUND, f"no queued message has an entry id starting {wanted}")
    if len(matches) > 1:
        raise MapiError(
            MAPI_E_INVALID_PARAMETER, f"{wanted} matches {len(matches)} messages; give more digits"
        )
    return matches[0]


async def queue_list(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """The queue in submit order; with ``all`` the finished messages too."""
    entries = await session.outgoing_queue(include_finished=bool(params.get("all")))
    return [e.as_dict() for e in entries]


async def queue_show(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """One message (``entry_id``: hex or a unique prefix) with its events."""
    entry_id = await resolve_entry(session, str(params["entry_id"]))
    info = (await session.queue_entry(entry_id)).as_dict()
    info["events"] = [
        {"at": e.at, "kind": e.kind, "transport": e.transport, "detail": e.detail}
        for e in await session.queue_events(entry_id)
    ]
    return info


async def queue_action(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """cancel, hold, release, retry or purge one queued message."""
    action = str(params["action"])
    if action not in QUEUE_ACTIONS:
        raise MapiError(MAPI_E_INVALID_PARAMETER, f"unknown queue action {action!r}")
    entry_id = await resolve_entry(session, str(params["entry_id"]))
    method: Callable[[bytes], Awaitable[None]] = getattr(session, action)
    await method(entry_id)
    return {"entry_id": entry_id.hex(), "action": action}

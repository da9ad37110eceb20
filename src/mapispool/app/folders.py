"""The store's folders as operations: the list with counts, and one folder's messages."""

from __future__ import annotations

from typing import Any

from ..mapi import MAPI_E_NOT_FOUND, MapiError
from ..session import AsyncSession
from .shapes import message_dict
from .types import Emit, Params


async def folder_list(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """Every folder with its entry id (hex) and message count."""
    listed = []
    for name in await session.folder_names():
        folder = session.folder(name)
        count = await folder.count()
        listed.append({"name": name, "entry_id": folder.entry_id.hex(), "count": count})
    return listed


async def folder_show(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """The messages of one folder, or with ``entry_id`` one message with its content."""
    folder = session.folder(str(params["folder"]))
    messages = await folder.messages()
    wanted = str(params.get("entry_id") or "").lower()
    if not wanted:
        return [message_dict(m) for m in messages]
    matches = [m for m in messages if m.entry_id.hex().startswith(wanted)]
    if len(matches) != 1:
        raise MapiError(
            MAPI_E_NOT_FOUND,
            f"{len(matches)} messages in {folder.name} have an entry id starting {wanted}",
        )
    return message_dict(matches[0], content=True)

"""Queueing as operations: ``submit`` a message, or ``submitted``, the news that a client
wrote one to the store itself."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from ..mapi import MAPI_BCC, MAPI_CC, MAPI_TO
from ..session import AsyncSession
from ..spi import Recipient
from ..submission import parse_recipient
from .types import Emit, Params


def _parse_recipients(params: Params) -> list[str | Recipient] | None:
    """``recipients`` (To), ``cc`` and ``bcc`` lists of addresses; None when all are absent
    (then the message's headers say who gets it)."""
    typed: list[str | Recipient] = []
    for key, rtype in (("recipients", MAPI_TO), ("cc", MAPI_CC), ("bcc", MAPI_BCC)):
        for spec in params.get(key) or ():
            typed.append(parse_recipient(str(spec), rtype))
    if not typed and params.get("recipients") is None:
        return None
    return typed


async def submit(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """Queue a message; returns the entry id in hex. ``content`` is the message's bytes
    (in process) or base64 text (over the socket, for clients older than ``submitted``)."""
    raw = params["content"]
    content = bytes(raw) if isinstance(raw, bytes | bytearray) else base64.b64decode(str(raw))
    send_at = params.get("send_at")
    entry_id = await session.submit(
        content,
        recipients=_parse_recipients(params),
        deferred_send_time=datetime.fromtimestamp(float(send_at), UTC) if send_at else None,
        sender=params.get("sender"),
    )
    return entry_id.hex()


async def submitted(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """A client queued ``entry_id`` in the store itself: the spooler looks at the queue
    now rather than at its next wake-up."""
    text = str(params.get("entry_id") or "")
    try:
        entry_id = bytes.fromhex(text)
    except ValueError:
        entry_id = b""  # only the news matters: the spooler reads the queue itself
    await session.announce_submitted(entry_id)
    return {"entry_id": text}

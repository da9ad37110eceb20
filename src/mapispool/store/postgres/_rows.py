"""Rows of the PostgreSQL store turned into the store's plain values, and back."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ...mapi import PR_MESSAGE_CLASS, PR_SUBJECT
from ..codec import dump_props, load_props
from ..codec import recipient_from_row as stored_recipient
from ..model import QueueEntry, QueueState, Recipient, StoredMessage
from ..sqlite.integrity import content_digest
from ..text import storable
from ._plumbing import Conn
from ._script import array_literal
from ._sql import q

FOLDER_IDS = {"Outbox": 1, "Inbox": 2, "Sent Items": 3, "Deleted Items": 4}


def folder_entry_id(folder_id: int) -> bytes:
    """A folder's entry id (the same fixed values as the SQLite store's, 0001_schema.sql)."""
    return b"MSPLFOLD" + folder_id.to_bytes(4, "big")


def new_entry_id() -> bytes:
    """A fresh, opaque 16-byte message entry id."""
    return uuid.uuid4().bytes


def message_row(
    entry_id: bytes, folder_id: int, content: bytes, props: Mapping[int, Any], now: float
) -> dict[str, Any]:
    """The parameters of a new ``messages`` row (``file_message``, ``insert_report``)."""
    return {
        "entry_id": entry_id,
        "folder_id": folder_id,
        "message_class": storable(str(props.get(PR_MESSAGE_CLASS, "IPM.Note"))),
        "subject": storable(str(props.get(PR_SUBJECT, ""))),
        "props": dump_props(props),
        "size": len(content),
        "now": now,
    }


def filed_message(
    folder_id: int,
    content: bytes,
    props: Mapping[int, Any],
    recipients: Sequence[Recipient],
    now: float,
    event: tuple[str, str | None],
    **extra: Any,
) -> tuple[bytes, dict[str, Any]]:
    """A fresh entry id and the parameters of ``file_message`` for it: ``event`` is the
    history line (kind, detail); ``extra`` sets the optional parts (``state``,
    ``not_before``, ``expires_at``, ``due_at`` for a queue row; ``dedupe_key``;
    ``eight_bit``, ``canonical``)."""
    entry_id = new_entry_id()
    params = message_row(entry_id, folder_id, content, props, now)
    params.update(
        eight_bit=False, canonical=False, data=content, sha256=content_digest(content),
        addresses=[storable(r.address) for r in recipients],
        addrtypes=[storable(r.addrtype) for r in recipients],
        names=[storable(r.display_name) for r in recipients],
        types=array_literal(int(r.recipient_type) for r in recipients),
        responsibility=array_literal(bool(r.responsibility) for r in recipients),
        recipient_props=[dump_props(r.props) for r in recipients],
        state=None, not_before=None, expires_at=None, due_at=None, dedupe_key=None,
        event=event[0], event_detail=storable(event[1]) if event[1] is not None else None,
    )  # fmt: skip
    params.update(extra)
    return entry_id, params


async def add_event(
    conn: Conn,
    entry_id: bytes,
    kind: str,
    transport: str | None,
    detail: str | None,
    at: float,
) -> None:
    await conn.execute(
        q("insert_event"),
        (entry_id, at, kind, transport, storable(detail) if detail is not None else None),
    )


def checked_inline(data: bytes | None, digest: bytes | None) -> bytes | None:
    """A claim's inline content, or None when there is none or it fails its checksum:
    then the spooler streams it with ``open_content``, whose last read raises
    ``CorruptContent``, so a damaged message is never handed over (as on SQLite)."""
    if data is None:
        return None
    data = bytes(data)
    if digest is not None and content_digest(data) != bytes(digest):
        return None
    return data


def recipient_from_row(row: Sequence[Any]) -> tuple[int, Recipient]:
    """(seq, recipient) from a ``recipients_of`` row: the message's id, then a stored
    recipient row (``codec.recipient_from_row``)."""
    message_id, *recipient = row
    return int(message_id), stored_recipient(recipient)


async def recipients_by_message(conn: Conn, ids: Sequence[int]) -> dict[int, list[Recipient]]:
    """Every recipient of each message ``ids``, in row order (one query)."""
    found: dict[int, list[Recipient]] = {i: [] for i in ids}
    if not ids:
        return found
    cur = await conn.execute(q("recipients_of"), (list(ids),))
    for row in await cur.fetchall():
        message_id, recipient = recipient_from_row(row)
        found[message_id].append(recipient)
    return found


def queue_entry(row: Sequence[Any], recipients: Sequence[Recipient] | None = None) -> QueueEntry:
    """A ``QueueEntry`` from a ``queue_select`` row."""
    (entry_id, state, submit_time, not_before, expires_at, attempts, last_error, parked_by,
     declined, subject, size, mid) = row[:12]  # fmt: skip
    return QueueEntry(
        entry_id=bytes(entry_id),
        state=QueueState(state),
        submit_time=submit_time,
        not_before=not_before,
        expires_at=expires_at,
        attempts=attempts,
        last_error=last_error,
        parked_by=parked_by,
        declined=tuple(declined or ()),
        subject=subject,
        size=int(size),
        recipients=tuple(r.one_off for r in recipients) if recipients else (),
        seq=int(mid),
    )


def stored_message(row: Sequence[Any], recipients: Sequence[Recipient]) -> StoredMessage:
    """A ``StoredMessage`` from a ``message_select`` row."""
    mid, entry_id, folder, props, content = row
    return StoredMessage(
        entry_id=bytes(entry_id),
        folder=folder,
        props=load_props(props),
        content=bytes(content),
        recipients=tuple(recipients),
        seq=int(mid),
    )

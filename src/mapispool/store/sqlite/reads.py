"""The SQLite store's reads: queue queries (paged), messages, recipients, events, dedupe
keys, transport state and status rows. Plain functions over a ``Database``; they run on
the store's reader thread (its own connection, each query its own snapshot)."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Collection, Sequence
from typing import IO, Any

from ...mapi import MAPI_E_NOT_FOUND, MapiError
from ..base import QueuePosition
from ..codec import load_json, load_props, recipient_from_row
from ..model import Event, QueueEntry, QueueState, Recipient, StoredMessage
from ..text import storable
from .database import Database
from .integrity import ContentReader
from .queries import Q


def entry_from_row(row: Sequence[Any], recipients: tuple[str, ...] = ()) -> QueueEntry:
    """A ``QueueEntry`` from a row of the queue queries (``queries.sql``)."""
    (entry_id, state, submit_time, not_before, expires_at, attempts, last_error, parked_by,
     declined, subject, size, mid) = row  # fmt: skip
    return QueueEntry(
        entry_id=bytes(entry_id),
        state=QueueState(state),
        submit_time=submit_time,
        not_before=not_before,
        expires_at=expires_at,
        attempts=attempts,
        last_error=last_error,
        parked_by=parked_by,
        declined=tuple(json.loads(declined)),
        subject=subject,
        size=size,
        recipients=recipients,
        seq=int(mid),
    )


def _paging(after: QueuePosition | None, limit: int) -> dict[str, Any]:
    since_time, since_seq = after if after is not None else (-1.0, -1)
    return {"after_time": since_time, "after_seq": since_seq, "limit": limit}


def _with_recipients(db: Database, rows: list[tuple[Any, ...]]) -> list[QueueEntry]:
    return [
        entry_from_row(
            row,
            tuple(f"{t}:{a}" for t, a in db.read(Q.recipient_addresses, {"message_id": row[11]})),
        )
        for row in rows
    ]


def queue_entry(db: Database, entry_id: bytes, with_recipients: bool) -> QueueEntry:
    rows = db.read(Q.queue_entry, {"entry_id": entry_id})
    if not rows:
        raise MapiError(MAPI_E_NOT_FOUND, f"{entry_id.hex()} is not in the outgoing queue")
    if with_recipients:
        return _with_recipients(db, rows)[0]
    return entry_from_row(rows[0])


def queue_page(
    db: Database,
    states: Collection[QueueState] | None,
    after: QueuePosition | None,
    limit: int,
    with_recipients: bool,
) -> list[QueueEntry]:
    wanted = json.dumps([QueueState(s).value for s in states]) if states is not None else None
    rows = db.read(Q.queue_page, {"states": wanted, **_paging(after, limit)})
    if with_recipients:
        return _with_recipients(db, rows)
    return [entry_from_row(r) for r in rows]


def entries(db: Database, query: str, params: dict[str, Any]) -> list[QueueEntry]:
    """Queue entries (without recipient lists) from one of the queue queries."""
    return [entry_from_row(r) for r in db.read(query, params)]


def due_entries(
    db: Database, now: float, ignore_backoff: bool, after: QueuePosition | None, limit: int
) -> list[QueueEntry]:
    params = {"now": now, "ignore_backoff": int(ignore_backoff), **_paging(after, limit)}
    return entries(db, Q.due_entries, params)


def pending_types(db: Database, seqs: Sequence[int]) -> dict[int, list[str]]:
    result: dict[int, list[str]] = {seq: [] for seq in seqs}
    for start in range(0, len(seqs), 500):
        chunk = json.dumps(list(seqs[start : start + 500]))
        for mid, addrtype in db.read(Q.pending_types, {"seqs": chunk}):
            result[int(mid)].append(str(addrtype))
    return result


def recipient_outcomes(
    db: Database, entry_id: bytes
) -> list[tuple[int, str | None, str | None, bool]]:
    rows = db.read(Q.recipient_outcomes, {"message_id": db.message_id(entry_id)})
    return [(int(r), o, t, bool(n)) for r, o, t, n in rows]


def recipients(db: Database, message_id: int) -> list[Recipient]:
    return [
        recipient_from_row(row[1:]) for row in db.read(Q.recipients, {"message_id": message_id})
    ]


def messages(db: Database, folder: str, after: int | None, limit: int) -> list[StoredMessage]:
    rows = db.read(
        Q.folder_messages,
        {"folder_id": db.folder_id(folder), "after": after if after is not None else -1,
         "limit": limit},
    )  # fmt: skip
    return [
        StoredMessage(
            entry_id=bytes(entry_id),
            folder=folder,
            props=load_props(props),
            content=bytes(content),
            recipients=tuple(recipients(db, mid)),
            seq=int(mid),
        )
        for mid, entry_id, props, content in rows
    ]


def message(db: Database, entry_id: bytes, content: bool) -> StoredMessage:
    rows = db.read(Q.message, {"entry_id": entry_id, "content": int(content)})
    if not rows:
        raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
    mid, folder_id, props, data = rows[0]
    return StoredMessage(
        entry_id=entry_id,
        folder=db.folder_names[int(folder_id)],
        props=load_props(props),
        content=bytes(data),
        recipients=tuple(recipients(db, mid)),
        seq=int(mid),
    )


def open_content(db: Database, entry_id: bytes, verify: bool) -> IO[bytes]:
    """A stream over a message's content, on ``db``'s connection (which the stream then
    owns: it closes the connection when it is closed)."""
    rows = db.read(Q.content_ref, {"entry_id": entry_id})
    if not rows:
        db.close()
        raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
    message_id, digest = rows[0]
    try:
        blob = db.conn.blobopen("contents", "data", message_id, readonly=True)
    except sqlite3.Error as exc:
        db.close()
        raise db.error(exc, "reading a message") from exc
    expected = bytes(digest) if verify and digest is not None else None
    return io.BufferedReader(OwningReader(blob, entry_id, expected, db), buffer_size=1 << 20)


class OwningReader(ContentReader):
    """A ``ContentReader`` that closes its connection with itself."""

    def __init__(
        self, blob: sqlite3.Blob, entry_id: bytes, expected: bytes | None, db: Database
    ) -> None:
        super().__init__(blob, entry_id, expected)
        self._db = db

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._db.close()


def known_dedupe_keys(db: Database, keys: Collection[str]) -> set[str]:
    """Which of ``keys`` are stored, as the caller spelled them (the store keeps each key
    ``storable``)."""
    spelled = {storable(k): k for k in keys}
    wanted = list(spelled)
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = json.dumps(wanted[start : start + 500])
        found.update(spelled[str(k)] for (k,) in db.read(Q.known_dedupe_keys, {"keys": chunk}))
    return found


def get_transport_state(db: Database, transport: str, key: str) -> Any:
    rows = db.read(Q.transport_state, {"transport": transport, "key": key})
    return load_json(rows[0][0]) if rows else None


def load_status_rows(db: Database) -> list[dict[int, Any]]:
    return [load_props(props) for (props,) in db.read(Q.status_rows)]


def events(db: Database, entry_id: bytes) -> list[Event]:
    rows = db.read(Q.events, {"entry_id": entry_id})
    return [Event(at, kind, transport, detail) for at, kind, transport, detail in rows]


def next_wakeup(db: Database) -> float | None:
    rows = db.read(Q.next_wakeup)
    return float(rows[0][0]) if rows and rows[0][0] is not None else None


def count_by_state(db: Database) -> dict[QueueState, int]:
    return {QueueState(state): int(n) for state, n in db.read(Q.count_by_state)}


def message_count(db: Database, folder: str) -> int:
    return int(db.read(Q.message_count, {"folder_id": db.folder_id(folder)})[0][0])

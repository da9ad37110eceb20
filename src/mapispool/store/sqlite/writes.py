"""The SQLite store's writes outside the outgoing queue's state machine: storing
messages (submit, deliver), the durability barrier, dedupe keys, transport state, status
rows, moving and deleting. Plain functions over a ``Database``; each public one is one
transaction and runs on the store's writer thread."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...mapi import PR_MESSAGE_CLASS, PR_SUBJECT
from ..codec import dump_json, dump_props
from ..model import Recipient, initial_placement
from ..text import storable
from .database import MEMORY, Database
from .integrity import content_digest, write_seq
from .queries import Q

if TYPE_CHECKING:
    from ..types import Delivery


def new_entry_id() -> bytes:
    """A fresh, opaque 16-byte message entry id: the bytes of a random (version 4) UUID,
    RFC 4122 §4.4, made here rather than with ``uuid.uuid4()`` because the ``uuid``
    module imports ``platform``, which a sendmail process would pay for on each message."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # variant RFC 4122
    return bytes(raw)


def event(
    conn: sqlite3.Connection,
    entry_id: bytes,
    kind: str,
    transport: str | None,
    detail: str | None,
    at: float,
) -> None:
    """Append a line to a message's history (inside the caller's transaction)."""
    conn.execute(
        Q.insert_event,
        {"entry_id": entry_id, "at": at, "kind": kind, "transport": transport, "detail": detail},
    )


def insert_message(
    db: Database,
    conn: sqlite3.Connection,
    folder: str,
    content: bytes,
    props: Mapping[int, Any],
    recipients: Sequence[Recipient],
    now: float,
    *,
    eight_bit: bool = False,
    canonical: bool = False,
    with_content: bool = True,
) -> tuple[int, bytes]:
    """Insert a message with its content (unless ``with_content`` is false: the caller
    inserts it) and recipients; (row id, entry id)."""
    entry_id = new_entry_id()
    cur = conn.execute(
        Q.insert_message,
        {
            "entry_id": entry_id,
            "folder_id": db.folder_id(folder),
            "message_class": str(props.get(PR_MESSAGE_CLASS, "IPM.Note")),
            "subject": str(props.get(PR_SUBJECT, "")),
            "props": dump_props(props),
            "size": len(content),
            "now": now,
            "eight_bit": int(eight_bit),
            "canonical": int(canonical),
        },
    )
    message_id = int(cur.lastrowid or 0)
    if with_content:
        conn.execute(
            Q.insert_content,
            {"message_id": message_id, "data": content, "sha256": content_digest(content)},
        )
    if recipients:
        conn.executemany(
            Q.insert_recipient,
            [
                {
                    "message_id": message_id,
                    "row_id": index,
                    "address": r.address,
                    "addrtype": r.addrtype,
                    "display_name": r.display_name,
                    "recipient_type": int(r.recipient_type),
                    "responsibility": int(r.responsibility),
                    "props": dump_props(r.props),
                }
                for index, r in enumerate(recipients)
            ],
        )
    return message_id, entry_id


class AlreadySubmitted(Exception):
    """``submit``'s ``submission_key`` was committed before: the message is queued once."""


def submit(
    db: Database,
    content: bytes,
    props: Mapping[int, Any],
    recipients: Sequence[Recipient],
    *,
    submit_time: float,
    not_before: float | None,
    expires_at: float,
    eight_bit: bool,
    canonical: bool = False,
    submission_key: str | None = None,
) -> bytes:
    """``Store.submit``: the message, its queue entry, its event and the submission count
    in one durable transaction; then the count's copy outside the database.

    ``submission_key`` (``mapispool-sendmail``'s hand-off) is stored as a dedupe key in the
    same transaction: when it is there already, nothing is written and ``AlreadySubmitted``
    is raised, so a retry of the same submission cannot queue the message twice."""
    state, due_at, expires_at = initial_placement(submit_time, not_before, expires_at)
    with db.tx("submitting a message") as conn:
        message_id, entry_id = insert_message(
            db,
            conn,
            "Outbox",
            content,
            props,
            recipients,
            submit_time,
            eight_bit=eight_bit,
            canonical=canonical,
        )
        if submission_key is not None:
            key = {"key": submission_key, "message_id": message_id, "now": submit_time}
            if conn.execute(Q.insert_dedupe, key).fetchone() is None:
                raise AlreadySubmitted(submission_key)  # rolls the message back
        conn.execute(
            Q.insert_queue,
            {
                "message_id": message_id,
                "state": state.value,
                "submit_time": submit_time,
                "not_before": not_before,
                "expires_at": expires_at,
                "due_at": due_at,
            },
        )
        event(conn, entry_id, "submitted", None, state.value, submit_time)
        (count,) = conn.execute(Q.count_submission).fetchone()
    if str(db.path) != MEMORY:
        write_seq(db.path, int(count))
    return entry_id


def deliver(db: Database, items: Sequence[Delivery], *, durable: bool) -> list[bytes | None]:
    """``Store.deliver``: every item with its dedupe key in one transaction.

    One query tells which keys of the batch are stored already (the write lock is held,
    so nothing can add one meanwhile); a key met twice in the batch makes its second item
    a duplicate too. Each new message is one INSERT (its row id is needed); its content,
    dedupe key and ``received`` event go in with one ``executemany`` each for the batch."""
    now = time.time()
    result: list[bytes | None] = []
    contents: list[dict[str, Any]] = []
    keys: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    with db.tx("storing received messages", durable=durable) as conn:
        wanted = [storable(item.dedupe_key) for item in items if item.dedupe_key is not None]
        taken = _stored_keys(conn, wanted) if wanted else set()
        for item in items:
            key = storable(item.dedupe_key) if item.dedupe_key is not None else None
            if key is not None:
                if key in taken:
                    result.append(None)
                    continue
                taken.add(key)
            message_id, entry_id = insert_message(
                db, conn, item.folder, item.content, item.props, item.recipients, now,
                with_content=False,
            )  # fmt: skip
            contents.append(
                {"message_id": message_id, "data": item.content,
                 "sha256": content_digest(item.content)}
            )  # fmt: skip
            if key is not None:
                keys.append({"key": key, "message_id": message_id, "now": now})
            events.append(
                {"entry_id": entry_id, "at": now, "kind": "received", "transport": None,
                 "detail": storable(item.folder)}
            )  # fmt: skip
            result.append(entry_id)
        # Every text of these rows is storable already (keys and folder names made so
        # above, digests are hex): sqlite3's own executemany skips a second pass over
        # each row's parameters (StorableTextConnection's), a sizeable part of the cost.
        write_many = sqlite3.Connection.executemany
        write_many(conn, Q.insert_content, contents)
        write_many(conn, Q.insert_dedupe_linked, keys)
        write_many(conn, Q.insert_event, events)
    return result


def _stored_keys(conn: sqlite3.Connection, keys: list[str]) -> set[str]:
    """Which of ``keys`` (storable already) the dedupe table holds."""
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = dump_json(keys[start : start + 500])
        found.update(str(k) for (k,) in conn.execute(Q.known_dedupe_keys, {"keys": chunk}))
    return found


def sync(db: Database) -> None:
    """One fsync'd commit: in WAL mode it makes every earlier commit durable."""
    with db.tx("making received mail durable") as conn:
        conn.execute(Q.sync_touch)
        conn.execute(Q.sync_untouch)


def add_dedupe_keys(db: Database, keys: Iterable[str]) -> None:
    now = time.time()
    with db.tx("recording dedupe keys") as conn:
        conn.executemany(Q.add_dedupe_key, [{"key": k, "now": now} for k in keys])


def set_transport_state(db: Database, transport: str, key: str, value: Any) -> None:
    with db.tx("saving transport state") as conn:
        conn.execute(
            Q.set_transport_state, {"transport": transport, "key": key, "value": dump_json(value)}
        )


def save_status_rows(
    db: Database, rows: Sequence[Mapping[int, Any]], names: Sequence[str], worker: str
) -> None:
    now = time.time()
    with db.tx("saving status rows", durable=False) as conn:
        conn.execute(Q.clear_status_rows, {"worker": worker})
        conn.executemany(
            Q.insert_status_row,
            [
                {"worker": worker, "name": name, "position": i, "props": dump_props(row),
                 "now": now}
                for i, (name, row) in enumerate(zip(names, rows, strict=True))
            ],
        )  # fmt: skip


def move_message(db: Database, entry_id: bytes, folder: str) -> None:
    folder_id = db.folder_id(folder)
    with db.tx("moving a message") as conn:
        row = conn.execute(Q.message_id, {"entry_id": entry_id}).fetchone()
        if row is not None:
            conn.execute(Q.move_message, {"folder_id": folder_id, "message_id": row[0]})
        event(conn, entry_id, "moved", None, folder, time.time())


def delete_message(db: Database, entry_id: bytes) -> None:
    with db.tx("deleting a message") as conn:
        row = conn.execute(Q.message_id, {"entry_id": entry_id}).fetchone()
        if row is not None:
            conn.execute(Q.delete_message, {"message_id": row[0]})
        event(conn, entry_id, "deleted", None, None, time.time())

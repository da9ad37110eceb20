"""Claiming work in the SQLite store: a page of due messages for one transport, each
moved to in flight under a lease and a fencing token, with everything a transport needs
read in the same transaction; renewing and releasing claims."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

from ...mapi import PR_SENDER_EMAIL_ADDRESS
from ..base import PAGE
from ..codec import load_props, recipient_from_row
from ..model import QueueEntry, QueueState, Recipient
from ..types import Claim, Route
from .database import Database
from .integrity import content_digest
from .queries import Q
from .reads import entry_from_row
from .writes import event


def claim(
    db: Database,
    route: Route,
    *,
    now: float,
    limit: int,
    lease: float,
    worker: str,
    ignore_backoff: bool,
    submitted_before: float | None,
    exclude: Collection[bytes],
    released: Collection[bytes],
    inline_limit: int,
) -> list[Claim]:
    """``Store.claim``, in one transaction (not fsync'd: a claim lost with a power loss
    leaves the message where it was)."""
    with db.tx("claiming messages", durable=False) as conn:
        chosen = _choose(
            conn, route, now, limit, ignore_backoff, submitted_before, exclude, released
        )
        if not chosen:
            return []
        (last,) = conn.execute(Q.next_tokens, {"count": len(chosen)}).fetchone()
        first = int(last) - len(chosen) + 1
        lease_until = now + lease
        stamp = time.time()
        conn.executemany(
            Q.claim_message,
            [
                {"now": stamp, "token": first + i, "lease_until": lease_until,
                 "worker": worker, "message_id": entry.seq}
                for i, entry in enumerate(chosen)
            ],
        )  # fmt: skip
        for entry in chosen:
            event(conn, entry.entry_id, "offered", route.transport, None, stamp)
        seqs = json.dumps([e.seq for e in chosen])
        loaded: dict[int, tuple[dict[int, Any], bool, bool, bytes | None]] = {
            int(mid): (load_props(props), bool(eight_bit), bool(canonical), _checked(data, digest))
            for mid, props, eight_bit, canonical, data, digest in conn.execute(
                Q.claimed_messages, {"seqs": seqs, "inline_limit": inline_limit}
            )
        }
        recipients: dict[int, list[Recipient]] = {e.seq: [] for e in chosen}
        for row in conn.execute(Q.claimed_recipients, {"seqs": seqs}):
            recipients[int(row[0])].append(recipient_from_row(row[1:]))
    claims = []
    for i, entry in enumerate(chosen):
        props, eight_bit, canonical, content = loaded[entry.seq]
        claims.append(
            Claim(
                entry=_counted(entry),
                props=props,
                recipients=recipients[entry.seq],
                content=content,
                token=first + i,
                lease_until=lease_until,
                eight_bit=eight_bit,
                canonical=canonical,
                claimed_from=entry.state,
            )
        )
    return claims


def _checked(data: bytes | None, digest: bytes | None) -> bytes | None:
    """An inline content, or None when there is none or it fails its checksum: then the
    reader streams it with ``open_content``, whose last read raises ``CorruptContent``
    (nothing complete is ever handed over)."""
    if data is None:
        return None
    data = bytes(data)
    if digest is not None and content_digest(data) != bytes(digest):
        return None
    return data


def _counted(entry: QueueEntry) -> QueueEntry:
    return replace(entry, attempts=entry.attempts + 1)


def _choose(
    conn: sqlite3.Connection,
    route: Route,
    now: float,
    limit: int,
    ignore_backoff: bool,
    submitted_before: float | None,
    exclude: Collection[bytes],
    released: Collection[bytes],
) -> list[QueueEntry]:
    """The entries to claim, in submit order: released parked ones, then due ones."""
    chosen: list[QueueEntry] = []
    candidates: list[QueueEntry] = []
    if released:
        after: tuple[float, int] = (-1.0, -1)
        while True:
            rows = conn.execute(
                Q.parked_entries,
                {"transport": route.transport, "after_time": after[0], "after_seq": after[1],
                 "limit": PAGE},
            ).fetchall()  # fmt: skip
            if not rows:
                break
            page = [entry_from_row(r) for r in rows]
            after = (page[-1].submit_time, page[-1].seq)
            candidates += [e for e in page if e.entry_id in released]
    # Released by their transport: claimed whatever routing says now (the offer unparks
    # one with nothing left for that transport).
    chosen += [
        e
        for e in candidates
        if e.entry_id not in exclude
        and (submitted_before is None or e.submit_time <= submitted_before)
    ][:limit]
    after = (-1.0, -1)
    while len(chosen) < limit:
        rows = conn.execute(
            Q.due_entries,
            {"now": now, "ignore_backoff": int(ignore_backoff), "after_time": after[0],
             "after_seq": after[1], "limit": PAGE},
        ).fetchall()  # fmt: skip
        if not rows:
            break
        page = [entry_from_row(r) for r in rows]
        after = (page[-1].submit_time, page[-1].seq)
        last_page = len(page) < PAGE
        if submitted_before is not None and page[-1].submit_time > submitted_before:
            last_page = True  # pages are in submit order: nothing later qualifies
        chosen += _routed(conn, route, page, exclude, submitted_before, limit - len(chosen))
        if last_page:
            break
    return chosen


def _routed(
    conn: sqlite3.Connection,
    route: Route,
    entries: Sequence[QueueEntry],
    exclude: Collection[bytes],
    submitted_before: float | None,
    limit: int,
) -> list[QueueEntry]:
    """Up to ``limit`` of ``entries`` that qualify (see ``Store.claim``)."""
    entries = [
        e
        for e in entries
        if e.entry_id not in exclude
        and (submitted_before is None or e.submit_time <= submitted_before)
    ]
    if not entries or limit <= 0:
        return []
    types = pending_types(conn, [e.seq for e in entries])
    senders = _senders(conn, [e.seq for e in entries]) if route.senders else {}
    return [
        e for e in entries
        if route.for_sender(senders.get(e.seq)).takes(types[e.seq], e.declined)
    ][:limit]  # fmt: skip


def _senders(conn: sqlite3.Connection, seqs: Sequence[int]) -> dict[int, str | None]:
    """For each message row id, its envelope sender (``Route.senders``)."""
    path = f'$."{int(PR_SENDER_EMAIL_ADDRESS)}"'
    rows = conn.execute(Q.message_senders, {"seqs": json.dumps(list(seqs)), "path": path})
    return {int(mid): str(sender) if sender else None for mid, sender in rows}


def pending_types(conn: sqlite3.Connection, seqs: Sequence[int]) -> dict[int, list[str]]:
    """For each message row id, the address types of its pending recipients."""
    result: dict[int, list[str]] = {seq: [] for seq in seqs}
    for mid, addrtype in conn.execute(Q.pending_types, {"seqs": json.dumps(list(seqs))}):
        result[int(mid)].append(str(addrtype))
    return result


def renew(db: Database, claims: Sequence[Claim], lease: float) -> list[bytes]:
    """``Store.renew``: the entry ids whose claims are lost."""
    lease_until = time.time() + lease
    lost = []
    with db.tx("renewing claims", durable=False) as conn:
        for c in claims:
            cur = conn.execute(
                Q.renew, {"lease_until": lease_until, "entry_id": c.entry_id, "token": c.token}
            )
            if cur.rowcount:
                c.lease_until = lease_until
            else:
                lost.append(c.entry_id)
    return lost


def release(db: Database, claims: Sequence[Claim]) -> None:
    """``Store.release``: back to the state each was claimed from."""
    now = time.time()
    with db.tx("releasing claims", durable=False) as conn:
        for c in claims:
            state = c.claimed_from
            if state is QueueState.IN_FLIGHT:
                state = QueueState.QUEUED
            cur = conn.execute(
                Q.unclaim,
                {"state": state.value, "now": now, "message_id": c.entry.seq, "token": c.token},
            )
            if cur.rowcount:
                event(conn, c.entry_id, "unclaimed", None, None, now)

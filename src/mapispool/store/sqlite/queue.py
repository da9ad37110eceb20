"""The SQLite store's outgoing queue state machine: recording outcomes (with a savepoint
per outcome), a person's actions, the hand-over mark and recovery after a crash. Plain
functions over a ``Database``, run on the store's writer thread."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence

from ...mapi import MAPI_E_CALL_FAILED, MAPI_E_INVALID_PARAMETER, MAPI_E_NOT_FOUND, MapiError
from ..codec import dump_props
from ..model import (
    DUE_STATES,
    TRANSITIONS,
    InvalidTransition,
    QueueState,
    StaleClaim,
    recovered_state,
)
from ..types import QUEUE_ACTIONS, Outcome, QueueAction, Recorded, action_applies
from .database import Database
from .queries import Q
from .writes import event, insert_message


def check_transition(
    entry_id: bytes, old: QueueState, new: QueueState, expect: Iterable[QueueState] | None
) -> None:
    """Raise ``InvalidTransition`` unless the state machine (and ``expect``) allows it."""
    allowed = set(expect) if expect is not None else None
    if (allowed is not None and old not in allowed) or new not in TRANSITIONS[old]:
        raise InvalidTransition(f"{entry_id.hex()}: cannot go from {old.value} to {new.value}")


def record(
    db: Database, outcomes: Sequence[Outcome], *, durable: bool
) -> tuple[list[Recorded], bool]:
    """``Store.record``: every outcome in one transaction, each inside a savepoint so that
    one refused outcome changes nothing and leaves the others applied. Returns the
    results and whether a message became due (for ``wait_for_work``)."""
    with db.tx("recording outcomes", durable=durable) as conn:
        return record_in(db, conn, outcomes, time.time(), set())


def record_in(
    db: Database,
    conn: sqlite3.Connection,
    outcomes: Sequence[Outcome],
    now: float,
    failed: set[bytes],
) -> tuple[list[Recorded], bool]:
    """``record`` inside the caller's transaction. ``failed``: the messages an outcome
    of which failed earlier in the transaction (their later outcomes are refused); it
    grows with this call's failures."""
    results: list[Recorded] = []
    due = False
    for outcome in outcomes:
        if outcome.entry_id in failed:
            error = MapiError(
                MAPI_E_CALL_FAILED,
                f"{outcome.entry_id.hex()}: not recorded, an earlier outcome of the "
                "same message in the batch failed",
            )
            results.append(Recorded(error=error))
            continue
        conn.execute("SAVEPOINT outcome")
        try:
            recorded = apply(db, conn, outcome, now)
        except MapiError as exc:
            conn.execute("ROLLBACK TO outcome")
            recorded = Recorded(error=exc)
        except sqlite3.Error as exc:
            if not conn.in_transaction:
                raise  # SQLite rolled the whole transaction back (full disk, I/O)
            conn.execute("ROLLBACK TO outcome")
            recorded = Recorded(error=db.error(exc, "recording an outcome"))
        conn.execute("RELEASE outcome")
        if recorded.error is not None:
            failed.add(outcome.entry_id)
        results.append(recorded)
        due = due or (recorded.error is None and outcome.state in DUE_STATES)
    return results, due


def apply(db: Database, conn: sqlite3.Connection, o: Outcome, now: float) -> Recorded:
    """One outcome, in the order ``Outcome`` documents."""
    entry_id = o.entry_id
    row = conn.execute(Q.queue_row, {"entry_id": entry_id}).fetchone()
    if row is None:
        if o.token is not None:  # the claim ended with its message (finished and deleted)
            raise StaleClaim(entry_id, o.token)
        if o.state is not None:
            raise MapiError(MAPI_E_NOT_FOUND, f"{entry_id.hex()} is not in the queue")
        found = conn.execute(Q.message_id, {"entry_id": entry_id}).fetchone()
        message_id = int(found[0]) if found is not None else None
        old: QueueState | None = None
        declined: list[str] = []
    else:
        old, message_id, token = QueueState(row[0]), int(row[1]), row[2]
        # Read only when this outcome adds a decline (most outcomes do not).
        declined = json.loads(row[3]) if o.declined is not None else []
        if o.token is not None and token != o.token:
            raise StaleClaim(entry_id, o.token)
    needs_message = o.recipients or o.recipient_outcomes or o.reports or o.declined
    if message_id is None and needs_message:
        raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
    if o.recipients:
        conn.executemany(
            Q.save_recipient,
            [
                {"responsibility": int(r.responsibility), "props": dump_props(r.props),
                 "message_id": message_id, "row_id": r.row_id}
                for r in o.recipients
            ],
        )  # fmt: skip
    for result in o.recipient_outcomes:
        conn.executemany(
            Q.set_recipient_outcome,
            [
                {"outcome": result.outcome, "transport": result.transport,
                 "report_text": result.report_text, "message_id": message_id, "row_id": rid}
                for rid in result.row_ids
            ],
        )  # fmt: skip
    if o.declined is not None and o.declined not in declined:
        if row is None:
            raise MapiError(MAPI_E_NOT_FOUND, f"{entry_id.hex()} is not in the queue")
        conn.execute(
            Q.set_declined,
            {"declined": json.dumps([*declined, o.declined]), "message_id": message_id},
        )
    for note in o.notes:
        event(conn, entry_id, note.kind, note.transport, note.detail, now)
    deleted = False
    if o.state is not None and old is not None and message_id is not None:
        deleted = change_state(db, conn, o, old, message_id, now)
    report_ids: list[bytes] = []
    for report in o.reports:
        if not deleted:
            conn.executemany(
                Q.mark_ndr_sent,
                [{"message_id": message_id, "row_id": rid} for rid in report.ndr_rows],
            )
            if report.delay_notice:
                conn.execute(Q.mark_delay_notified, {"message_id": message_id})
        if report.content is not None:
            _mid, report_id = insert_message(
                db, conn, "Inbox", report.content, report.props, (), now
            )
            event(conn, report_id, "received", None, "Inbox", now)
            report_ids.append(report_id)
    return Recorded(old=old, report_ids=tuple(report_ids))


def change_state(
    db: Database,
    conn: sqlite3.Connection,
    o: Outcome,
    old: QueueState,
    message_id: int,
    now: float,
) -> bool:
    """The state change of an outcome; True when it deleted the message."""
    assert o.state is not None
    new = o.state
    check_transition(o.entry_id, old, new, o.expect)
    detail = o.error
    if new.finished and detail is None:
        detail = o.folder
    event(conn, o.entry_id, o.event or new.value, o.transport, detail, now)
    if new.finished and o.delete:
        conn.execute(Q.delete_message, {"message_id": message_id})
        return True
    conn.execute(
        Q.set_state,
        {
            "state": new.value,
            "not_before": None if new.finished else o.not_before,
            "error": o.error,
            "parked_by": o.parked_by,
            "attempt": int(o.count_attempt),
            "now": now,
            "token": None,
            "lease_until": None,
            "claimed_by": None,
            "claimed_from": None,
            "message_id": message_id,
        },
    )
    if new.finished and o.folder is not None:
        conn.execute(
            Q.move_message, {"folder_id": db.folder_id(o.folder), "message_id": message_id}
        )
    return False


def act(
    db: Database, entry_id: bytes, action: QueueAction, *, expires_at: float | None
) -> QueueState:
    """``Store.act``: a person's action, in one durable transaction."""
    now = time.time()
    with db.tx("changing the queue") as conn:
        row = conn.execute(Q.queue_row, {"entry_id": entry_id}).fetchone()
        if row is None:
            raise MapiError(MAPI_E_NOT_FOUND, f"{entry_id.hex()} is not in the outgoing queue")
        old, message_id = QueueState(row[0]), int(row[1])
        if not action_applies(action, old):
            raise InvalidTransition(
                f"{entry_id.hex()}: cannot {action.value} a message that is {old.value}"
            )
        if action is QueueAction.PURGE:
            conn.execute(Q.delete_message, {"message_id": message_id})
            event(conn, entry_id, "deleted", None, None, now)
            return old
        _starts, new, kind = QUEUE_ACTIONS[action]
        check_transition(entry_id, old, new, None)
        if action is QueueAction.RETRY and old is QueueState.FAILED:
            if expires_at is None:
                raise MapiError(MAPI_E_INVALID_PARAMETER, "retrying a failed message needs "
                                "expires_at (its new lifetime)")  # fmt: skip
            conn.execute(Q.reopen_failed, {"message_id": message_id})
            conn.execute(
                Q.reopen_queue, {"expires_at": expires_at, "now": now, "message_id": message_id}
            )
        folder = "Deleted Items" if new is QueueState.CANCELLED else None
        outcome = Outcome(entry_id, new, event=kind, folder=folder)
        change_state(db, conn, outcome, old, message_id, now)
    return old


def mark_handoff(db: Database, entry_id: bytes, token: int | None, begun: bool) -> None:
    """``Store.mark_handoff``: committed to the WAL (not fsync'd) before it returns."""
    with db.tx("recording a hand-over", durable=False) as conn:
        _set_handoff(conn, entry_id, token, begun)


def mark_in(conn: sqlite3.Connection, entry_id: bytes, token: int | None) -> MapiError | None:
    """The start of a hand-over inside the caller's transaction: the error that refused
    it (``StaleClaim``, not in the queue), or None. One statement, so no savepoint: a
    refused mark changes nothing. A failure of the whole transaction raises."""
    if conn.execute(Q.mark_handoff, {"entry_id": entry_id, "token": token}).rowcount == 1:
        return None
    try:
        _set_handoff(conn, entry_id, token, True)
    except MapiError as exc:
        return exc
    return None


def _set_handoff(conn: sqlite3.Connection, entry_id: bytes, token: int | None, begun: bool) -> None:
    row = conn.execute(Q.queue_row, {"entry_id": entry_id}).fetchone()
    if row is None and token is not None:  # the claim ended with its message
        raise StaleClaim(entry_id, token)
    if row is None:
        raise MapiError(MAPI_E_NOT_FOUND, f"{entry_id.hex()} is not in the queue")
    if token is not None and row[2] != token:
        raise StaleClaim(entry_id, token)
    conn.execute(Q.set_handoff, {"begun": int(begun), "message_id": row[1]})


def recover(db: Database, *, parked: bool, before: float | None) -> dict[str, int]:
    """``Store.recover``."""
    now = time.time()
    counts = {"requeued": 0, "uncertain": 0, "unparked": 0}
    with db.tx("recovering the queue") as conn:
        rows = conn.execute(Q.stranded, {"before": before, "parked": int(parked)}).fetchall()
        for message_id, entry_id, state, handoff, pending in rows:
            new, key, why = recovered_state(state, bool(handoff), int(pending))
            conn.execute(
                Q.recovered,
                {"state": new.value, "why": why, "now": now, "message_id": message_id},
            )
            event(conn, bytes(entry_id), f"recovered-{new.value}", None, why, now)
            counts[key] += 1
    return counts

"""Outcomes and hand-over marks as statements, and the transactions that commit a group
of them (``_group``), in as few round trips as the checks allow.

A batch of marks is one round trip: BEGIN, one UPDATE per mark, COMMIT in one script
(``_script``); a refused mark (stale token) changed nothing, so it needs no rollback.

A batch of outcomes is two: BEGIN with the row lock of every message in the batch (one
query, in message order, so two batches never deadlock), then, once each outcome has
been checked against its row in Python, every write and the COMMIT. No savepoints on
that path: writes of checked outcomes fail only on a broken invariant (a constraint), and
then the batch is rolled back and done again one outcome at a time, each in a savepoint
of its own, so that the failing one is refused for its caller only and the others are
committed, as the group commit promises.

The common batch is one round trip: outcomes of claims this worker holds (``HeldClaims``,
what its own claims returned). Their rows are known without reading them: in flight under
the claim's token. The outcomes are checked against those rows, and the script locks the
rows with a guard that fails unless every one is as assumed (``guard_claims``), then
writes and commits. A failed guard (the claim was lost) is rolled back, and the batch
takes the two-round-trip path, which reads the rows and refuses what is stale.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import psycopg

from ...mapi import MAPI_E_CALL_FAILED, MAPI_E_NOT_FOUND, MapiError
from ..base import FOLDERS
from ..codec import dump_props
from ..model import TRANSITIONS, InvalidTransition, QueueState, StaleClaim
from ..sqlite.integrity import content_digest
from ..text import storable
from ..types import Outcome, Recorded
from ._group import Job
from ._plumbing import Conn
from ._rows import FOLDER_IDS, message_row, new_entry_id
from ._script import Script, array_literal
from ._sql import q

#: States whose outcome makes a message due again (the store wakes its workers).
DUE = frozenset({QueueState.QUEUED, QueueState.RETRY, QueueState.DEFERRED})

#: Non-durable commits: on the server at once, on disk with the WAL writer's next flush
#: (as SQLite's ``synchronous = NORMAL``); a crash of the worker loses none of them.
NOT_DURABLE = "SET LOCAL synchronous_commit = off"


@dataclass
class Row:
    """A locked queue row as a batch of outcomes changes it."""

    state: QueueState | None  # None: a message outside the queue (notes, reports only)
    token: int | None
    message_id: int
    declined: list[str]
    gone: bool = False


def folder_id(name: str) -> int:
    try:
        return FOLDER_IDS[name]
    except KeyError:
        raise MapiError(
            MAPI_E_NOT_FOUND, f"no folder called {name!r}; use one of {FOLDERS}"
        ) from None


# -- marks --------------------------------------------------------------------------------


async def commit_marks(conn: Conn, jobs: Sequence[Job]) -> None:
    """One transaction, one round trip, for the marks of ``jobs``; a refused mark sets its
    job's error (``StaleClaim``, or not in the queue)."""
    script = Script()
    script.add("BEGIN")
    script.add(NOT_DURABLE)
    slots = []
    for job in jobs:
        assert job.mark is not None
        entry_id, token, begun = job.mark
        params = {"begun": begun, "entry_id": entry_id, "token": token}
        slots.append(script.call("mark_handoff", params))
    script.add("COMMIT")
    results = await script.run(conn)
    for job, slot in zip(jobs, slots, strict=True):
        if not results[slot]:
            assert job.mark is not None
            job.error = mark_refused(job.mark[0], job.mark[1])


def mark_refused(entry_id: bytes, token: int | None) -> MapiError:
    if token is None:
        return MapiError(MAPI_E_NOT_FOUND, f"{entry_id.hex()} is not in the queue")
    return StaleClaim(entry_id, token)


# -- outcomes -----------------------------------------------------------------------------


class HeldClaims:
    """The message id and token of each message this store's claims hold, by entry id.
    Forgotten when an outcome ends the claim or the claim is released; bounded, oldest
    first, since a claim may also end elsewhere (a lost lease). Used from the store's
    loop and from a plug-in's thread, hence the lock."""

    LIMIT = 8192

    def __init__(self) -> None:
        self._rows: dict[bytes, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def hold(self, entry_id: bytes, message_id: int, token: int) -> None:
        with self._lock:
            self._rows.pop(entry_id, None)
            self._rows[entry_id] = (message_id, token)
            while len(self._rows) > self.LIMIT:
                del self._rows[next(iter(self._rows))]

    def forget(self, entry_id: bytes) -> None:
        with self._lock:
            self._rows.pop(entry_id, None)

    def rows(self, jobs: Sequence[Job]) -> dict[bytes, Row] | None:
        """The rows of every message in ``jobs`` as this worker's claims left them, or None
        when an outcome is not of a claim held here (no token, another token, unknown) or
        adds a declined transport (which needs the row's current list)."""
        rows: dict[bytes, Row] = {}
        with self._lock:
            for job in jobs:
                for outcome in job.outcomes:
                    held = self._rows.get(outcome.entry_id)
                    if outcome.token is None or held is None or held[1] != outcome.token:
                        return None
                    if outcome.declined:
                        return None
                    rows[outcome.entry_id] = Row(QueueState.IN_FLIGHT, held[1], held[0], [])
        return rows

    def settle(self, jobs: Sequence[Job]) -> None:
        """Forget the claims that the recorded outcomes of ``jobs`` ended."""
        for job in jobs:
            for outcome, recorded in zip(job.outcomes, job.result or (), strict=False):
                if outcome.state is not None and recorded.error is None:
                    self.forget(outcome.entry_id)


#: Turns a database error into the ``MapiError`` a refused outcome carries.
Refusal = Callable[[BaseException, str], MapiError]


async def commit_outcomes(
    conn: Conn,
    jobs: Sequence[Job],
    *,
    durable: bool,
    now: float,
    refusal: Refusal,
    held: HeldClaims,
) -> bool:
    """One transaction for the outcomes of ``jobs``: sets each job's ``result`` (a
    ``Recorded`` per outcome, refused ones with their error); raises when the transaction
    failed as a whole. True when an outcome made a message due. ``held``: the claims
    this worker holds, for the one-round-trip path."""
    guessed = held.rows(jobs)
    if guessed is not None:
        try:
            return await _commit_held(conn, jobs, guessed, durable=durable, now=now)
        except psycopg.DatabaseError as exc:
            if isinstance(exc, psycopg.OperationalError):
                raise
            await conn.execute("ROLLBACK")  # a lost claim, or a write refused: read the rows
    rows = await _begin_and_lock(conn, jobs, durable)
    script = Script()
    woke = _check_all(jobs, rows, now, script)
    script.add("COMMIT")
    try:
        await script.run(conn)
        return woke
    except psycopg.DatabaseError as exc:
        if isinstance(exc, psycopg.OperationalError):
            raise  # the connection or the server: the whole batch fails
        await conn.execute("ROLLBACK")
    return await _one_by_one(conn, jobs, durable=durable, now=now, refusal=refusal)


async def _commit_held(
    conn: Conn, jobs: Sequence[Job], rows: dict[bytes, Row], *, durable: bool, now: float
) -> bool:
    """The one-round-trip path: ``rows`` assumed, and checked by the guard under lock."""
    ids = sorted({(row.message_id, row.token) for row in rows.values()})
    script = Script()
    script.add("BEGIN")
    if not durable:
        script.add(NOT_DURABLE)
    guarded = {
        "ids": array_literal(i for i, _t in ids),
        "tokens": array_literal(cast(int, t) for _i, t in ids),
    }
    script.call("guard_claims", guarded)
    woke = _check_all(jobs, rows, now, script)
    script.add("COMMIT")
    await script.run(conn)
    return woke


def _check_all(jobs: Sequence[Job], rows: dict[bytes, Row], now: float, script: Script) -> bool:
    """Each job's outcomes checked (``_checked``), its ``result`` set and the writes of
    those accepted added to ``script``; True when one made a message due."""
    woke = False
    for job in jobs:
        job.result, due = _checked(job.outcomes, rows, now, script)
        woke = woke or due
    return woke


async def _one_by_one(
    conn: Conn, jobs: Sequence[Job], *, durable: bool, now: float, refusal: Refusal
) -> bool:
    """The batch again after a write failed: each outcome in a savepoint of its own, one
    round trip each, so the failing one is refused and the others are kept."""
    rows = await _begin_and_lock(conn, jobs, durable)
    woke = False
    for job in jobs:
        results: list[Recorded] = []
        refused: set[bytes] = set()
        for outcome in job.outcomes:
            row = rows.get(outcome.entry_id)
            before = None if row is None else (row.state, row.token, row.gone, list(row.declined))
            part = Script()
            recorded, due = _checked([outcome], rows, now, part, refused)
            if recorded[0].error is None:
                try:
                    await _in_savepoint(conn, part)
                except psycopg.DatabaseError as exc:
                    if isinstance(exc, psycopg.OperationalError):
                        raise
                    await conn.execute("ROLLBACK TO SAVEPOINT one_outcome")
                    assert row is not None
                    assert before is not None
                    row.state, row.token, row.gone, row.declined = before
                    refused.add(outcome.entry_id)
                    error = refusal(exc, "recording an outcome")
                    recorded, due = [Recorded(error=error)], False
            results.extend(recorded)
            woke = woke or due
        job.result = results
    await conn.execute("COMMIT")
    return woke


async def _in_savepoint(conn: Conn, part: Script) -> None:
    script = Script()
    script.add("SAVEPOINT one_outcome")
    script.extend(part)
    script.add("RELEASE SAVEPOINT one_outcome")
    await script.run(conn)


async def _begin_and_lock(conn: Conn, jobs: Sequence[Job], durable: bool) -> dict[bytes, Row]:
    """BEGIN, and the queue rows of every message in ``jobs`` locked in one query in
    message order, as ``Row``s (messages outside the queue too, without a lock)."""
    ids = sorted({o.entry_id for job in jobs for o in job.outcomes})
    script = Script()
    script.add("BEGIN")
    if not durable:
        script.add(NOT_DURABLE)
    locked = script.call("lock_entries", (ids,))
    found = (await script.run(conn))[locked] or []
    rows = {bytes(r[0]): Row(QueueState(r[1]), r[2], int(r[3]), list(r[4] or ())) for r in found}
    missing = [e for e in ids if e not in rows]
    if missing:  # messages outside the queue may still get notes and reports
        cur = await conn.execute(q("message_ids"), (missing,))
        rows.update({bytes(e): Row(None, None, int(m), []) for e, m in await cur.fetchall()})
    return rows


def _checked(
    outcomes: Iterable[Outcome],
    rows: dict[bytes, Row],
    now: float,
    script: Script,
    refused: set[bytes] | None = None,
) -> tuple[list[Recorded], bool]:
    """One caller's outcomes checked against ``rows`` (which follow the changes); the
    writes of each accepted one added to ``script``. Their ``Recorded``s, and whether one
    made a message due. An outcome after a refused one of the same message is refused."""
    results: list[Recorded] = []
    woke = False
    refused = set() if refused is None else refused
    for outcome in outcomes:
        row = rows.get(outcome.entry_id)
        try:
            if outcome.entry_id in refused:
                raise MapiError(
                    MAPI_E_CALL_FAILED,
                    f"{outcome.entry_id.hex()}: not recorded, an earlier outcome "
                    "of the same message in the batch failed",
                )
            check(outcome, row)
            assert row is not None
            part = Script()
            recorded = _writes(part, outcome, row, now)
        except MapiError as exc:
            results.append(Recorded(error=exc))
            refused.add(outcome.entry_id)
            continue
        script.extend(part)
        results.append(recorded)
        woke = woke or outcome.state in DUE
    return results, woke


def _writes(script: Script, outcome: Outcome, row: Row, now: float) -> Recorded:
    """Add the statements of ``outcome`` (checked) to ``script``; ``row`` follows."""
    entry_id, message_id = outcome.entry_id, row.message_id
    old = row.state
    folder = None
    finished = outcome.state is not None and outcome.state.finished
    if finished and not outcome.delete and outcome.folder is not None:
        folder = folder_id(outcome.folder)  # before any write: an unknown name refuses
    if outcome.recipients:
        script.call(
            "save_recipients",
            {
                "message_id": message_id,
                "row_ids": array_literal(r.row_id for r in outcome.recipients),
                "responsibility": array_literal(bool(r.responsibility) for r in outcome.recipients),
                "props": [dump_props(r.props) for r in outcome.recipients],
            },
        )
    for ro in outcome.recipient_outcomes:
        script.call("set_recipient_outcomes",
            {"outcome": ro.outcome, "transport": ro.transport, "report_text": ro.report_text,
             "message_id": message_id, "row_ids": array_literal(ro.row_ids)},
        )  # fmt: skip
    if outcome.declined and outcome.declined not in row.declined:
        row.declined = [*row.declined, outcome.declined]
        script.call("set_declined", (row.declined, message_id))
    for note in outcome.notes:
        script.call("insert_event", _event(entry_id, note.kind, note.transport, note.detail, now))
    if outcome.state is not None and row.state is not None:
        row.gone = _state_change(script, outcome, message_id, folder, now)
        row.state, row.token = outcome.state, None
    report_ids = []
    for report in outcome.reports:
        if not row.gone:
            for rid in report.ndr_rows:
                script.call("mark_ndr_sent", (message_id, rid))
            if report.delay_notice:
                script.call("mark_delay_notified", (message_id,))
        if report.content is not None:
            report_id = _report(script, report.content, report.props, now)
            script.call("insert_event", _event(report_id, "received", None, "Inbox", now))
            report_ids.append(report_id)
    return Recorded(old=old, report_ids=tuple(report_ids))


def _state_change(
    script: Script, outcome: Outcome, message_id: int, folder: int | None, now: float
) -> bool:
    """Add the state change; True when the message is deleted with it."""
    new = cast(QueueState, outcome.state)
    detail = outcome.error
    if new.finished:
        detail = outcome.folder if outcome.error is None else outcome.error
        if outcome.delete:
            kind = outcome.event or new.value
            script.call(
                "insert_event", _event(outcome.entry_id, kind, outcome.transport, detail, now)
            )
            script.call("delete_message_by_id", (message_id,))
            return True
    params: dict[str, Any] = {
        "entry_id": outcome.entry_id,
        "kind": outcome.event or new.value,
        "transport": outcome.transport,
        "detail": storable(detail) if detail is not None else None,
        "folder_id": folder if new.finished else None,
        "state": new.value,
        "not_before": None if new.finished else outcome.not_before,
        "error": outcome.error,
        "parked_by": outcome.parked_by,
        "attempt": int(outcome.count_attempt),
        "now": now,
        "message_id": message_id,
    }
    script.call("change_state_logged", params)
    return False


def _report(script: Script, content: bytes, props: Mapping[int, Any], now: float) -> bytes:
    """Add a generated report to the Inbox; its entry id."""
    entry_id = new_entry_id()
    params = message_row(entry_id, FOLDER_IDS["Inbox"], content, props, now)
    params.update(data=content, sha256=content_digest(content))
    script.call("insert_report", params)
    return entry_id


def _event(
    entry_id: bytes, kind: str, transport: str | None, detail: str | None, at: float
) -> tuple[Any, ...]:
    return (entry_id, at, kind, transport, storable(detail) if detail is not None else None)


def check(outcome: Outcome, row: Row | None) -> None:
    """Raise what refuses ``outcome`` (unknown message, stale token, a transition the state
    machine or ``expect`` does not allow); nothing when it may be applied."""
    entry_id = outcome.entry_id
    if outcome.token is not None and (row is None or row.gone or row.state is None):
        raise StaleClaim(entry_id, outcome.token)  # the claim ended with its message
    if row is None or row.gone:
        raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
    if row.state is None:
        if outcome.state is not None or outcome.declined:
            raise MapiError(MAPI_E_NOT_FOUND, f"{entry_id.hex()} is not in the queue")
        return
    if outcome.token is not None and (
        row.state is not QueueState.IN_FLIGHT or row.token != outcome.token
    ):
        raise StaleClaim(entry_id, outcome.token)
    if outcome.state is not None:
        allowed = outcome.expect
        if (allowed is not None and row.state not in allowed) or (
            outcome.state not in TRANSITIONS[row.state]
        ):
            raise InvalidTransition(
                f"{entry_id.hex()}: cannot go from {row.state.value} to {outcome.state.value}"
            )

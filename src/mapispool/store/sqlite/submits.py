"""Group commit for ``SqliteStore.submit``: the submissions that callers (threads of a
program, the SMTP listener's connections) hand in while the writer thread is busy are
stored together, in one durable (fsync'd) transaction, each in its own savepoint, so
that one refused submission never takes the others with it.

Each caller's future is resolved only after the transaction holding its message has
committed with ``synchronous = FULL``: a message is durable when its ``submit`` returns,
exactly as with one transaction per message. A lone caller waits for no one (no timer):
a batch is whatever queued up while the previous fsync ran.

The caller may wait on the future from any thread (``SqliteStore.submit_blocking``: the
synchronous ``Session.submit`` blocks on it in its own thread, with no event loop in
between) or await it (``SqliteStore.submit``)."""

from __future__ import annotations

import concurrent.futures
import sqlite3
import threading
from collections.abc import Sequence

from ...mapi import MAPI_E_CALL_FAILED, MapiError
from ..model import QueueState
from ..types import Submission
from .database import MEMORY, Database, DbThread
from .integrity import write_seq
from .queries import Q
from .writes import event, insert_message

#: At most this many submissions in one transaction.
SUBMIT_GROUP_LIMIT = 256


_Job = tuple[Submission, "concurrent.futures.Future[bytes]"]


class SubmitGroup:
    """Batches submissions onto the store's writer thread."""

    def __init__(self, db: Database, thread: DbThread) -> None:
        self._db = db
        self._thread = thread
        self._lock = threading.Lock()
        self._pending: list[_Job] = []
        self._scheduled = False

    def submit(self, item: Submission) -> concurrent.futures.Future[bytes]:
        """Queue ``item``; the future gives its entry id once it is durable (or the
        ``MapiError`` that refused it)."""
        future: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        with self._lock:
            self._pending.append((item, future))
            start = not self._scheduled
            self._scheduled = True
        if start:
            self._thread.submit(self._commit)
        return future

    def _commit(self) -> None:
        """On the writer thread: one durable transaction for what is queued."""
        with self._lock:
            batch = self._pending[:SUBMIT_GROUP_LIMIT]
            del self._pending[:SUBMIT_GROUP_LIMIT]
            more = bool(self._pending)
            self._scheduled = more
        if more:
            self._schedule_rest()
        try:
            results = store_batch(self._db, [item for item, _future in batch])
        except BaseException as exc:
            for _item, future in batch:
                future.set_exception(exc)
            return
        for (_item, future), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _schedule_rest(self) -> None:
        """Queue the next batch; when the store is closing (its thread takes no more
        work), every caller still waiting gets an error instead of waiting for ever."""
        try:
            self._thread.submit(self._commit)
        except RuntimeError:
            with self._lock:
                left, self._pending, self._scheduled = self._pending, [], False
            error = MapiError(MAPI_E_CALL_FAILED, "the store was closed before the message "
                              "was stored; submit it again")  # fmt: skip
            for _item, future in left:
                future.set_exception(error)


def store_batch(db: Database, items: Sequence[Submission]) -> list[bytes | MapiError]:
    """Every item with its queue entry and its ``submitted`` event, and the submission
    count raised by the number stored, in one durable transaction; then the count's copy
    outside the database. One item is stored without a savepoint (its error fails the
    transaction); several each get one, so that a refused item leaves the others."""
    results: list[bytes | MapiError] = []
    stored = 0
    with db.tx("submitting a message") as conn:
        for item in items:
            if len(items) == 1:
                results.append(_insert(db, conn, item))
                stored += 1
                continue
            conn.execute("SAVEPOINT submission")
            try:
                results.append(_insert(db, conn, item))
                stored += 1
            except MapiError as exc:
                conn.execute("ROLLBACK TO submission")
                results.append(exc)
            except sqlite3.Error as exc:
                if not conn.in_transaction:
                    raise  # SQLite rolled the whole transaction back (full disk, I/O)
                conn.execute("ROLLBACK TO submission")
                results.append(db.error(exc, "submitting a message"))
            conn.execute("RELEASE submission")
        count = None
        if stored:
            (count,) = conn.execute(Q.count_submissions, {"count": stored}).fetchone()
    if count is not None and str(db.path) != MEMORY:
        write_seq(db.path, int(count))
    return results


def _insert(db: Database, conn: sqlite3.Connection, item: Submission) -> bytes:
    """One submission's rows (inside the caller's transaction); its entry id."""
    deferred = item.not_before is not None and item.not_before > item.submit_time
    state = QueueState.DEFERRED if deferred else QueueState.QUEUED
    due_at = item.not_before if deferred and item.not_before is not None else item.submit_time
    message_id, entry_id = insert_message(
        db, conn, "Outbox", item.content, item.props, item.recipients, item.submit_time,
        eight_bit=item.eight_bit, canonical=item.canonical,
    )  # fmt: skip
    conn.execute(
        Q.insert_queue,
        {
            "message_id": message_id,
            "state": state.value,
            "submit_time": item.submit_time,
            "not_before": item.not_before,
            "expires_at": item.expires_at + (due_at - item.submit_time),
            "due_at": due_at,
        },
    )
    event(conn, entry_id, "submitted", None, state.value, item.submit_time)
    return entry_id

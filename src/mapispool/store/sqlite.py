"""The SQLite store (WAL): folders, messages, the outgoing queue, dedupe keys, events,
status rows and transport state. Every public method is one transaction.

The store is synchronous: SQLite calls here are short, and the spooler calls them from
its event loop thread. Several processes may open the same store (WAL, busy timeout);
only one of them may run a spooler on it (``acquire_spooler_lock``).
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..mapi import (
    MAPI_E_NO_ACCESS,
    MAPI_E_NOT_ENOUGH_DISK,
    MAPI_E_NOT_FOUND,
    MAPI_E_VERSION,
    PR_MESSAGE_CLASS,
    PR_SUBJECT,
    MapiError,
    RecipientType,
)
from ..spi import Recipient
from .codec import dump_json, dump_props, load_json, load_props
from .errors import describe_open_failure, translate
from .integrity import (
    ContentReader,
    check_store,
    content_digest,
    forget_seq,
    mark_running,
    mark_stopped,
    write_seq,
)
from .migrations import SchemaTooNew, migrate
from .model import (
    TRANSITIONS,
    Event,
    InvalidTransition,
    QueueEntry,
    QueueState,
    StoredMessage,
)
from .text import StorableTextConnection

log = logging.getLogger(__name__)

FOLDERS = ("Outbox", "Inbox", "Sent Items", "Deleted Items")


def new_entry_id() -> bytes:
    """A fresh, opaque 16-byte message entry id."""
    return uuid.uuid4().bytes


class SqliteStore:
    """A mapispool store in one SQLite file. ``Store`` is this class's public name."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_file: IO[bytes] | None = None
        self._durable = True
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not self.path.exists():
                    # A new store: a .seq file left by a deleted one would report losses.
                    forget_seq(self.path)
                    # Created private before SQLite opens it (SQLite gives its -wal and
                    # -shm files the database file's mode), so no other user ever can.
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
                    os.chmod(self.path, 0o600)
                # StorableTextConnection: no text parameter can make a write fail.
                self._conn = sqlite3.connect(
                    self.path, timeout=10.0, isolation_level=None, check_same_thread=False,
                    factory=StorableTextConnection,
                )  # fmt: skip
            else:
                self._conn = sqlite3.connect(
                    ":memory:", isolation_level=None, check_same_thread=False,
                    factory=StorableTextConnection,
                )  # fmt: skip
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            migrate(self._conn)
            self._folder_ids: dict[str, int] = {
                str(name): int(fid)
                for fid, name in self._conn.execute("SELECT id, name FROM folders")
            }
        except SchemaTooNew as exc:
            raise MapiError(MAPI_E_VERSION, f"{self.path}: {exc}") from exc
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise MapiError(
                    MAPI_E_NOT_ENOUGH_DISK,
                    f"cannot create the store {self.path}: the disk is full; free space",
                ) from exc
            raise describe_open_failure(
                self.path, f"cannot create the store {self.path}", str(exc.strerror)
            ) from exc
        except sqlite3.Error as exc:
            raise self._error(exc, "opening the store") from exc
        #: A one-line alert from the checks at the spooler's start (``integrity``), or None.
        self.integrity_alert: str | None = None

    # -- plumbing -----------------------------------------------------------------

    def _error(self, exc: sqlite3.Error, what: str) -> MapiError:
        """``exc`` as a ``MapiError`` naming this store, the cause and what to do."""
        return translate(exc, what, self.path)

    @contextmanager
    def _tx(self, what: str, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. ``durable`` ones (the default: submits, received mail,
        dedupe keys, transport state) are fsync'd at commit (``synchronous = FULL``), which
        also makes every earlier commit durable. The others are the spooler's state changes
        after a durable submit (``synchronous = NORMAL``): WAL keeps them through a crash
        of the process; after a power loss the last ones may be lost, which at worst
        sends a message again (at-least-once, DESIGN §7)."""
        self._set_sync(durable)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc, what) from exc
        try:
            yield self._conn
        except sqlite3.Error as exc:
            self._rollback()
            raise self._error(exc, what) from exc
        except BaseException:
            self._rollback()
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._error(exc, what) from exc

    def _rollback(self) -> None:
        """Roll back, unless SQLite already did (it does on SQLITE_FULL and SQLITE_IOERR;
        a second ROLLBACK would hide the real error behind 'no transaction is active')."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _set_sync(self, durable: bool) -> None:
        if durable is not self._durable:
            try:
                self._conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            except sqlite3.Error as exc:
                raise self._error(exc, "configuring the store") from exc
            self._durable = durable

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row | tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, "reading the store") from exc

    def close(self) -> None:
        """Close the connection and release the spooler lock if held."""
        self.release_spooler_lock()
        self._conn.close()

    def acquire_spooler_lock(self) -> bool:
        """Take the one-spooler-per-store lock; False if another process holds it.

        The lock file is named after the store's real path (symlinks and ``..`` resolved),
        so every name of the same file finds the same lock. A store file with a second
        hard link is refused (``MAPI_E_NO_ACCESS``): the names could not share one lock,
        and SQLite names its WAL after the path, so two names would not share a journal."""
        if self._lock_file is not None:
            return True
        real = Path(os.path.realpath(self.path))
        links = real.stat().st_nlink if real.exists() else 1
        if links > 1:
            raise MapiError(
                MAPI_E_NO_ACCESS,
                f"the store {real} has {links} hard links; a spooler on one name would not "
                "see one on another, and SQLite keeps a journal per name: keep one name "
                "(use a symlink for the others)",
            )
        lock_path = Path(f"{real}.lock")
        fd = os.open(lock_path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        handle = os.fdopen(fd, "ab")  # held open for the spooler's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock_file = handle
        self._check_integrity(unclean=mark_running(handle))
        return True

    def _check_integrity(self, *, unclean: bool) -> None:
        """The checks at a spooler's start (``integrity.check_store``); a problem becomes
        ``integrity_alert`` and an error in the log, for the status table to show."""
        if str(self.path) == ":memory:":
            return
        try:
            self.integrity_alert, _count = check_store(self._conn, self.path, unclean=unclean)
        except sqlite3.Error as exc:
            self.integrity_alert = str(self._error(exc, "checking the store").message)
        if self.integrity_alert:
            log.error("%s", self.integrity_alert)

    def release_spooler_lock(self) -> None:
        """Give the spooler lock back (a clean stop: the next start skips quick_check)."""
        if self._lock_file is not None:
            mark_stopped(self._lock_file)
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _message_id(self, entry_id: bytes) -> int:
        rows = self._read("SELECT id FROM messages WHERE entry_id = ?", (entry_id,))
        if not rows:
            raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
        return int(rows[0][0])

    # -- folders and messages -----------------------------------------------------

    def folder_names(self) -> list[str]:
        """The folders, in their fixed order."""
        return list(FOLDERS)

    def folder_entry_id(self, name: str) -> bytes:
        """The entry id of a folder (what ``PR_SENTMAIL_ENTRYID`` may name)."""
        rows = self._read("SELECT entry_id FROM folders WHERE name = ?", (name,))
        if not rows:
            raise MapiError(MAPI_E_NOT_FOUND, f"no folder called {name!r}; use one of {FOLDERS}")
        return bytes(rows[0][0])

    def folder_by_entry_id(self, entry_id: bytes) -> str | None:
        """The folder name for a folder entry id, or None."""
        rows = self._read("SELECT name FROM folders WHERE entry_id = ?", (entry_id,))
        return str(rows[0][0]) if rows else None

    def _folder_id(self, name: str) -> int:
        try:
            return self._folder_ids[name]
        except KeyError:
            raise MapiError(
                MAPI_E_NOT_FOUND, f"no folder called {name!r}; use one of {FOLDERS}"
            ) from None

    def _insert_message(
        self,
        conn: sqlite3.Connection,
        folder: str,
        content: bytes,
        props: Mapping[int, Any],
        recipients: Sequence[Recipient],
        now: float,
    ) -> tuple[int, bytes]:
        entry_id = new_entry_id()
        cur = conn.execute(
            "INSERT INTO messages (entry_id, folder_id, message_class, subject, props, content,"
            " size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry_id,
                self._folder_id(folder),
                str(props.get(PR_MESSAGE_CLASS, "IPM.Note")),
                str(props.get(PR_SUBJECT, "")),
                dump_props(props),
                b"",
                len(content),
                now,
            ),
        )
        message_id = int(cur.lastrowid or 0)
        # The content has a table of its own: later UPDATEs of the message row (a move to
        # Sent Items, new properties) then never rewrite a large blob.
        conn.execute(
            "INSERT INTO contents (message_id, data, sha256) VALUES (?, ?, ?)",
            (message_id, content, content_digest(content)),
        )
        conn.executemany(
            "INSERT INTO recipients (message_id, row_id, address, addrtype, display_name,"
            " recipient_type, responsibility, props) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    message_id,
                    index,
                    r.address,
                    r.addrtype,
                    r.display_name,
                    int(r.recipient_type),
                    int(r.responsibility),
                    dump_props(r.props),
                )
                for index, r in enumerate(recipients)
            ],
        )
        return message_id, entry_id

    def submit(
        self,
        content: bytes,
        props: Mapping[int, Any],
        recipients: Sequence[Recipient],
        *,
        submit_time: float,
        not_before: float | None,
        expires_at: float,
    ) -> bytes:
        """Write a message into the Outbox with its queue entry, in one transaction.

        The entry is ``deferred`` when ``not_before`` is in the future (send later), else
        ``queued``. ``expires_at`` is the submit time plus the lifetime; the lifetime
        counts from when the message becomes due, so for a message sent later it is moved
        by the deferral (``expires_at - submit_time`` after ``not_before``). The same
        transaction counts the submission (``integrity``). Returns the new entry id."""
        deferred = not_before is not None and not_before > submit_time
        state = QueueState.DEFERRED if deferred else QueueState.QUEUED
        due_at = not_before if deferred and not_before is not None else submit_time
        expires_at += due_at - submit_time
        with self._tx("submitting a message") as conn:
            message_id, entry_id = self._insert_message(
                conn, "Outbox", content, props, recipients, submit_time
            )
            conn.execute(
                "INSERT INTO queue (message_id, state, submit_time, not_before, expires_at,"
                " due_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (message_id, state.value, submit_time, not_before, expires_at, due_at,
                 submit_time),
            )  # fmt: skip
            self._event(conn, entry_id, "submitted", None, state.value, submit_time)
            conn.execute("UPDATE store_meta SET value = value + 1 WHERE key = 'submitted'")
            (count,) = conn.execute(
                "SELECT value FROM store_meta WHERE key = 'submitted'"
            ).fetchone()
        if str(self.path) != ":memory:":
            write_seq(self.path, int(count))
        return entry_id

    def deliver(
        self,
        folder: str,
        content: bytes,
        props: Mapping[int, Any],
        *,
        dedupe_key: str | None = None,
        recipients: Sequence[Recipient] = (),
        durable: bool = True,
    ) -> bytes | None:
        """Store a received (or generated) message in ``folder``, atomically with its dedupe
        key. Returns its entry id, or None if the dedupe key was already stored.

        ``durable=False`` commits with ``synchronous = NORMAL``: the message survives a
        crash of the process but not a power loss until the next ``sync()`` (or any other
        durable commit). The caller must not act on the server copy before that."""
        now = time.time()
        with self._tx("storing a received message", durable=durable) as conn:
            if (
                dedupe_key is not None
                and conn.execute("SELECT 1 FROM dedupe WHERE key = ?", (dedupe_key,)).fetchone()
            ):
                return None
            message_id, entry_id = self._insert_message(
                conn, folder, content, props, recipients, now
            )
            if dedupe_key is not None:
                conn.execute(
                    "INSERT INTO dedupe (key, message_id, created_at) VALUES (?, ?, ?)",
                    (dedupe_key, message_id, now),
                )
            self._event(conn, entry_id, "received", None, folder, now)
        if not durable:
            self._deliveries_unsynced = True
        return entry_id

    #: True after a ``deliver(durable=False)`` that no ``sync()`` has made durable yet.
    _deliveries_unsynced = False

    def sync(self) -> None:
        """The durability barrier: one fsync'd (``synchronous = FULL``) commit, which in WAL
        mode makes every earlier commit durable, ``deliver(durable=False)`` ones included,
        against power loss too. Nothing to do (and no fsync) when no delivery is waiting
        for it. It writes and removes a row, because a commit that changes nothing writes
        no WAL frame and so syncs nothing."""
        if not self._deliveries_unsynced:
            return
        with self._tx("making received mail durable") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO transport_state (transport, key, value)"
                " VALUES ('', 'sync', '0')"
            )
            conn.execute("DELETE FROM transport_state WHERE transport = '' AND key = 'sync'")
        self._deliveries_unsynced = False

    def deliver_report(
        self,
        entry_id: bytes,
        content: bytes | None,
        props: Mapping[int, Any],
        *,
        ndr_rows: Iterable[int] = (),
        delay_notice: bool = False,
    ) -> bytes | None:
        """Store a report about message ``entry_id`` in the Inbox and, in the same
        transaction, remember that it was sent: an NDR for ``ndr_rows``, or the delay
        notice. A crash leaves either both or neither (no lost and no repeated reports).
        ``content`` None records the fact without storing a report."""
        now = time.time()
        message_id = self._message_id(entry_id)
        with self._tx("storing a report", durable=False) as conn:
            conn.executemany(
                "UPDATE recipients SET ndr_sent = 1 WHERE message_id = ? AND row_id = ?",
                [(message_id, rid) for rid in ndr_rows],
            )
            if delay_notice:
                conn.execute(
                    "UPDATE queue SET delay_notified = 1 WHERE message_id = ?", (message_id,)
                )
            if content is None:
                return None
            _mid, report_id = self._insert_message(conn, "Inbox", content, props, (), now)
            self._event(conn, report_id, "received", None, "Inbox", now)
        return report_id

    def has_dedupe_key(self, key: str) -> bool:
        """True when a message with this dedupe key was committed."""
        return bool(self._read("SELECT 1 FROM dedupe WHERE key = ?", (key,)))

    def add_dedupe_keys(self, keys: Iterable[str]) -> None:
        """Record dedupe keys without messages (re-baselining after a UIDVALIDITY change)."""
        now = time.time()
        with self._tx("recording dedupe keys") as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO dedupe (key, message_id, created_at) VALUES (?, NULL, ?)",
                [(k, now) for k in keys],
            )

    def _recipients(self, message_id: int) -> list[Recipient]:
        rows = self._read(
            "SELECT row_id, address, addrtype, display_name, recipient_type, responsibility,"
            " props FROM recipients WHERE message_id = ? ORDER BY row_id",
            (message_id,),
        )
        result = []
        for row_id, address, addrtype, display_name, rtype, responsible, props in rows:
            recipient = Recipient(
                address=address,
                addrtype=addrtype,
                recipient_type=RecipientType(rtype),
                display_name=display_name,
                props=load_props(props),
                row_id=row_id,
            )
            recipient.responsibility = bool(responsible)
            result.append(recipient)
        return result

    def messages(self, folder: str) -> list[StoredMessage]:
        """Every message in ``folder``, oldest first."""
        rows = self._read(
            "SELECT m.id, m.entry_id, m.props, c.data FROM messages m"
            " JOIN contents c ON c.message_id = m.id WHERE m.folder_id = ? ORDER BY m.id",
            (self._folder_id(folder),),
        )
        return [
            StoredMessage(
                entry_id=bytes(entry_id),
                folder=folder,
                props=load_props(props),
                content=bytes(content),
                recipients=tuple(self._recipients(mid)),
            )
            for mid, entry_id, props, content in rows
        ]

    def message_count(self, folder: str) -> int:
        """How many messages ``folder`` holds."""
        rows = self._read(
            "SELECT count(*) FROM messages WHERE folder_id = ?", (self._folder_id(folder),)
        )
        return int(rows[0][0])

    def message(self, entry_id: bytes) -> StoredMessage:
        """One message by entry id, in whatever folder it is."""
        rows = self._read(
            "SELECT m.id, f.name, m.props, c.data FROM messages m"
            " JOIN contents c ON c.message_id = m.id"
            " JOIN folders f ON f.id = m.folder_id WHERE m.entry_id = ?",
            (entry_id,),
        )
        if not rows:
            raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
        mid, folder, props, content = rows[0]
        return StoredMessage(
            entry_id=entry_id,
            folder=folder,
            props=load_props(props),
            content=bytes(content),
            recipients=tuple(self._recipients(mid)),
        )

    def open_content(self, entry_id: bytes, *, verify: bool = True) -> IO[bytes]:
        """A stream over a message's content that reads it in pieces from the database.

        With ``verify`` (the default), reading to the end checks the content against the
        SHA-256 taken when it was stored: the read that would return its last bytes
        raises ``MapiError(MAPI_E_CORRUPT_DATA)`` (``integrity.CorruptContent``) instead
        when they differ. Contents stored before checksums existed are not checked.
        ``verify=False`` is for readers of a part (the head quoted in a report)."""
        rows = self._read(
            "SELECT c.message_id, c.sha256 FROM contents c JOIN messages m ON m.id ="
            " c.message_id WHERE m.entry_id = ?",
            (entry_id,),
        )
        if not rows:
            raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
        message_id, digest = rows[0]
        try:
            blob = self._conn.blobopen("contents", "data", message_id, readonly=True)
        except sqlite3.Error as exc:
            raise self._error(exc, "reading a message") from exc
        expected = bytes(digest) if verify and digest is not None else None
        return io.BufferedReader(ContentReader(blob, entry_id, expected), buffer_size=1 << 20)

    def load_outbound(self, entry_id: bytes) -> tuple[dict[int, Any], list[Recipient], int]:
        """A queued message's props, recipients and size, for handing to a transport."""
        rows = self._read("SELECT id, props, size FROM messages WHERE entry_id = ?", (entry_id,))
        if not rows:
            raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
        mid, props, size = rows[0]
        return load_props(props), self._recipients(mid), int(size)

    def move_message(self, entry_id: bytes, folder: str) -> None:
        """Move a message to another folder."""
        with self._tx("moving a message") as conn:
            conn.execute(
                "UPDATE messages SET folder_id = ? WHERE entry_id = ?",
                (self._folder_id(folder), entry_id),
            )
            self._event(conn, entry_id, "moved", None, folder, time.time())

    def delete_message(self, entry_id: bytes) -> None:
        """Delete a message for good (its queue entry and recipients go with it)."""
        with self._tx("deleting a message") as conn:
            conn.execute("DELETE FROM messages WHERE entry_id = ?", (entry_id,))
            self._event(conn, entry_id, "deleted", None, None, time.time())

    # -- the outgoing queue ---------------------------------------------------------

    _QUEUE_SELECT = (
        "SELECT m.entry_id, q.state, q.submit_time, q.not_before, q.expires_at, q.attempts,"
        " q.last_error, q.parked_by, q.declined, m.subject, m.size, m.id"
        " FROM queue q JOIN messages m ON m.id = q.message_id"
    )

    def _entry(self, row: Sequence[Any], with_recipients: bool = True) -> QueueEntry:
        (entry_id, state, submit_time, not_before, expires_at, attempts, last_error, parked_by,
         declined, subject, size, mid) = row  # fmt: skip
        recipients: tuple[str, ...] = ()
        if with_recipients:
            recipients = tuple(
                f"{t}:{a}"
                for t, a in self._read(
                    "SELECT addrtype, address FROM recipients WHERE message_id = ? ORDER BY row_id",
                    (mid,),
                )
            )
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

    def queue_entry(self, entry_id: bytes, *, with_recipients: bool = True) -> QueueEntry:
        """The queue entry of a submitted message (finished ones included); without
        ``with_recipients`` its ``recipients`` stay empty (one read less)."""
        rows = self._read(self._QUEUE_SELECT + " WHERE m.entry_id = ?", (entry_id,))
        if not rows:
            raise MapiError(MAPI_E_NOT_FOUND, f"{entry_id.hex()} is not in the outgoing queue")
        return self._entry(rows[0], with_recipients=with_recipients)

    def outgoing_queue(self, *, include_finished: bool = False) -> list[QueueEntry]:
        """Every submitted message not yet finished, in submit order."""
        where = "" if include_finished else " WHERE q.state NOT IN ('sent', 'cancelled')"
        rows = self._read(self._QUEUE_SELECT + where + " ORDER BY q.submit_time, m.id")
        return [self._entry(row) for row in rows]

    def _entries(
        self, where: str, params: Sequence[Any] = (), *, limit: int | None = None
    ) -> list[QueueEntry]:
        """Queue entries matching ``where``, in submit order, without recipient lists."""
        sql = f"{self._QUEUE_SELECT} WHERE {where} ORDER BY q.submit_time, m.id"
        if limit is not None:
            sql, params = f"{sql} LIMIT ?", (*params, limit)
        return [self._entry(row, with_recipients=False) for row in self._read(sql, params)]

    def due_entries(
        self,
        now: float,
        *,
        ignore_backoff: bool = False,
        limit: int = 500,
        after: tuple[float, int] | None = None,
    ) -> list[QueueEntry]:
        """Messages that may be offered now, in submit order: queued ones, send-later ones
        whose time has come, and retries whose backoff has passed (all of them with
        ``ignore_backoff``, as FLUSH_FORCE asks). ``after`` is the (submit_time, seq) of
        the last entry of the previous page."""
        since_time, since_seq = after if after is not None else (-1.0, -1)
        return self._entries(
            "(q.state = 'queued' OR (q.state = 'deferred' AND q.not_before <= ?)"
            " OR (q.state = 'retry' AND (? OR q.not_before <= ?)))"
            " AND (q.submit_time, m.id) > (?, ?)",
            (now, int(ignore_backoff), now, since_time, since_seq),
            limit=limit,
        )

    def parked_entries(self, transport: str) -> list[QueueEntry]:
        """Messages ``transport`` deferred (END_DONT_RESEND), in submit order."""
        return self._entries("q.state = 'parked' AND q.parked_by = ?", (transport,))

    def overdue_entries(self, now: float) -> list[QueueEntry]:
        """Waiting messages whose lifetime has run out. A send-later message still waiting
        for its time is never among them: its lifetime starts when it is due, and one
        that was due long ago (the spooler was stopped) is tried once before it can
        expire (an attempt that fails past the lifetime ends it)."""
        return self._entries("q.state IN ('queued', 'retry') AND q.expires_at <= ?", (now,))

    def pending_types(self, seqs: Sequence[int]) -> dict[int, list[str]]:
        """For each message row id, the address types of its recipients still pending."""
        result: dict[int, list[str]] = {seq: [] for seq in seqs}
        for start in range(0, len(seqs), 500):
            chunk = list(seqs[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for mid, addrtype in self._read(
                f"SELECT message_id, addrtype FROM recipients WHERE responsibility = 0"
                f" AND outcome IS NULL AND message_id IN ({marks})",
                chunk,
            ):
                result[int(mid)].append(str(addrtype))
        return result

    def settled_entries(self) -> list[QueueEntry]:
        """Queued or retrying messages none of whose recipients is pending any more (a
        spooler stopped between recording the outcomes and finishing the message)."""
        return self._entries(
            "q.state IN ('queued', 'retry') AND NOT EXISTS"
            " (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.outcome IS NULL)"
        )

    def delayed_entries(self, submitted_before: float) -> list[QueueEntry]:
        """Messages still waiting to be sent (queued or retrying, tried at least once),
        due (submitted, or their send-later time reached) before ``submitted_before``,
        and whose sender has not been told yet."""
        return self._entries(
            "q.state IN ('queued', 'retry') AND q.attempts > 0 AND q.delay_notified = 0"
            " AND coalesce(q.due_at, q.submit_time) <= ?",
            (submitted_before,),
        )

    def next_wakeup(self) -> float | None:
        """The earliest ``not_before`` of a deferred or retrying message, or None."""
        rows = self._read(
            "SELECT min(not_before) FROM queue WHERE state IN (?, ?)",
            (QueueState.DEFERRED.value, QueueState.RETRY.value),
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def count_by_state(self) -> dict[QueueState, int]:
        """How many queue entries are in each state."""
        rows = self._read("SELECT state, count(*) FROM queue GROUP BY state")
        return {QueueState(state): int(n) for state, n in rows}

    def _check_transition(
        self,
        conn: sqlite3.Connection,
        entry_id: bytes,
        new: QueueState,
        expect: Iterable[QueueState] | None = None,
    ) -> tuple[QueueState, int]:
        """Inside a write transaction: the entry's current state and message row id, after
        checking that the state machine (and ``expect``, if given) allows going to ``new``."""
        row = conn.execute(
            "SELECT q.state, m.id FROM queue q JOIN messages m ON m.id = q.message_id"
            " WHERE m.entry_id = ?",
            (entry_id,),
        ).fetchone()
        if row is None:
            raise MapiError(MAPI_E_NOT_FOUND, f"{entry_id.hex()} is not in the queue")
        old = QueueState(row[0])
        allowed = set(expect) if expect is not None else None
        if (allowed is not None and old not in allowed) or new not in TRANSITIONS[old]:
            raise InvalidTransition(f"{entry_id.hex()}: cannot go from {old.value} to {new.value}")
        return old, int(row[1])

    def transition(
        self,
        entry_id: bytes,
        new: QueueState,
        *,
        expect: Iterable[QueueState] | None = None,
        not_before: float | None = None,
        error: str | None = None,
        parked_by: str | None = None,
        count_attempt: bool = False,
        event: str | None = None,
        transport: str | None = None,
    ) -> QueueState:
        """Move a queue entry to ``new``, checking the state machine; returns the old state.

        ``expect`` narrows the allowed old states (MAPI_E_NOT_FOUND-style errors are raised
        as ``InvalidTransition`` when the entry is elsewhere)."""
        now = time.time()
        with self._tx("updating the queue", durable=False) as conn:
            old, _message_id = self._check_transition(conn, entry_id, new, expect)
            conn.execute(
                "UPDATE queue SET state = ?, not_before = ?, last_error = coalesce(?, last_error),"
                " parked_by = ?, attempts = attempts + ?, handoff = 0, updated_at = ?"
                " WHERE message_id = (SELECT id FROM messages WHERE entry_id = ?)",
                (new.value, not_before, error, parked_by, int(count_attempt), now, entry_id),
            )
            self._event(conn, entry_id, event or new.value, transport, error, now)
        return old

    def mark_handoff(self, entry_id: bytes, begun: bool) -> None:
        """Persist that a transport began (True) or finished (False) the irreversible
        hand-over of a message; a crash in between makes the message uncertain."""
        with self._tx("recording a hand-over", durable=False) as conn:
            conn.execute(
                "UPDATE queue SET handoff = ? WHERE message_id ="
                " (SELECT id FROM messages WHERE entry_id = ?)",
                (int(begun), entry_id),
            )

    def add_declined(self, entry_id: bytes, transport: str) -> None:
        """Remember that ``transport`` answered MAPI_E_NOT_ME for this message."""
        entry = self.queue_entry(entry_id)
        declined = [*entry.declined, transport] if transport not in entry.declined else None
        if declined is None:
            return
        with self._tx("updating the queue", durable=False) as conn:
            conn.execute(
                "UPDATE queue SET declined = ? WHERE message_id ="
                " (SELECT id FROM messages WHERE entry_id = ?)",
                (json.dumps(declined), entry_id),
            )

    def save_recipients(self, entry_id: bytes, recipients: Sequence[Recipient]) -> None:
        """Persist recipients' responsibility and properties after a transport call."""
        message_id = self._message_id(entry_id)
        with self._tx("saving recipients", durable=False) as conn:
            conn.executemany(
                "UPDATE recipients SET responsibility = ?, props = ? WHERE message_id = ?"
                " AND row_id = ?",
                [
                    (int(r.responsibility), dump_props(r.props), message_id, r.row_id)
                    for r in recipients
                ],
            )

    def set_recipient_outcome(
        self,
        entry_id: bytes,
        row_ids: Iterable[int],
        outcome: str,
        *,
        transport: str | None,
        report_text: str | None = None,
    ) -> None:
        """Record ``delivered`` or ``failed`` for some recipients of a message."""
        message_id = self._message_id(entry_id)
        with self._tx("saving recipient outcomes", durable=False) as conn:
            conn.executemany(
                "UPDATE recipients SET outcome = ?, transport = ?, report_text = ?,"
                " responsibility = 1 WHERE message_id = ? AND row_id = ?",
                [(outcome, transport, report_text, message_id, rid) for rid in row_ids],
            )

    def complete_delivery(
        self,
        entry_id: bytes,
        recipients: Sequence[Recipient],
        *,
        transport: str,
        folder: str | None,
    ) -> None:
        """An in-flight message whose every recipient ``transport`` took (their outcomes
        already recorded with ``set_recipient_outcome``), in one transaction: the
        recipients' responsibility and properties saved, the entry back from in flight
        (event ``handed-over``) and finished as sent, the message moved to ``folder`` or
        deleted when it is None. The same rows and events as ``save_recipients`` +
        ``transition`` + ``finish``."""
        now = time.time()
        with self._tx("recording a delivery", durable=False) as conn:
            _old, message_id = self._check_transition(conn, entry_id, QueueState.QUEUED)
            conn.executemany(
                "UPDATE recipients SET responsibility = ?, props = ? WHERE message_id = ?"
                " AND row_id = ?",
                [
                    (int(r.responsibility), dump_props(r.props), message_id, r.row_id)
                    for r in recipients
                ],
            )
            self._event(conn, entry_id, "handed-over", transport, None, now)
            self._event(conn, entry_id, QueueState.SENT.value, None, folder, now)
            if folder is None:
                conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
                return
            conn.execute(
                "UPDATE queue SET state = ?, not_before = NULL, parked_by = NULL, handoff = 0,"
                " last_error = NULL, updated_at = ? WHERE message_id = ?",
                (QueueState.SENT.value, now, message_id),
            )
            conn.execute(
                "UPDATE messages SET folder_id = ? WHERE id = ?",
                (self._folder_id(folder), message_id),
            )

    def recipient_outcomes(self, entry_id: bytes) -> list[tuple[int, str | None, str | None, bool]]:
        """(row id, outcome, report text, NDR already sent) for each recipient."""
        rows = self._read(
            "SELECT row_id, outcome, report_text, ndr_sent FROM recipients WHERE message_id = ?"
            " ORDER BY row_id",
            (self._message_id(entry_id),),
        )
        return [(int(r), o, t, bool(n)) for r, o, t, n in rows]

    def reopen_failed(self, entry_id: bytes, expires_at: float) -> None:
        """A person asked to send a failed message again: its failed recipients become
        pending again and it gets a new lifetime (the state change is ``transition``'s)."""
        message_id = self._message_id(entry_id)
        with self._tx("reopening a message") as conn:
            conn.execute(
                "UPDATE recipients SET outcome = NULL, report_text = NULL, ndr_sent = 0,"
                " responsibility = 0, transport = NULL WHERE message_id = ? AND outcome = 'failed'",
                (message_id,),
            )
            conn.execute(
                "UPDATE queue SET expires_at = ?, due_at = ?, declined = '[]',"
                " delay_notified = 0 WHERE message_id = ?",
                (expires_at, time.time(), message_id),
            )

    def mark_ndr_sent(self, entry_id: bytes, row_ids: Iterable[int]) -> None:
        """Remember that these recipients' failures were reported."""
        message_id = self._message_id(entry_id)
        with self._tx("recording an NDR", durable=False) as conn:
            conn.executemany(
                "UPDATE recipients SET ndr_sent = 1 WHERE message_id = ? AND row_id = ?",
                [(message_id, rid) for rid in row_ids],
            )

    def finish(
        self, entry_id: bytes, state: QueueState, *, folder: str | None, error: str | None = None
    ) -> None:
        """End a message's life in the queue: ``state`` (sent, failed or cancelled), and the
        message moved to ``folder`` or deleted when ``folder`` is None. A sent message
        keeps no last error; ``error`` (why it failed) replaces the last one."""
        now = time.time()
        with self._tx("finishing a message", durable=False) as conn:
            self._check_transition(conn, entry_id, state)
            self._event(conn, entry_id, state.value, None, folder, now)
            if folder is None:
                conn.execute("DELETE FROM messages WHERE entry_id = ?", (entry_id,))
                return
            conn.execute(
                "UPDATE queue SET state = ?, not_before = NULL, updated_at = ?, last_error ="
                " CASE WHEN ? THEN NULL ELSE coalesce(?, last_error) END WHERE message_id ="
                " (SELECT id FROM messages WHERE entry_id = ?)",
                (state.value, now, state is QueueState.SENT, error, entry_id),
            )
            conn.execute(
                "UPDATE messages SET folder_id = ? WHERE entry_id = ?",
                (self._folder_id(folder), entry_id),
            )

    def purge(self, entry_id: bytes) -> None:
        """Remove a message and its queue entry for good (a person asked for it)."""
        self.delete_message(entry_id)

    def recover(self, *, parked: bool = True) -> dict[str, int]:
        """Repair what a killed spooler left behind; call before a new spooler starts.

        In-flight messages whose hand-over had begun become ``uncertain`` (never resent
        silently) unless every recipient's outcome was already committed; other in-flight
        ones go back to ``queued``; parked ones are re-queued,
        since the transport that parked them is gone with the old process. With
        ``parked=False`` only in-flight messages are repaired: what a running spooler
        calls once nothing is being sent (an error left a message in flight)."""
        now = time.time()
        counts = {"requeued": 0, "uncertain": 0, "unparked": 0}
        with self._tx("recovering the queue") as conn:
            rows = conn.execute(
                "SELECT m.entry_id, q.state, q.handoff, (SELECT count(*) FROM recipients r"
                " WHERE r.message_id = m.id AND r.outcome IS NULL) FROM queue q"
                " JOIN messages m ON m.id = q.message_id WHERE q.state IN ('in_flight', ?)",
                (QueueState.PARKED.value if parked else QueueState.IN_FLIGHT.value,),
            ).fetchall()
            for entry_id, state, handoff, pending in rows:
                if state == QueueState.PARKED.value:
                    new, key, why = QueueState.QUEUED, "unparked", "the spooler restarted"
                elif handoff and not pending:
                    # Every recipient's outcome was committed before the crash: nothing is
                    # unknown, and the spooler finishes the message (Spooler.start).
                    new, key = QueueState.QUEUED, "requeued"
                    why = "the spooler stopped after recording every recipient's outcome"
                elif handoff:
                    new, key = QueueState.UNCERTAIN, "uncertain"
                    why = "the spooler stopped after the message was handed over"
                else:
                    new, key = QueueState.QUEUED, "requeued"
                    why = "the spooler stopped before the message was handed over"
                conn.execute(
                    "UPDATE queue SET state = ?, handoff = 0, parked_by = NULL, last_error = ?,"
                    " updated_at = ?"
                    " WHERE message_id = (SELECT id FROM messages WHERE entry_id = ?)",
                    (new.value, why, now, entry_id),
                )
                self._event(conn, bytes(entry_id), f"recovered-{new.value}", None, why, now)
                counts[key] += 1
        return counts

    # -- events -----------------------------------------------------------------------

    def _event(
        self,
        conn: sqlite3.Connection,
        entry_id: bytes,
        kind: str,
        transport: str | None,
        detail: str | None,
        at: float,
    ) -> None:
        conn.execute(
            "INSERT INTO events (entry_id, at, kind, transport, detail) VALUES (?, ?, ?, ?, ?)",
            (entry_id, at, kind, transport, detail),
        )

    def log_event(
        self, entry_id: bytes, kind: str, *, transport: str | None = None, detail: str | None = None
    ) -> None:
        """Append a line to a message's history."""
        with self._tx("recording an event", durable=False) as conn:
            self._event(conn, entry_id, kind, transport, detail, time.time())

    def events(self, entry_id: bytes) -> list[Event]:
        """A message's history, oldest first."""
        rows = self._read(
            "SELECT at, kind, transport, detail FROM events WHERE entry_id = ? ORDER BY id",
            (entry_id,),
        )
        return [Event(at, kind, transport, detail) for at, kind, transport, detail in rows]

    # -- status rows and transport state -------------------------------------------------

    def save_status_rows(self, rows: Sequence[Mapping[int, Any]], names: Sequence[str]) -> None:
        """Replace the persisted status table (for commands run from another process)."""
        now = time.time()
        with self._tx("saving status rows", durable=False) as conn:
            conn.execute("DELETE FROM status_rows")
            conn.executemany(
                "INSERT INTO status_rows (name, position, props, updated_at) VALUES (?, ?, ?, ?)",
                [
                    (name, i, dump_props(row), now)
                    for i, (name, row) in enumerate(zip(names, rows, strict=True))
                ],
            )

    def load_status_rows(self) -> list[dict[int, Any]]:
        """The status table as the last spooler saved it."""
        return [
            load_props(props)
            for (props,) in self._read("SELECT props FROM status_rows ORDER BY position")
        ]

    def get_transport_state(self, transport: str, key: str) -> Any:
        """A value saved by ``set_transport_state``, or None."""
        rows = self._read(
            "SELECT value FROM transport_state WHERE transport = ? AND key = ?", (transport, key)
        )
        return load_json(rows[0][0]) if rows else None

    def set_transport_state(self, transport: str, key: str, value: Any) -> None:
        """Durably save a JSON value for a transport."""
        with self._tx("saving transport state") as conn:
            conn.execute(
                "INSERT INTO transport_state (transport, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (transport, key) DO UPDATE SET value = excluded.value",
                (transport, key, dump_json(value)),
            )


Store = SqliteStore

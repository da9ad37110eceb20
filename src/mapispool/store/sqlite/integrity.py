"""Integrity of the SQLite store: a checksum of every stored content checked while it is
read, a count of submissions kept outside the database to notice lost commits, and a
marker of an unclean shutdown that asks for ``PRAGMA quick_check`` on the next start.

Why a copy outside the database: a store that loses its last commits (a write-ahead log
truncated or deleted after a crash, an old copy put back) loses a counter kept inside it
together with the messages, so it cannot tell. The ``.seq`` file next to the store is
written after each submission commits; it can only lag behind the database (a crash
between the commit and the write), never run ahead of it, unless commits were lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sqlite3
from pathlib import Path
from typing import IO, Any

from ...mapi import MAPI_E_CORRUPT_DATA, MapiError


def content_digest(data: bytes | memoryview) -> bytes:
    """The checksum stored beside a content (SHA-256)."""
    return hashlib.sha256(data).digest()


class CorruptContent(MapiError):
    """A stored content no longer matches the checksum taken when it was stored."""

    def __init__(self, entry_id: bytes) -> None:
        super().__init__(
            MAPI_E_CORRUPT_DATA,
            f"the stored copy of message {entry_id.hex()} is corrupt: its content no longer "
            "matches the SHA-256 taken when it was submitted (the store file was damaged or "
            "changed); it was not sent. Submit the message again",
        )


class ContentReader(io.RawIOBase):
    """A read-only stream over an SQLite blob handle that checks the content's checksum.

    With an ``expected`` digest, the read that reaches the end of the content raises
    ``CorruptContent`` instead of returning its bytes when the digest differs: a reader
    (a transport streaming the message out) never gets the last bytes of a corrupt
    message, so it never completes a hand-over. Without one (contents stored by older
    versions, or a reader that wants only the head) nothing is checked."""

    def __init__(self, blob: sqlite3.Blob, entry_id: bytes, expected: bytes | None) -> None:
        self._blob = blob
        self._entry_id = entry_id
        self._size = len(blob)
        self._done = 0
        self._hash = hashlib.sha256() if expected is not None else None
        self._expected = expected

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._blob.read(len(buffer))
        if self._hash is not None:
            self._hash.update(data)
            self._done += len(data)
            if self._done >= self._size or not data:
                digest, self._hash = self._hash.digest(), None
                if digest != self._expected:
                    raise CorruptContent(self._entry_id)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._blob.close()
        super().close()


# -- the submission count outside the database ---------------------------------------------


def seq_path(store_path: Path) -> Path:
    """Where the copy of the submission count lives: next to the store file."""
    return store_path.with_name(store_path.name + ".seq")


def write_seq(store_path: Path, value: int) -> None:
    """Record ``value`` (the database's submission count just committed). Best effort: a
    failure here must never turn a committed submission into an error, and a missed
    write only makes the next check less sharp. Not fsync'd: it may lag after a power
    loss, which hides a loss but never invents one."""
    with contextlib.suppress(OSError):
        fd = os.open(seq_path(store_path), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, f"{value:20d}\n".encode("ascii"), 0)
        finally:
            os.close(fd)


def read_seq(store_path: Path) -> int | None:
    """The recorded submission count, or None when there is none (or it is unreadable)."""
    try:
        return int(seq_path(store_path).read_bytes().strip() or b"-1")
    except (OSError, ValueError):
        return None


def forget_seq(store_path: Path) -> None:
    """A new store starts without a copy (one left by a deleted store would lie)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(seq_path(store_path))


# -- the checks at a spooler's start ----------------------------------------------------------


def check_store(
    conn: sqlite3.Connection, store_path: Path, *, unclean: bool
) -> tuple[str | None, int]:
    """(a one-line alert or None, the database's submission count). After an unclean
    shutdown it runs ``PRAGMA quick_check``; always it compares the submission count with
    its copy outside the database. The copy is then set to the database's count, so the
    same loss is reported once."""
    problems: list[str] = []
    if unclean:
        rows = [str(row[0]) for row in conn.execute("PRAGMA quick_check").fetchall()]
        if rows != ["ok"]:
            problems.append(
                f"the store {store_path} is damaged ({rows[0]}{' ...' if len(rows) > 1 else ''}); "
                f"stop mapispool, keep a copy, and restore a backup or rebuild it with "
                f"sqlite3 {store_path} .recover"
            )
    (count,) = conn.execute("SELECT value FROM store_meta WHERE key = 'submitted'").fetchone()
    recorded = read_seq(store_path)
    if recorded is not None and recorded > int(count):
        lost = recorded - int(count)
        problems.append(
            f"the store {store_path} lost its last {lost} submission(s): it holds "
            f"{count} but {recorded} were committed (its write-ahead log was truncated or an "
            "older copy was put back); send those messages again"
        )
    if recorded != int(count):
        write_seq(store_path, int(count))
    return ("; ".join(problems) or None), int(count)


# -- the unclean-shutdown marker: the spooler lock file's content -------------------------------


def mark_running(lock_file: IO[bytes]) -> bool:
    """Called with the spooler lock just taken: True when the previous spooler did not
    stop cleanly (it left its mark in the lock file). Leaves this process's mark, synced,
    so that a crash from now on is noticed at the next start."""
    fd = lock_file.fileno()
    unclean = os.fstat(fd).st_size > 0
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"running {os.getpid()}\n".encode("ascii"))
        os.fsync(fd)
    except OSError:
        pass  # a read-only or full disk: the store itself will say so
    return unclean


def mark_stopped(lock_file: IO[bytes]) -> None:
    """A clean stop: clear the mark (before the lock is given back)."""
    with contextlib.suppress(OSError):
        os.ftruncate(lock_file.fileno(), 0)

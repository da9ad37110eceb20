"""SQLite's errors translated into ``MapiError``s that name the store file, the cause and
what to do about it (DESIGN §8: one clear line, never a raw ``sqlite3`` traceback).

Disk full, a read-only store and a damaged store are all conditions a person fixes
outside mapispool; the command line maps them to exit 75 ("try again later", see
``cli/errors.py``) so that a caller such as cron or git keeps the message meanwhile.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ...mapi import (
    MAPI_E_BUSY,
    MAPI_E_CORRUPT_STORE,
    MAPI_E_DISK_ERROR,
    MAPI_E_NO_ACCESS,
    MAPI_E_NOT_ENOUGH_DISK,
    MapiError,
)


def recover_advice(path: Path) -> str:
    """What to do with a damaged store."""
    return (
        f"stop mapispool, keep a copy of it, then restore a backup, or rebuild it with "
        f"'sqlite3 {path} .recover | sqlite3 {path}.recovered' and move {path}.recovered "
        "into its place"
    )


def _full(what: str, path: Path, text: str) -> MapiError:
    return MapiError(
        MAPI_E_NOT_ENOUGH_DISK,
        f"{what}: the disk holding the store {path} is full ({text}); free space, try again",
    )


def translate(exc: sqlite3.Error, what: str, path: Path) -> MapiError:
    """The ``MapiError`` for an SQLite error met while doing ``what`` on the store."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return MapiError(
            MAPI_E_BUSY, f"{what}: the store {path} is locked by another process ({text})"
        )
    if "readonly" in text or "read-only" in text:
        return describe_open_failure(path, what, text)
    if "full" in text:
        return _full(what, path, text)
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return MapiError(
            MAPI_E_CORRUPT_STORE,
            f"{what}: the store {path} is damaged ({text}); {recover_advice(path)}",
        )
    if "unable to open" in text:
        return describe_open_failure(path, what, text)
    if _disk_full(path):  # SQLite says "disk I/O error" when it cannot grow -wal or -shm
        return _full(what, path, text)
    return MapiError(MAPI_E_DISK_ERROR, f"{what}: the store {path}: {text}")


def _disk_full(path: Path) -> bool:
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


def describe_open_failure(path: Path, what: str, text: str) -> MapiError:
    """Why the store (or its -wal/-shm files) cannot be opened or written: a read-only
    file system, a file or a directory this user may not write, as far as can be told."""
    directory = path.parent
    cause = f"the store {path} cannot be opened for writing"
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            cause = f"the store {path} is on a file system mounted read-only"
        elif path.exists() and not os.access(path, os.W_OK):
            cause = f"the store {path} is not writable by this user (permissions)"
        elif not os.access(directory, os.W_OK):
            cause = (
                f"the directory of the store {path} is not writable by this user (SQLite "
                f"creates {path.name}-wal and {path.name}-shm beside the store)"
            )
    except OSError:
        pass
    return MapiError(
        MAPI_E_NO_ACCESS,
        f"{what}: {cause} ({text}); make the store writable or point 'store = ...' in the "
        "profile at a writable place",
    )

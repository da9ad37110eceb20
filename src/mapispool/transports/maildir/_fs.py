"""Blocking Maildir I/O: atomic delivery, listing waiting mail, finishing a received file.

Every function here blocks; the logon runs them in a worker thread. None of them touches
the store: committing a received message happens on the event loop, between ``read`` and
``finish``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._names import dedupe_key, is_candidate, is_seen, seen_name, unique_name
from ._settings import SUBDIRS, maildir_problem

#: errno values that mean "this mailbox cannot take mail, and waiting will not change
#: that": the recipient fails for good (an NDR). Everything else (ENOSPC, EDQUOT, EIO, ...)
#: is treated as temporary and the message is retried.
PERMANENT_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENOENT,
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)

#: errno values of ``link()`` meaning "this file system has no hard links", where the
#: delivery falls back to ``rename()``.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})

_FILE_MODE = 0o600  # mail is private to the mailbox owner, as Dovecot and Postfix write it
_DIR_MODE = 0o700


class DeliveryError(Exception):
    """A delivery into one Maildir failed; ``permanent`` says whether retrying can help.
    ``str()`` is the reason, naming the path, fit for an NDR or a status string."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


def fsync_directory(path: Path) -> None:
    """Make a directory's entries durable (a new or renamed file survives a power cut)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_failure(what: str, path: Path, exc: OSError) -> DeliveryError:
    permanent = exc.errno in PERMANENT_ERRNOS
    reason = f"cannot {what} {path}: {exc.strerror or exc}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason += " (check the directory's owner and permissions)"
    elif not permanent:
        reason += " (will try again later)"
    return DeliveryError(reason, permanent=permanent)


def ensure_target(maildir: Path) -> None:
    """Make sure ``maildir`` is a Maildir that can take a delivery, creating it when it is
    missing and its parent directory exists (never a whole tree: a mistyped path should
    bounce, not grow directories). Raises ``DeliveryError``."""
    if not maildir.exists():
        parent = maildir.parent
        if not parent.is_dir():
            raise DeliveryError(
                f"Maildir {maildir} does not exist and cannot be created: "
                f"its parent directory {parent} does not exist",
                permanent=True,
            )
        try:
            os.makedirs(maildir, mode=_DIR_MODE, exist_ok=True)
            for sub in SUBDIRS:
                os.makedirs(maildir / sub, mode=_DIR_MODE, exist_ok=True)
            fsync_directory(maildir)
            fsync_directory(parent)
        except OSError as exc:
            raise _os_failure("create the Maildir", maildir, exc) from exc
        return
    problem = maildir_problem(maildir)
    if problem is not None:
        raise DeliveryError(problem, permanent=True)


def _publish(tmp: Path, new: Path) -> None:
    # link() refuses to replace an existing file where rename() would silently do it,
    # so a (practically impossible) name clash can never overwrite a delivered message.
    try:
        os.link(tmp, new)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS or new.exists():
            raise
        os.rename(tmp, new)
        return
    os.unlink(tmp)


def deliver(maildir: Path, content: bytes, warn: Callable[[str], None]) -> Path:
    """Deliver ``content`` byte for byte into ``maildir`` and return the file's path in
    ``new/``. The Maildir protocol: write ``tmp/<unique>``, fsync it, move it into
    ``new/`` atomically, fsync ``new/``. Readers never see a partial file; once this
    returns, the message survives a crash. Raises ``DeliveryError``; ``warn`` receives
    problems that do not undo the delivery."""
    ensure_target(maildir)
    for _attempt in range(3):
        name = unique_name()
        tmp = maildir / "tmp" / name
        new = maildir / "new" / name
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _os_failure("write into", maildir / "tmp", exc) from exc
        try:
            with open(fd, "wb") as stream:
                stream.write(content)
                stream.flush()
                os.fsync(stream.fileno())
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _os_failure("write", tmp, exc) from exc
        try:
            _publish(tmp, new)
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            continue
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _os_failure("move the message into", maildir / "new", exc) from exc
        try:
            fsync_directory(maildir / "new")
        except OSError as exc:
            # The file is in new/ already and a reader may have taken it: reporting a
            # failure would make the spooler deliver it twice. Only durability is at stake.
            warn(f"delivered {new}, but syncing {maildir / 'new'} failed: {exc.strerror}")
        return new
    raise DeliveryError(
        f"cannot find a free file name in {maildir / 'tmp'} (will try again later)",
        permanent=False,
    )


@dataclass(frozen=True)
class Waiting:
    """One file of the receiving Maildir: in ``subdir`` (``"new"`` or ``"cur"``)."""

    subdir: str
    name: str
    path: Path
    mtime: float
    key: str
    """Its inbound dedupe key (``maildir:<source>/<unique part>``)."""


def list_waiting(root: Path, include_cur: bool, source: str) -> list[Waiting]:
    """The files in ``root/new`` (and ``root/cur`` with ``include_cur``), oldest first,
    keyed for ``source`` (see ``dedupe_key``); ``tmp/``, dot files and anything but
    regular files are ignored. Raises ``OSError`` when a folder cannot be read."""
    found: list[Waiting] = []
    for subdir in ("new", "cur") if include_cur else ("new",):
        with os.scandir(root / subdir) as entries:
            for entry in entries:
                if not is_candidate(entry.name):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    mtime = entry.stat().st_mtime
                except FileNotFoundError:
                    continue  # taken by another reader while we listed
                key = dedupe_key(source, entry.name)
                found.append(Waiting(subdir, entry.name, Path(entry.path), mtime, key))
    found.sort(key=lambda item: (item.mtime, item.name))
    return found


def needs_finishing(item: Waiting, action: str) -> bool:
    """True when ``finish`` would still change something for this file."""
    return action == "delete" or item.subdir == "new" or not is_seen(item.name)


def finish(item: Waiting, root: Path, action: str) -> None:
    """After the file was committed to the store: delete it, or move it to ``cur/`` marked
    seen (a file already in ``cur/`` gets the ``S`` flag). A file that is gone already
    counts as finished. The change is not fsynced: if a crash undoes it, the file is seen
    again, its dedupe key is found in the store, and it is finished again. Raises
    ``OSError``."""
    try:
        if action == "delete":
            item.path.unlink()
        elif needs_finishing(item, action):
            os.rename(item.path, root / "cur" / seen_name(item.name))
    except FileNotFoundError:
        pass

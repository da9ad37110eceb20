"""Maildir file names: unique names for delivery, the info suffix, dedupe keys.

Pure string logic, no I/O, so it is unit-tested on its own. A Maildir file name is
``<unique>`` in ``new/`` and ``<unique>:2,<flags>`` in ``cur/`` (the "info"; flags are
single ASCII letters kept in ASCII order, ``S`` meaning seen).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import socket
import time

#: The info suffix: ``:2,`` followed by flags, or the experimental ``:1,`` semantics,
#: always at the very end of the name.
_INFO = re.compile(r":([12]),([^:/]*)\Z")

#: Deliveries by this process, the ``Q`` field: two names made in the same microsecond
#: by the same process still differ.
_deliveries = itertools.count(1)

SEEN_FLAG = "S"


def _safe_hostname(hostname: str) -> str:
    # The Maildir specification: a '/' or ':' in the host name would break the
    # directory path or the info separator, so they are written as octal escapes.
    return hostname.replace("/", r"\057").replace(":", r"\072") or "localhost"


def unique_name(
    *, now: float | None = None, pid: int | None = None, hostname: str | None = None
) -> str:
    """A new unique Maildir file name, ``<sec>.M<usec>P<pid>R<random>Q<n>.<host>``.

    The modern form of the Maildir specification's ``time.pid.host``: seconds and
    microseconds, the process id, 64 random bits and a per-process delivery counter, then
    the host name with ``/`` and ``:`` escaped. The result never contains ``/`` or ``:``
    and never starts with a dot. ``now``, ``pid`` and ``hostname`` exist for tests.
    """
    moment = time.time() if now is None else now
    seconds = int(moment)
    micros = int((moment - seconds) * 1_000_000)
    process = os.getpid() if pid is None else pid
    host = _safe_hostname(socket.gethostname() if hostname is None else hostname)
    return f"{seconds}.M{micros}P{process}R{secrets.token_hex(8)}Q{next(_deliveries)}.{host}"


def unique_part(filename: str) -> str:
    """The unique part of a Maildir file name: everything before a trailing ``:2,``
    (or ``:1,``) info suffix; the whole name when it has none."""
    match = _INFO.search(filename)
    return filename[: match.start()] if match else filename


def dedupe_key(source: str, filename: str) -> str:
    """The inbound dedupe key of a Maildir file: ``maildir:<source>/<unique part>``.

    ``source`` names the receiving Maildir (its real path, or the ``account_id``
    setting), because the store holds the keys of every transport: two Maildirs may hold
    files with the same name, and each must be stored. The key ignores the info suffix,
    so a file stored from ``new/`` and found again in ``cur/`` (with ``include_cur``)
    maps to the same key and is not stored twice.
    """
    return f"maildir:{source}/{unique_part(filename)}"


def legacy_dedupe_key(filename: str) -> str:
    """The key earlier versions wrote, ``maildir:<unique part>``, without the source.

    Unique parts never contain ``/``, so a legacy key never equals a ``dedupe_key``.
    """
    return f"maildir:{unique_part(filename)}"


def flags_of(filename: str) -> str:
    """The flags of a ``:2,`` info suffix (``""`` when there is none)."""
    match = _INFO.search(filename)
    return match.group(2) if match and match.group(1) == "2" else ""


def is_seen(filename: str) -> bool:
    """True when the file name carries the ``S`` (seen) flag."""
    return SEEN_FLAG in flags_of(filename)


def seen_name(filename: str) -> str:
    """The name the file gets in ``cur/`` once read: its unique part plus ``:2,`` and its
    flags with ``S`` added, in ASCII order (``u`` → ``u:2,S``, ``u:2,FR`` → ``u:2,FRS``).
    An experimental ``:1,`` suffix is replaced, as its meaning is not defined."""
    flags = set(flags_of(filename))
    flags.add(SEEN_FLAG)
    return f"{unique_part(filename)}:2,{''.join(sorted(flags))}"


def is_candidate(filename: str) -> bool:
    """True for names a reader should consider: not dot files (which the Maildir
    convention reserves for the writer's and the MUA's own bookkeeping)."""
    return bool(filename) and not filename.startswith(".")

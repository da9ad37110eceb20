"""The ``maildir`` transport: delivers messages into Maildirs and receives from one.

Outbound, like the file-share transport of Microsoft's samples but with Maildirs:
recipients ``MAILDIR:/path/to/Maildir``, and SMTP recipients whose domain is listed in
``domains`` (delivered to ``<deliver_root>/<local part>/``). Inbound: the files of one
Maildir's ``new/`` (and ``cur/`` with ``include_cur``), each committed to the store with
the dedupe key ``maildir:<source>/<unique part of the file name>`` (the source is the
Maildir's real path, or ``account_id``) before it is moved to ``cur/``
(marked seen) or deleted. Settings: the README (Transports, maildir).

Why not ``mailbox.Maildir``: its ``add`` fsyncs the file but not the ``new/`` directory,
so a power cut right after a delivery can lose a message the spooler already counted as
sent; and it rewrites what it is given to the platform's line separator (message objects
are re-generated), whereas this transport must deliver the submitted bytes unchanged. The
delivery here follows the same Maildir protocol as CPython's ``mailbox`` (unique name in
``tmp/``, write, fsync, link into ``new/``, rename where links are unsupported) and adds
the directory fsync. Receiving needs nothing from ``mailbox`` beyond listing a directory,
and the exactly-once order (commit, then move) is easier to see in plain ``os`` calls.

POSIX only: the ``:2,`` info separator is not a valid file-name character on Windows.
"""

from __future__ import annotations

from ._logon import MAILDIR_ADDRTYPE, MaildirLogon, MaildirProvider, route
from ._names import dedupe_key, legacy_dedupe_key, seen_name, unique_name, unique_part
from ._settings import MaildirSettings

__all__ = [
    "MAILDIR_ADDRTYPE",
    "MaildirLogon",
    "MaildirProvider",
    "MaildirSettings",
    "dedupe_key",
    "legacy_dedupe_key",
    "route",
    "seen_name",
    "unique_name",
    "unique_part",
]

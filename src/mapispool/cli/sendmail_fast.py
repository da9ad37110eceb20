"""The fast path of ``mapispool-sendmail`` (issue #13): queue one message the way mutt,
git send-email and cron call sendmail, in a process that imports almost nothing.

A sendmail process is started once per message, so its imports are most of its cost.
This path loads the profile without importing the transports
(``Profile.load(check_transports=False)``), makes the canonical form with the one
implementation (``submission.prepare``), and writes the submission's rows with the one
implementation the SQLite store also runs (``store.sqlite.writes.submit``), synchronously
and as durably (one fsync'd transaction before exit 0). It then tells a running daemon
over its control socket (``daemon.notify``), or starts the detached background
Send/Receive (``sendmail_spawn``), as the delivery mode says.

The cli layer imports the store directly here, below the session and the spooler, on
purpose: a session would import asyncio, the spooler and the transports, which queueing
one message does not use. Everything else takes the full path (``sendmail_deliver``):
a PostgreSQL store (its client library and its workers'
notification), ``-odi`` (this process sends).

The same function queues a message handed to a running daemon by ``sendmail_client``
(``daemon_store`` given: the daemon's own store, the only one it writes); an invocation
that is not for it raises ``NotHere`` and the client runs it itself. A
``submission_key`` (the client's random submission id) is committed with the message,
so the client's fallback after a lost answer, or a caller's retry, never queues it twice."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..mapi import MAPI_TO, MapiError
from ..profile import Profile
from ..submission import SUBMITTED_VIA_SENDMAIL, RecipientSpec, origin_props, parse_recipient
from ..submission import prepare as prepare_submission
from .sendmail_say import say, warn

if TYPE_CHECKING:
    from ..store.sqlite.database import Database

EX_OK = 0


class DaemonStore:
    """The daemon's own store as the hand-offs it runs write it: the file, and one
    connection kept open across them (opened at the first; the daemon runs its hand-offs
    one at a time, ``sendmail_served``), so a hand-off does not pay for opening it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: Database | None = None

    def database(self) -> Database:
        if self._db is None:
            from ..store.sqlite.database import Database

            self._db = Database(self.path, migrate_schema=True)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class NotHere(Exception):
    """A handed-off invocation that the daemon does not run (another store, PostgreSQL,
    ``-odi``, ``-bp``, ``-q``): the client runs it itself."""


def default_delivery(profile: Profile) -> str:
    """The delivery mode when no -od flag is given: the profile's ``[sendmail]
    delivery``, else ``background`` when ``send_immediately`` is true (the default) and
    ``queue`` when it is false."""
    if profile.sendmail_delivery:
        return profile.sendmail_delivery
    return "background" if profile.send_immediately else "queue"


def recipients_of(params: dict[str, Any]) -> list[RecipientSpec] | None:
    """The ``submit`` operation's ``recipients`` (To), as ``app.submit`` reads them; None
    (the message's headers say who gets it) when absent."""
    given = params.get("recipients")
    if given is None:
        return None
    return [parse_recipient(str(spec), MAPI_TO) for spec in given]


def submit_to_sqlite(
    profile: Profile,
    params: dict[str, Any],
    submission_key: str | None = None,
    daemon_store: DaemonStore | None = None,
) -> str | None:
    """Write the message of the ``submit`` operation's ``params`` to the profile's
    SQLite store (through ``daemon_store``'s connection when given), with the rows
    ``AsyncSession.submit`` writes (``via = "sendmail"`` included); the entry id in hex,
    or None when ``submission_key`` was committed before (the message is queued
    already)."""
    from ..store.sqlite.database import Database
    from ..store.sqlite.writes import AlreadySubmitted, submit

    now = datetime.now(UTC)
    prepared = prepare_submission(
        bytes(params["content"]), recipients=recipients_of(params), now=now,
        sender=params.get("sender"),
    )  # fmt: skip
    if params.get("via") == SUBMITTED_VIA_SENDMAIL:
        prepared.props.update(origin_props(SUBMITTED_VIA_SENDMAIL))
    if daemon_store is not None:
        db = daemon_store.database()
    else:
        db = Database(profile.store_path(), migrate_schema=True)
    try:
        submit_time = time.time()
        entry_id = submit(
            db, prepared.content, prepared.props, prepared.recipients,
            submit_time=submit_time, not_before=None,
            expires_at=submit_time + profile.retry.lifetime,
            eight_bit=prepared.eight_bit, canonical=True, submission_key=submission_key,
        )  # fmt: skip
    except AlreadySubmitted:
        return None
    finally:
        if daemon_store is None:
            db.close()
    return entry_id.hex()


def queue_and_deliver(
    path: Path,
    params: dict[str, Any],
    delivery: str | None,
    submission_key: str | None = None,
    daemon_store: DaemonStore | None = None,
) -> int | None:
    """Queue the message (the ``submit`` operation's ``params``) and deliver it as the
    delivery mode says; the exit code, or None when the message is not for this path
    (see the module's text): then the caller takes ``sendmail_deliver``'s. In a daemon
    (``daemon_store``), ``NotHere`` instead of None, and no wake-up: the daemon's own."""
    try:
        profile = Profile.load(path, check_transports=False)
        mode = delivery or default_delivery(profile)
        if profile.store_is_postgres or mode == "now":
            if daemon_store is not None:
                raise NotHere("a PostgreSQL store or -odi")
            return None
        if daemon_store is not None and not _same_file(profile.store_path(), daemon_store.path):
            raise NotHere("the profile names another store than the daemon's")
        entry_id = submit_to_sqlite(profile, params, submission_key, daemon_store)
    except MapiError as exc:
        from .errors import describe, exit_code

        say(describe(exc))
        return exit_code(exc)
    if daemon_store is not None:
        return EX_OK
    from ..daemon.notify import tell_submitted

    woken = tell_submitted(profile.store_path(), entry_id or "", warn)
    if mode == "background" and not woken:
        from .sendmail_spawn import start_background

        start_background(profile)
    return EX_OK


def _same_file(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)

"""The full path of ``mapispool sendmail``: load and validate the profile, write the
message to the store in this process (durably, before exit 0), then deliver it as the
delivery mode says, so that mail is never left silently waiting (issue #13):

- ``background`` (-odb): a running daemon is woken; with none, a detached upload-only
  Send/Receive (``sendmail_background``) is started for the store, unless one is
  running already (it picks the message up before it stops).
- ``now`` (-odi): this process sends (or waits for the spooler that holds the store)
  and exits 0 delivered, 75 queued for a retry, 69 refused for good.
- ``queue`` (-odq): only queued; a running daemon still sends it.

The default is the profile's ``[sendmail] delivery``, else ``background`` when
``send_immediately`` is true (the default) and ``queue`` when it is false."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ..daemon.client import DaemonBackend, connect
from ..daemon.client import submit as queue_message
from ..mapi import MAPI_E_BUSY, MapiError
from ..profile import Profile
from .errors import EX_FAILURES, EX_OK, EX_TEMPFAIL, EX_UNAVAILABLE, describe, exit_code
from .sendmail_fast import default_delivery
from .sendmail_queue import mailq_lines
from .sendmail_say import say, warn
from .sendmail_spawn import start_background

#: How long ``-odi`` waits for a spooler in another process (the daemon, or a
#: background Send/Receive) to finish with the message: longer than an SMTP timeout.
DELIVER_WAIT = 120.0

#: Queue states after which -odi has its answer.
_DELIVERED, _REFUSED = "sent", ("failed", "cancelled")
_PENDING = ("queued", "in_flight")


def queue_and_deliver(path: Path, params: dict[str, Any], delivery: str | None) -> int:
    """Queue the message (the ``submit`` operation's ``params``) and deliver it; the exit
    code. The full path, with the application layer: ``-odi`` and PostgreSQL stores (the
    common case takes ``sendmail_fast``)."""
    try:
        profile = Profile.load(path)
        entry_id, woken = queue_message(profile, params, warn)
        mode = delivery or default_delivery(profile)
        if mode == "now":
            return deliver_now(profile, entry_id)
        if mode == "background" and not woken:
            start_background(profile)
    except MapiError as exc:
        say(describe(exc))
        return exit_code(exc)
    return EX_OK


# -- now (-odi) ------------------------------------------------------------------------------


def deliver_now(profile: Profile, entry_id: str) -> int:
    """Send the queue now (this process, or the spooler that holds the store) and give
    ``entry_id``'s result: 0 delivered, 69 refused for good, 75 waiting for a retry."""
    backend = connect(profile, warn)
    if backend.kind == "local":
        try:
            backend.call("flush", {"upload": True, "no_ui": True})
        except MapiError as exc:
            if exc.hresult != MAPI_E_BUSY:
                raise
            # Another spooler process holds the store: it sends; wait for its answer.
    # A daemon was woken when the message was queued: it sends; wait for its answer.
    entry = _wait_for_outcome(profile, entry_id)
    state = str(entry.get("state"))
    error = entry.get("last_error") or ""
    if state == _DELIVERED:
        return EX_OK
    if state in _REFUSED:
        say(f"not delivered: {error or state}")
        return EX_UNAVAILABLE
    say(f"queued for a retry ({state}): {error or 'not sent yet'}")
    return EX_TEMPFAIL


def _wait_for_outcome(profile: Profile, entry_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DELIVER_WAIT
    while True:
        backend = connect(profile)
        try:
            entry: dict[str, Any] = backend.call("queue_show", {"entry_id": entry_id})
        finally:
            if isinstance(backend, DaemonBackend):
                backend.close()
        if str(entry.get("state")) not in _PENDING or time.monotonic() > deadline:
            return entry
        time.sleep(0.2)


# -- -bp and -q -----------------------------------------------------------------------------


def list_queue(path: Path) -> int:
    """``-bp``: the queue in ``mailq``'s format (Postfix's), as monitoring plugins parse."""
    try:
        backend = connect(Profile.load(path), warn)
        entries = backend.call("queue_list", {})
        senders = {
            m["entry_id"]: m["from"] for m in backend.call("folder_show", {"folder": "Outbox"})
        }
    except MapiError as exc:
        say(describe(exc))
        return exit_code(exc)
    for line in mailq_lines(entries, senders):
        sys.stdout.write(line + "\n")
    return EX_OK


def run_queue(path: Path) -> int:
    """``-q``: ``mapispool flush --upload --no-ui``: 0 when nothing failed, 1 when a
    message failed or became uncertain, 75 when another Send/Receive runs."""
    try:
        result = connect(Profile.load(path), warn).call("flush", {"upload": True, "no_ui": True})
    except MapiError as exc:
        say(describe(exc))
        return exit_code(exc)
    from .flush_report import problems

    for line in problems(result):
        say(line)
    return EX_OK if result.get("ok") else EX_FAILURES

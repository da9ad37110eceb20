"""``sendmail -bp`` (``mailq``): the outgoing queue in Postfix's ``mailq`` format, which
monitoring plugins (check_mailq and the like) parse::

    -Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
    3fa2...c1*       421 Sun Nov 29 20:31:05  me@example.com
                                             bob@example.com

    -- 1 Kbytes in 1 Request.

After the queue id, ``*`` marks a message being sent now and ``!`` one on hold; a
message waiting for a retry has its last error in parentheses above its recipients. An
empty queue is the one line ``Mail queue is empty``."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

HEADER = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
_MARK = {"in_flight": "*", "held": "!"}
_INDENT = " " * 41


def _address(from_field: str) -> str:
    addresses = [a for _n, a in email.utils.getaddresses([from_field]) if a]
    return addresses[0] if addresses else "MAILER-DAEMON"


def _recipient(spec: str) -> str:
    """``SMTP:bob@example.com`` → ``bob@example.com``; other address types keep theirs."""
    kind, sep, address = spec.partition(":")
    return address if sep and kind.upper() == "SMTP" else spec


def mailq_lines(entries: Sequence[Mapping[str, Any]], senders: Mapping[str, str]) -> Iterator[str]:
    """The lines of ``mailq``'s output for the queue ``entries`` (``queue_list``'s), with
    the From field of each message by entry id in ``senders``."""
    if not entries:
        yield "Mail queue is empty"
        return
    yield HEADER
    total = 0
    for entry in entries:
        size = int(entry.get("size") or 0)
        total += size
        queue_id = str(entry["entry_id"]) + _MARK.get(str(entry["state"]), "")
        arrival = time.strftime("%a %b %d %H:%M:%S", time.localtime(float(entry["submit_time"])))
        sender = _address(senders.get(str(entry["entry_id"]), ""))
        yield f"{queue_id:<11} {size:>8} {arrival}  {sender}"
        if entry.get("last_error") and entry["state"] not in ("queued", "in_flight"):
            reason = " ".join(str(entry["last_error"]).split())
            yield f"{_INDENT[:-4]}({reason})"
        for recipient in entry.get("recipients") or ():
            yield _INDENT + _recipient(str(recipient))
        yield ""
    count = len(entries)
    kbytes = (total + 1023) // 1024
    yield f"-- {kbytes} Kbytes in {count} Request{'s' if count != 1 else ''}."

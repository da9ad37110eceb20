"""Bounces reach the sender: an NDR for a message that came in through ``sendmail`` or
the SMTP listener is also mailed to its envelope sender through the outbound transports,
as an RFC 3464 delivery status notification (``multipart/report;
report-type=delivery-status``), the way an MTA bounces. The Inbox keeps its copy.

Why only those two ways in: their sender is often not the person reading this store's
Inbox (a cron job, a web application, a git hook), so the Inbox alone would hide the
failure from them. Mail submitted with the Python API or ``mapispool submit`` is the
store owner's own, and its NDR stays in the Inbox as before.

Loop protection (RFC 5321 §4.5.5, RFC 3464 §2): the DSN goes out with the null reverse
path ``<>`` and the class ``Report.IPM.Note.NDR``, so its own failure never makes another
report; no DSN is sent for a message whose envelope sender is null, for a report (a DSN
or MDN, by class or by content type), or to a MAILER-DAEMON address.
``bounce_to_sender = false`` in the profile keeps NDRs only in the Inbox.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from ..mapi import MAPI_TO, PR_MESSAGE_CLASS, PR_SENDER_EMAIL_ADDRESS
from ..spi import Recipient
from ..store import Note, Outcome, Store

# The ways in and their property live with the submission, which mapispool-sendmail's
# queueing imports without the spooler.
from ..submission import PR_MAPISPOOL_SUBMITTED_VIA as PR_MAPISPOOL_SUBMITTED_VIA
from ..submission import SUBMITTED_VIA_LISTENER as SUBMITTED_VIA_LISTENER
from ..submission import SUBMITTED_VIA_SENDMAIL as SUBMITTED_VIA_SENDMAIL
from ..submission import origin_props as origin_props
from ..submission import prepare
from .reports import FailedRecipient, build_ndr

log = logging.getLogger("mapispool.spooler")

#: On a DSN: the entry id (hex) of the message it reports on.
PR_MAPISPOOL_REPORT_ON = 0x6702001F

_BOUNCING_WAYS = frozenset({SUBMITTED_VIA_SENDMAIL, SUBMITTED_VIA_LISTENER})

_DAEMON_LOCALPARTS = frozenset({"mailer-daemon"})
_REPORT_TYPE = re.compile(r"(?i)multipart/report\b.*report-type\s*=\s*\"?(delivery|disposition)")


def bounce_address(props: Mapping[int, Any], head: bytes) -> str | None:
    """The envelope sender a DSN for this message goes to, or None when none may be sent
    (not from sendmail or the listener, a null sender, a report, a MAILER-DAEMON)."""
    if props.get(PR_MAPISPOOL_SUBMITTED_VIA) not in _BOUNCING_WAYS:
        return None
    sender = str(props.get(PR_SENDER_EMAIL_ADDRESS) or "")
    if sender in ("", "<>") or "@" not in sender:
        return None
    if str(props.get(PR_MESSAGE_CLASS, "IPM.Note")).startswith("Report."):
        return None
    if sender.rpartition("@")[0].lower() in _DAEMON_LOCALPARTS:
        return None
    header = BytesHeaderParser(policy=compat32).parsebytes(head, headersonly=True)
    content_type = " ".join(str(header.get("Content-Type", "")).split())
    if _REPORT_TYPE.search(content_type):
        return None
    return sender


def reporting_host(sender: str) -> str:
    """The host name a DSN says it comes from: this host's FQDN, or the sender's domain
    when the host has no qualified name."""
    fqdn = socket.getfqdn()
    if "." in fqdn and not fqdn.endswith(".localdomain"):
        return fqdn
    return sender.rpartition("@")[2] or "localhost"


async def queue_dsn(
    store: Store,
    entry_id: bytes,
    sender: str,
    dsn: bytes,
    dsn_props: Mapping[int, Any],
    lifetime: float,
) -> bytes:
    """Queue ``dsn`` (RFC 5322 bytes of a ``multipart/report``) to ``sender`` with the
    null reverse path; returns its entry id. The caller wakes the spooler."""
    prepared = prepare(
        dsn,
        recipients=[Recipient(address=sender, addrtype="SMTP", recipient_type=MAPI_TO)],
        now=datetime.now(UTC),
        sender="",
    )
    props = dict(prepared.props)
    props.update(dsn_props)
    props[PR_SENDER_EMAIL_ADDRESS] = ""
    props[PR_MAPISPOOL_REPORT_ON] = entry_id.hex()
    now = time.time()
    new_id = await store.submit(
        prepared.content, props, prepared.recipients,
        submit_time=now, not_before=None, expires_at=now + lifetime,
        eight_bit=prepared.eight_bit, canonical=True,
    )  # fmt: skip
    note = Note("dsn-queued", detail=f"to {sender} as {new_id.hex()}")
    await store.record_one(Outcome(entry_id, notes=[note]))
    log.info("queued a delivery status notification for %s to %s", entry_id.hex(), sender)
    return new_id


async def bounce_to_sender(
    store: Store,
    entry_id: bytes,
    props: Mapping[int, Any],
    head: bytes,
    failed: Sequence[FailedRecipient],
    *,
    lifetime: float,
) -> bytes | None:
    """After an NDR went to the Inbox: queue its RFC 3464 twin to the envelope sender when
    ``bounce_address`` allows one. Returns the DSN's entry id, or None. A failure to queue
    it is logged and swallowed: the NDR in the Inbox already reports the failure."""
    sender = bounce_address(props, head)
    if sender is None:
        return None
    try:
        dsn, dsn_props = build_ndr(props, head, failed, reporting_host=reporting_host(sender))
        return await queue_dsn(store, entry_id, sender, dsn, dsn_props, lifetime)
    except Exception as exc:  # the original message's fate must not depend on its DSN
        log.warning("could not queue the DSN for %s to %s: %s", entry_id.hex(), sender, exc)
        return None

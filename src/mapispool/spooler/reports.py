"""Non-delivery reports (spec §3.4 StatusRecips): a ``Report.<class>.NDR`` message in the
Inbox naming each failed recipient and why, in RFC 3464 form. Never an NDR for a report."""

from __future__ import annotations

import email.policy
import email.utils
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from typing import Any

from ..mapi import (
    PR_MESSAGE_CLASS,
    PR_MESSAGE_DELIVERY_TIME,
    PR_ORIGINATOR_NON_DELIVERY_REPORT_REQUESTED,
    PR_REPORT_TIME,
    PR_SENDER_EMAIL_ADDRESS,
    PR_SUBJECT,
)


@dataclass(frozen=True)
class FailedRecipient:
    """A recipient that will not get the message, and the reason."""

    address: str
    addrtype: str
    reason: str


def wants_ndr(props: Mapping[int, Any]) -> bool:
    """False for reports (never NDR an NDR) and when the sender explicitly declined NDRs."""
    message_class = str(props.get(PR_MESSAGE_CLASS, "IPM.Note"))
    if message_class.startswith("Report."):
        return False
    return props.get(PR_ORIGINATOR_NON_DELIVERY_REPORT_REQUESTED) is not False


def _status_code(reason: str) -> str:
    """An RFC 3463 status for the delivery-status part, taken from the reason if it has one."""
    for word in reason.replace("(", " ").split():
        parts = word.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts) and parts[0] in "245":
            return word
    return "5.0.0"


def original_header_text(content: bytes) -> str:
    """The original message's header block as it was (RFC 3462's text/rfc822-headers),
    line ends made LF. Never re-rendered through a parser: that rewrote fields (an
    address with a comment, ``To: <>``) and raised on some malformed ones (issue #13)."""
    ends = [i for sep in (b"\r\n\r\n", b"\n\n") if (i := content.find(sep)) >= 0]
    block = content[: min(ends)] if ends else content
    text = block.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    return text.rstrip("\n") + "\n"


def build_ndr(
    original_props: Mapping[int, Any],
    original_content: bytes,
    failed: Sequence[FailedRecipient],
    *,
    reporting_host: str = "mapispool",
) -> tuple[bytes, dict[int, Any]]:
    """The RFC 5322 bytes and MAPI properties of an NDR for ``failed`` recipients."""
    return _build_report(original_props, original_content, failed, reporting_host, delayed=False)


def build_delay_notice(
    original_props: Mapping[int, Any],
    original_content: bytes,
    waiting: Sequence[FailedRecipient],
    *,
    reporting_host: str = "mapispool",
) -> tuple[bytes, dict[int, Any]]:
    """A ``Report.<class>.DelayedDR``: the message is not delivered yet to ``waiting``
    recipients and is still being retried (RFC 3464 ``Action: delayed``)."""
    return _build_report(original_props, original_content, waiting, reporting_host, delayed=True)


def _fields(values: Mapping[str, str]) -> Message:
    block = Message(policy=email.policy.SMTP)
    for name, value in values.items():
        block[name] = value
    return block


def _build_report(
    original_props: Mapping[int, Any],
    original_content: bytes,
    failed: Sequence[FailedRecipient],
    reporting_host: str,
    *,
    delayed: bool,
) -> tuple[bytes, dict[int, Any]]:
    now = datetime.now(UTC)
    original_class = str(original_props.get(PR_MESSAGE_CLASS, "IPM.Note"))
    subject = str(original_props.get(PR_SUBJECT, ""))
    sender = str(original_props.get(PR_SENDER_EMAIL_ADDRESS, ""))

    report = EmailMessage(policy=email.policy.SMTP)
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_host}>"
    if sender:
        report["To"] = sender
    if delayed:
        report["Subject"] = f"Delayed: {subject}" if subject else "Delayed message"
    else:
        report["Subject"] = f"Undeliverable: {subject}" if subject else "Undeliverable message"
    report["Date"] = email.utils.format_datetime(now)
    report["Message-ID"] = email.utils.make_msgid(domain=reporting_host)
    report["Auto-Submitted"] = "auto-replied"

    lines = (
        [
            "Your message has not been delivered yet to these recipients; mapispool keeps",
            "trying and will tell you if it gives up:",
            "",
        ]
        if delayed
        else ["Your message could not be delivered to these recipients:", ""]
    )
    for recipient in failed:
        lines.append(f"  {recipient.address} ({recipient.addrtype}): {recipient.reason}")
    report.set_content("\n".join(lines) + "\n")

    # RFC 3464 §2.1: message/delivery-status, one block of fields per message and per
    # recipient (the email package writes such a part from a list of header blocks).
    status = MIMEBase("message", "delivery-status", policy=email.policy.SMTP)
    status.attach(_fields({"Reporting-MTA": f"dns; {reporting_host}"}))
    for recipient in failed:
        status.attach(
            _fields({
                "Final-Recipient": f"rfc822; {recipient.address}",
                "Action": "delayed" if delayed else "failed",
                "Status": "4.0.0" if delayed else _status_code(recipient.reason),
                "Diagnostic-Code": f"smtp; {recipient.reason}",
            })
        )  # fmt: skip
    report.make_mixed()
    Message.attach(report, status)  # a MIMEBase part: EmailMessage.attach's type is narrower
    returned = EmailMessage(policy=email.policy.SMTP)
    returned.set_content(original_header_text(original_content), subtype="rfc822-headers")
    report.attach(returned)
    report.set_type("multipart/report")
    report.set_param("report-type", "delivery-status")

    props: dict[int, Any] = {
        PR_MESSAGE_CLASS: f"Report.{original_class}.{'DelayedDR' if delayed else 'NDR'}",
        PR_SUBJECT: str(report["Subject"]),
        PR_REPORT_TIME: now,
        PR_MESSAGE_DELIVERY_TIME: now,
    }
    return report.as_bytes(), props

"""SMTP reply classification (RFC 5321 §4.2.1), kept apart from any socket.

The transport decides per reply whether a recipient or the whole message succeeded,
failed for good or must be tried again; every such decision is made here.
"""

from __future__ import annotations

from enum import Enum

#: "Service not available, closing transmission channel": the server ends the session,
#: whatever command it answered, so the whole message is retried (RFC 5321 §3.8).
SERVICE_CLOSING = 421


class ReplyClass(Enum):
    """What a reply code means for the transaction that got it."""

    OK = "ok"  # 2yz: done
    INTERMEDIATE = "intermediate"  # 3yz: send more (354 after DATA, 334 during AUTH)
    TEMPORARY = "temporary"  # 4yz: try again later
    PERMANENT = "permanent"  # 5yz: never try again as is
    INVALID = "invalid"  # anything else: a broken or non-SMTP peer


def classify(code: int) -> ReplyClass:
    """The class of an SMTP reply code, by its first digit."""
    if not 200 <= code <= 599:
        return ReplyClass.INVALID
    return {
        2: ReplyClass.OK,
        3: ReplyClass.INTERMEDIATE,
        4: ReplyClass.TEMPORARY,
        5: ReplyClass.PERMANENT,
    }[code // 100]


def is_closing(code: int) -> bool:
    """True for 421: the server drops the connection after this reply."""
    return code == SERVICE_CLOSING


def format_reply(code: int, text: str) -> str:
    """One line for humans and for ``PR_REPORT_TEXT``: ``"550 5.1.1 no such user"``.

    Multi-line replies are joined with ``" / "`` so status strings and NDRs stay on one line.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{code} {' / '.join(lines)}".rstrip()

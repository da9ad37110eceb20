"""Pure POP3 helpers: parsing UIDL/LIST listings, dedupe keys, and the pass plan."""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field


def dedupe_key(account: str, uidl: str) -> str:
    """``pop3:<account>:<uidl>``: a UIDL is only unique within one maildrop, and the store
    holds the keys of every transport, so the account is part of the key."""
    return f"pop3:{account}:{uidl}"


def parse_listing(lines: Iterable[bytes]) -> dict[int, str]:
    """``UIDL`` or ``LIST`` multi-line answer → ``{message number: second field}``.

    Lines that do not have the form ``<number> <token>`` are ignored (RFC 1939 allows
    servers to add nothing else, but some append blanks)."""
    out: dict[int, str] = {}
    for line in lines:
        parts = line.decode("ascii", "replace").split()
        if len(parts) >= 2 and parts[0].isdigit():
            out[int(parts[0])] = parts[1]
    return out


def parse_sizes(lines: Iterable[bytes]) -> dict[int, int]:
    """``LIST`` answer → ``{message number: octets}``."""
    return {n: int(v) for n, v in parse_listing(lines).items() if v.isdigit()}


def reply_text(reply: object) -> str:
    """A poplib reply or error argument as text (poplib passes bytes, or their repr)."""
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace").strip()
    text = str(reply).strip()
    if text[:2] in ("b'", 'b"') and text[-1:] == text[1]:
        text = text[2:-1]
    return text


def is_temporary(reply: object) -> bool:
    """True for ``-ERR`` replies that say "try again later" (RFC 2449/3206 response codes
    ``[SYS/TEMP]`` and ``[IN-USE]``), and for poplib's "-ERR EOF" (connection closed)."""
    upper = reply_text(reply).upper()
    return "[SYS/TEMP]" in upper or "[IN-USE]" in upper or upper == "-ERR EOF"


def describe_headers(lines: Iterable[bytes]) -> str:
    """``From`` and ``Subject`` from a ``TOP n 0`` answer, for status messages."""
    raw = b"\r\n".join(lines)
    headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    sender = str(headers.get("From", "")).strip() or "unknown sender"
    subject = str(headers.get("Subject", "")).strip() or "(no subject)"
    return f"{subject!r} from {sender}"


@dataclass(frozen=True)
class Entry:
    """One message of the maildrop in this session."""

    number: int
    uidl: str
    size: int
    key: str


@dataclass
class Plan:
    """What a pass does with each message of the maildrop listing."""

    download: list[Entry] = field(default_factory=list)
    """Unknown messages to RETR, in maildrop order."""
    known: list[Entry] = field(default_factory=list)
    """Already committed (with action=delete they are deleted without RETR)."""
    oversize: list[Entry] = field(default_factory=list)
    """Larger than max_size: left on the server and reported."""


def plan_pass(
    uidls: dict[int, str],
    sizes: dict[int, int],
    account: str,
    is_known: Callable[[str], bool],
    max_size: int | None,
    *,
    too_large: Container[str] = (),
) -> Plan:
    """Sort the maildrop into download / known / oversize. Messages LIST does not show
    (deleted meanwhile) are left out; keys in ``too_large`` (a body that went over
    ``max_size`` although LIST said less) count as oversize."""
    plan = Plan()
    for number in sorted(uidls):
        if number not in sizes:
            continue
        entry = Entry(number, uidls[number], sizes[number], dedupe_key(account, uidls[number]))
        if is_known(entry.key):
            plan.known.append(entry)
        elif (max_size is not None and entry.size > max_size) or entry.key in too_large:
            plan.oversize.append(entry)
        else:
            plan.download.append(entry)
    return plan


def take_batch(entries: list[Entry], count: int, byte_limit: int) -> list[Entry]:
    """Remove and return the first entries, at most ``count`` of them and at most about
    ``byte_limit`` bytes (always at least one)."""
    taken: list[Entry] = []
    total = 0
    while entries and len(taken) < count:
        if taken and total + entries[0].size > byte_limit:
            break
        entry = entries.pop(0)
        taken.append(entry)
        total += entry.size
    return taken

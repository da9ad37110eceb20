"""Pure IMAP synchronisation logic: dedupe keys, per-folder durable state, UIDVALIDITY
re-baselining and message fingerprints. No sockets here; unit-tested on its own.

Per folder the logon keeps one JSON object in ``Support`` state (``FolderState``):

- ``uidvalidity``: the UIDVALIDITY the UIDs below belong to;
- ``floor``: every message of the folder with a UID up to ``floor`` is committed locally
  (used with ``action = "keep"``, where messages stay on the server, so that a flush only
  looks at UIDs above it);
- ``rebaseline_until``: after a UIDVALIDITY change, messages with a UID up to this one
  existed when the change was seen; they are matched by fingerprint (Message-ID + size)
  against what was already stored before being downloaded;
- ``fp_batches``: how many fingerprint pages (``{fingerprint: dedupe key}``) were written.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .client import FolderInfo

_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def dedupe_key(account: str, folder: str, uidvalidity: int, uid: int) -> str:
    """``imap:<account>/<folder>:<uidvalidity>:<uid>``: unique across accounts, folders
    and mailbox re-creations, because the store holds the keys of every transport."""
    return f"imap:{account}/{folder}:{uidvalidity}:{uid}"


def state_key(account: str, folder: str, suffix: str = "") -> str:
    """The ``Support`` state key of a folder (``suffix`` names a sub-record)."""
    return f"imap:{account}/{folder}" + (f":{suffix}" if suffix else "")


def header_block(raw: bytes) -> bytes:
    """The header section of an RFC 5322 message (without the blank line)."""
    match = _HEADER_END.search(raw)
    return raw[: match.start()] if match else raw


def message_id(header: bytes) -> str | None:
    """The Message-ID header's value with folding and blanks removed, or None."""
    match = _MESSAGE_ID.search(header)
    if match is None:
        return None
    value = b"".join(match.group(1).split()).decode("ascii", "replace")
    return value or None


def fingerprint(header: bytes, size: int) -> str:
    """What identifies a message across a UIDVALIDITY change: its Message-ID and its
    RFC822.SIZE; a message without Message-ID is identified by a digest of its whole
    header section and its size instead."""
    mid = message_id(header_block(header))
    if mid is not None:
        return f"id:{mid}:{size}"
    digest = hashlib.sha256(header_block(header)).hexdigest()[:32]
    return f"hdr:{digest}:{size}"


@dataclass(frozen=True)
class FolderState:
    """Durable per-folder synchronisation state (see the module docstring)."""

    uidvalidity: int | None = None
    floor: int = 0
    rebaseline_until: int = 0
    fp_batches: int = 0

    @classmethod
    def from_json(cls, value: Any) -> FolderState:
        """Read a value saved by ``to_json``; anything else is a fresh state."""
        if not isinstance(value, Mapping):
            return cls()
        fields = {
            k: value.get(k) for k in ("uidvalidity", "floor", "rebaseline_until", "fp_batches")
        }
        if not all(
            v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in fields.values()
        ):
            return cls()
        return cls(
            uidvalidity=fields["uidvalidity"],
            floor=fields["floor"] or 0,
            rebaseline_until=fields["rebaseline_until"] or 0,
            fp_batches=fields["fp_batches"] or 0,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form for ``Support.set_state``."""
        return asdict(self)


@dataclass(frozen=True)
class Reconciled:
    """The result of comparing the stored state with the server's SELECT answer."""

    state: FolderState
    changed: bool
    """True when UIDVALIDITY changed since the last session: the UIDs were renumbered."""
    previous: int | None


def reconcile(state: FolderState, uidvalidity: int, uidnext: int | None) -> Reconciled:
    """Decide what a SELECT answer means for the stored state.

    - first time (no UIDVALIDITY stored): adopt the server's; every message is new;
    - same UIDVALIDITY: nothing changes;
    - a different one: the old UIDs mean nothing any more. Keep the fingerprint index,
      reset ``floor``, and mark every UID below ``uidnext`` (every message that exists
      now) for re-baselining by fingerprint. Without ``uidnext`` every UID is marked.
    """
    if state.uidvalidity is None:
        return Reconciled(replace(state, uidvalidity=uidvalidity, floor=0), False, None)
    if state.uidvalidity == uidvalidity:
        return Reconciled(state, False, state.uidvalidity)
    until = (uidnext - 1) if uidnext else 2**32 - 1
    new = replace(state, uidvalidity=uidvalidity, floor=0, rebaseline_until=until)
    return Reconciled(new, True, state.uidvalidity)


def advance_floor(floor: int, processed: Iterable[int], pending: Iterable[int]) -> int:
    """The new ``floor``: the highest processed UID below every still-pending UID.

    ``processed`` are UIDs now committed locally (or known); ``pending`` are candidates
    not yet committed. UIDs are handed out in ascending order, so the floor only moves up.
    """
    lowest_pending = min(pending, default=None)
    best = floor
    for uid in processed:
        if uid > best and (lowest_pending is None or uid < lowest_pending):
            best = uid
    return best


def above_floor(uids: Iterable[int], floor: int) -> list[int]:
    """The UIDs greater than ``floor``, ascending. ``UID SEARCH UID n:*`` always returns
    the highest UID even when it is below ``n`` (RFC 3501 §6.4.8), hence the filter."""
    return sorted(u for u in set(uids) if u > floor)


def byte_bounded(uids: list[int], sizes: Mapping[int, int], limit: int) -> list[list[int]]:
    """Split ``uids`` into consecutive groups whose total size stays under ``limit``
    (a single larger message is a group of its own), so that one FETCH never holds
    more than about ``limit`` bytes in memory."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if current and total + size > limit:
            groups.append(current)
            current, total = [], 0
        current.append(uid)
        total += size
    if current:
        groups.append(current)
    return groups


@dataclass
class Item:
    """One downloaded message waiting to be committed."""

    uid: int
    key: str
    data: bytes


@dataclass
class Cursor:
    """Progress through one folder within a pass (the logon's bookkeeping)."""

    info: FolderInfo
    state: FolderState
    remaining: list[int]
    """Candidate UIDs not fetched yet, ascending."""
    done: list[int] = field(default_factory=list)
    """UIDs committed locally (now or earlier) whose server action is still to be done."""
    skipped: list[int] = field(default_factory=list)
    """UIDs left on the server as too large: the keep-mode floor stays below them."""
    fingerprints: dict[str, str] | None = None
    sizes: dict[int, int] = field(default_factory=dict)
    """RFC822.SIZE of each candidate UID, as the listing FETCH said."""
    in_flight: list[int] = field(default_factory=list)
    """UIDs taken from ``remaining`` by a FETCH not yet queued (pending for the floor)."""
    committing: list[int] = field(default_factory=list)
    """UIDs of the batch being committed (pending for the floor until committed)."""

"""The outgoing queue a page at a time, by keyset: a cursor names the last entry shown, so
a page of a queue of 100,000 costs the same as a page of a queue of ten, and nothing ever
reads the whole queue."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ..mapi import MAPI_E_INVALID_PARAMETER, MapiError
from ..session import AsyncSession
from ..store import QueueEntry, QueueState, Store

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: ``state=`` values besides the queue states: the CLI's default (not yet finished) and all.
PENDING, ALL = "pending", "all"


@dataclass(frozen=True)
class QueuePage:
    """Entries in submit order and the cursor of the next page (None: this is the last)."""

    entries: list[QueueEntry]
    next_cursor: str | None

    def as_json(self) -> list[dict[str, Any]]:
        """The entries as ``mapispool queue list --json`` prints them."""
        return [entry.as_dict() for entry in self.entries]


def parse_state(text: str | None) -> str:
    """``state=`` of a request: a queue state, ``pending`` (the default, as ``queue list``)
    or ``all`` (as ``queue list --all``)."""
    if not text:
        return PENDING
    if text in (PENDING, ALL) or text in {s.value for s in QueueState}:
        return text
    known = ", ".join([PENDING, ALL, *(s.value for s in QueueState)])
    raise MapiError(MAPI_E_INVALID_PARAMETER, f"unknown queue state {text!r}; use one of: {known}")


def parse_limit(text: str | None) -> int:
    if not text:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 0 < int(text) <= MAX_LIMIT:
        raise MapiError(MAPI_E_INVALID_PARAMETER, f"limit must be 1 to {MAX_LIMIT}, not {text!r}")
    return int(text)


def encode_cursor(entry: QueueEntry) -> str:
    return f"{entry.submit_time!r}_{entry.seq}"


def decode_cursor(text: str | None) -> tuple[float, int]:
    """The (submit_time, seq) a cursor names; no cursor is the start of the queue."""
    if not text:
        return (-1.0, -1)
    when, _, seq = text.partition("_")
    try:
        return float(when), int(seq)
    except ValueError:
        raise MapiError(
            MAPI_E_INVALID_PARAMETER,
            f"{text!r} is not a queue cursor; use the one the previous page gave",
        ) from None


async def queue_page(
    session: AsyncSession, state: str, cursor: str | None, limit: int
) -> QueuePage:
    """One page of the queue after ``cursor``, in submit order, with recipients."""
    states = None if state == PENDING else list(QueueState) if state == ALL else [QueueState(state)]
    # One more than asked: whether a next page exists, without counting the queue.
    found = await store_page(session.store, states, decode_cursor(cursor), limit + 1)
    page = found[:limit]
    more = len(found) > limit
    return QueuePage(page, encode_cursor(page[-1]) if more and page else None)


async def store_page(
    store: Store,
    states: Collection[QueueState] | None,
    after: tuple[float, int] | None,
    limit: int,
) -> list[QueueEntry]:
    """Up to ``limit`` entries in ``states`` (None: all but sent and cancelled) after
    ``after`` = (submit_time, seq), in submit order, with recipients: the store interface's
    ``queue_page`` with the same arguments. Each state is read through the queue's
    (state, submit_time) index, a page at most, and the pages merged, so the cost does not
    grow with the queue."""
    wanted = [s for s in QueueState if s not in (QueueState.SENT, QueueState.CANCELLED)]
    found: list[QueueEntry] = []
    for state in states if states is not None else wanted:
        found += await store.queue_page(
            states=[QueueState(state)], after=after, limit=limit, with_recipients=True
        )
    found.sort(key=lambda entry: (entry.submit_time, entry.seq))
    return found[:limit]

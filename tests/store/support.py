"""Small builders shared by the Store contract tests."""

from __future__ import annotations

import time
from collections.abc import Sequence

from mapispool.mapi import PR_SUBJECT
from mapispool.store.base import Store
from mapispool.store.model import QueueState, Recipient
from mapispool.store.types import Claim, Outcome, RecipientOutcome, Route

#: One transport taking every address type: claims get every due message.
SMTP = Route("smtp", (("smtp", ("SMTP",)),))


def content(subject: str, body: bytes = b"hello\r\n") -> bytes:
    return b"Subject: " + subject.encode() + b"\r\nTo: bob@example.test\r\n\r\n" + body


async def submit(
    store: Store,
    subject: str = "s",
    *,
    at: float | None = None,
    later: float | None = None,
    lifetime: float = 3600.0,
    recipients: Sequence[Recipient] | None = None,
    body: bytes = b"hello\r\n",
) -> bytes:
    """Submit one message at ``at`` (now), due at ``later`` (now) with one SMTP recipient
    unless ``recipients`` are given; returns its entry id."""
    now = time.time() if at is None else at
    rcpts = [Recipient("bob@example.test")] if recipients is None else list(recipients)
    return await store.submit(
        content(subject, body),
        {PR_SUBJECT: subject},
        rcpts,
        submit_time=now,
        not_before=later,
        expires_at=now + lifetime,
    )


async def submit_many(store: Store, n: int, *, start: float | None = None) -> list[bytes]:
    """``n`` messages with increasing submit times (subjects m0, m1, ...)."""
    base = time.time() - n if start is None else start
    return [await submit(store, f"m{i}", at=base + i) for i in range(n)]


async def claim_all(store: Store, route: Route = SMTP, **kwargs: object) -> list[Claim]:
    return await store.claim(route, now=time.time(), **kwargs)  # type: ignore[arg-type]


def delivered(
    claim: Claim, transport: str = "smtp", folder: str | None = "Sent Items", delete: bool = False
) -> Outcome:
    """The outcome of an attempt that delivered to every recipient."""
    rows = tuple(r.row_id for r in claim.recipients)
    return Outcome(
        claim.entry_id,
        QueueState.SENT,
        token=claim.token,
        transport=transport,
        folder=folder,
        delete=delete,
        recipient_outcomes=[RecipientOutcome(rows, "delivered", transport)],
    )


async def state_of(store: Store, entry_id: bytes) -> QueueState:
    return (await store.queue_entry(entry_id, with_recipients=False)).state

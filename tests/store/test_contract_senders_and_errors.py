"""Store contract: claims that choose the transport by the message's sender
(``Route.senders``), and the last error a finished message shows."""

from __future__ import annotations

import time

from mapispool.mapi import PR_SENDER_EMAIL_ADDRESS, PR_SUBJECT
from mapispool.store.model import QueueState, Recipient
from mapispool.store.types import Outcome, Route

from .support import content

#: Two SMTP accounts: "work" takes mail from *@work.test only; "home" has no list.
ORDER = (("home", ("SMTP",)), ("work", ("SMTP",)))
SENDERS = (("work", ("*@work.test",)),)


async def _submit_from(store, sender: str) -> bytes:  # type: ignore[no-untyped-def]
    now = time.time()
    return bytes(
        await store.submit(
            content(f"from {sender}"),
            {PR_SUBJECT: "s", PR_SENDER_EMAIL_ADDRESS: sender},
            [Recipient("bob@example.test")],
            submit_time=now,
            not_before=None,
            expires_at=now + 3600,
        )
    )


async def test_a_route_by_sender_claims_only_the_mail_its_senders_match(store):
    from_work = await _submit_from(store, "ann@work.test")
    from_home = await _submit_from(store, "ann@home.test")
    now = time.time()

    work = await store.claim(Route("work", ORDER, SENDERS), now=now)
    home = await store.claim(Route("home", ORDER, SENDERS), now=now)

    assert [c.entry_id for c in work] == [from_work]
    assert [c.entry_id for c in home] == [from_home]


async def test_without_senders_transport_order_decides(store):
    entry = await _submit_from(store, "ann@work.test")
    now = time.time()

    assert await store.claim(Route("work", ORDER), now=now) == []
    assert [c.entry_id for c in await store.claim(Route("home", ORDER), now=now)] == [entry]


async def test_a_sent_message_shows_no_stale_error_and_a_failed_one_says_why(store):
    sent = await _submit_from(store, "a@x.test")
    failed = await _submit_from(store, "b@x.test")
    route = Route("home", ORDER)
    claims = {c.entry_id: c for c in await store.claim(route, now=time.time())}

    for entry_id in (sent, failed):
        await store.record_one(
            Outcome(
                entry_id, token=claims[entry_id].token, state=QueueState.RETRY,
                not_before=time.time() - 1, error="421 try later",
            )
        )  # fmt: skip
    claims = {c.entry_id: c for c in await store.claim(route, now=time.time())}
    await store.record_one(
        Outcome(sent, token=claims[sent].token, state=QueueState.SENT, folder="Sent Items")
    )
    await store.record_one(
        Outcome(failed, token=claims[failed].token, state=QueueState.FAILED, error="550 no")
    )

    assert (await store.queue_entry(sent)).last_error is None
    assert (await store.queue_entry(failed)).last_error == "550 no"

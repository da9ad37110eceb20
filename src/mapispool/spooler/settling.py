"""Settling a message after any attempt (DESIGN §7): recipients no transport can take
fail, new failures get their NDR, a message whose every recipient is done is finished
(Sent Items, deleted, or failed in the Outbox), expired messages fail, and senders hear
about long delays. ``Settler`` works from the store and the routing alone."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..mapi import PR_DELETE_AFTER_SUBMIT, PR_SENTMAIL_ENTRYID
from ..spi import Recipient
from ..store import Note, Outcome, QueueEntry, QueueState, RecipientOutcome, Report, Store
from .bounce_to_sender import bounce_to_sender
from .reports import FailedRecipient, build_delay_notice, build_ndr, wants_ndr
from .routing import Registration, route


def sent_folder(store: Store, props: Mapping[int, Any]) -> str | None:
    """Where a sent message goes (spec §4.3 step 9): None (deleted) with
    PR_DELETE_AFTER_SUBMIT, the folder PR_SENTMAIL_ENTRYID names, or Sent Items."""
    if props.get(PR_DELETE_AFTER_SUBMIT):
        return None
    if isinstance(props.get(PR_SENTMAIL_ENTRYID), bytes):
        return store.folder_by_entry_id(props[PR_SENTMAIL_ENTRYID]) or "Sent Items"
    return "Sent Items"


class Settler:
    """Settles messages; its collaborators: the store, the routing of the logged-on
    transports (``registrations``), whether every transport is logged on, and the delay
    after which a sender hears that a message still waits (0: never). With
    ``bounce_lifetime`` (the profile's ``bounce_to_sender``), an NDR for mail from
    sendmail or the SMTP listener is also queued to the envelope sender, with that
    lifetime, and ``queue_changed`` wakes the spooler for it."""

    def __init__(
        self,
        store: Store,
        registrations: Callable[[], list[Registration]],
        all_logged_on: Callable[[], bool],
        delay_warning: float,
        *,
        bounce_lifetime: float | None = None,
        queue_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self._registrations = registrations
        self._all_logged_on = all_logged_on
        self._delay_warning = delay_warning
        self._bounce_lifetime = bounce_lifetime
        self._queue_changed = queue_changed

    async def _record(self, outcome: Outcome) -> None:
        await self.store.record_one(outcome)

    async def _transition(self, entry_id: bytes, state: QueueState, **changes: Any) -> None:
        await self._record(Outcome(entry_id, state, **changes))

    async def _set_outcome(
        self,
        entry_id: bytes,
        rows: Sequence[int],
        outcome: str,
        *,
        transport: str | None,
        report_text: str | None = None,
    ) -> None:
        result = RecipientOutcome(tuple(rows), outcome, transport, report_text)
        await self._record(Outcome(entry_id, recipient_outcomes=[result]))

    async def settle(self, entry_id: bytes) -> None:
        """After any attempt: fail recipients no transport can take, send the NDR for new
        failures, and finish the message once every recipient is done."""
        entry = await self.store.queue_entry(entry_id, with_recipients=False)
        if entry.state.finished:
            return
        stored = await self.store.message(entry_id, content=False)
        props, recipients = dict(stored.props), list(stored.recipients)
        outcomes = {row: (outcome, text, sent) for row, outcome, text, sent in
                    await self.store.recipient_outcomes(entry_id)}  # fmt: skip
        registrations = self._registrations()
        unroutable = []
        if self._all_logged_on():
            for r in recipients:
                if (
                    outcomes[r.row_id][0] is None
                    and route(r.addrtype, registrations, entry.declined) is None
                ):
                    unroutable.append(r)
        for r in unroutable:
            why = (
                f"no transport accepts address type {r.addrtype}"
                if route(r.addrtype, registrations) is None
                else f"every transport for address type {r.addrtype} declined it"
            )
            await self._set_outcome(entry_id, [r.row_id], "failed", transport=None,
                                    report_text=why)  # fmt: skip
            outcomes[r.row_id] = ("failed", why, False)
        await self._send_ndr(entry_id, props, recipients, outcomes)
        if any(o is None for o, _t, _s in outcomes.values()):
            return
        delivered = any(o == "delivered" for o, _t, _s in outcomes.values())
        if entry.state is QueueState.IN_FLIGHT:
            return  # the running attempt finishes it
        if entry.state not in (QueueState.QUEUED, QueueState.RETRY):
            return
        if delivered:
            await self._finish_sent(entry_id, props)
        else:
            # The failure is the message's last error, not what an earlier try left.
            reasons = "; ".join(
                f"{r.address}: {outcomes[r.row_id][1] or 'failed'}"
                for r in recipients
                if outcomes[r.row_id][0] == "failed"
            )
            await self._transition(
                entry_id, QueueState.FAILED, folder="Outbox", error=reasons or None
            )

    async def _send_ndr(
        self,
        entry_id: bytes,
        props: dict[int, Any],
        recipients: Sequence[Recipient],
        outcomes: dict[int, tuple[str | None, str | None, bool]],
    ) -> None:
        fresh = [
            r for r in recipients if outcomes[r.row_id][0] == "failed" and not outcomes[r.row_id][2]
        ]
        if not fresh:
            return
        rows = [r.row_id for r in fresh]
        if not wants_ndr(props):
            await self._record(Outcome(entry_id, reports=[Report(None, ndr_rows=tuple(rows))]))
            return
        failed = [
            FailedRecipient(r.address, r.addrtype, outcomes[r.row_id][1] or "delivery failed")
            for r in fresh
        ]
        with self.store.open_content(entry_id, verify=False) as stream:
            head = stream.read(64 * 1024)
        content, ndr_props = build_ndr(props, head, failed)
        await self._record(
            Outcome(
                entry_id,
                reports=[Report(content, ndr_props, ndr_rows=tuple(rows))],
                notes=[Note("ndr", detail=", ".join(f.address for f in failed))],
            )
        )
        lifetime = self._bounce_lifetime
        if lifetime is not None and await bounce_to_sender(
            self.store, entry_id, props, head, failed, lifetime=lifetime
        ):
            self._queue_changed()

    async def warn_delayed(self) -> None:
        """``retry.delay_warning``: tell the sender once (a ``Report.IPM.Note.DelayedDR``
        in the Inbox) about each message still not sent that long after submission."""
        after = self._delay_warning
        if not after:
            return
        seen: set[bytes] = set()
        due_before = time.time() - after
        while page := [
            e for e in await self.store.delayed_entries(due_before) if e.entry_id not in seen
        ]:
            seen.update(e.entry_id for e in page)
            for entry in page:
                await self._warn(entry)

    async def _warn(self, entry: QueueEntry) -> None:
        """The delay notice for one message (or only its mark, when it wants none)."""
        stored = await self.store.message(entry.entry_id, content=False)
        props, recipients = dict(stored.props), list(stored.recipients)
        if not wants_ndr(props):
            await self._record(Outcome(entry.entry_id, reports=[Report(None, delay_notice=True)]))
            return
        outcomes = await self.store.recipient_outcomes(entry.entry_id)
        pending = {row for row, outcome, _t, _s in outcomes if outcome is None}
        reason = f"not delivered yet; last error: {entry.last_error or 'none'}"
        waiting = [
            FailedRecipient(r.address, r.addrtype, reason)
            for r in recipients
            if r.row_id in pending
        ]
        with self.store.open_content(entry.entry_id, verify=False) as stream:
            head = stream.read(64 * 1024)
        content, report_props = build_delay_notice(props, head, waiting)
        await self._record(
            Outcome(
                entry.entry_id,
                reports=[Report(content, report_props, delay_notice=True)],
                notes=[Note("delay-notice")],
            )
        )

    async def settle_leftovers(self) -> None:
        """Finish the messages a previous spooler stopped before finishing: every
        recipient has an outcome, but the message still waits in the queue."""
        seen: set[bytes] = set()
        while True:
            page = [e for e in await self.store.settled_entries() if e.entry_id not in seen]
            for entry in page:
                seen.add(entry.entry_id)
                await self.settle(entry.entry_id)
            if not page:
                return

    async def _finish_sent(self, entry_id: bytes, props: dict[int, Any]) -> None:
        """Sent-items handling (spec §4.3 step 9), see ``sent_folder``."""
        folder = sent_folder(self.store, props)
        await self._transition(entry_id, QueueState.SENT, folder=folder, delete=folder is None)

    async def expire(self, entry_id: bytes, error: str) -> None:
        """The message outlived its lifetime: every pending recipient fails (NDR)."""
        outcomes = await self.store.recipient_outcomes(entry_id)
        pending = [row for row, outcome, _t, _s in outcomes if outcome is None]
        why = f"gave up after the message lifetime; last error: {error}"
        await self._set_outcome(entry_id, pending, "failed", transport=None, report_text=why)
        await self.settle(entry_id)

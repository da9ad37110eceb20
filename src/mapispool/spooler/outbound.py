"""Outbound: offering one queued message to one transport (SubmitMessage / EndMessage and
every outcome of spec §3.3), recording per-recipient results, NDRs and sent-items handling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..mapi import (
    BEGIN_DEFERRED,
    END_DONT_RESEND,
    END_RESEND_LATER,
    END_RESEND_NOW,
    MAPI_E_BUSY,
    MAPI_E_CANCEL,
    MAPI_E_CORRUPT_DATA,
    MAPI_E_NETWORK_ERROR,
    MAPI_E_NOT_ME,
    MAPI_E_WAIT,
    PR_DELETE_AFTER_SUBMIT,
    PR_NDR_DIAG_CODE,
    PR_REPORT_TEXT,
    PR_SENTMAIL_ENTRYID,
    MapiError,
)
from ..spi import OutboundMessage, Recipient
from ..store import QueueEntry, QueueState, Store
from .reports import FailedRecipient, build_delay_notice, build_ndr, wants_ndr
from .routing import Registration, route

if TYPE_CHECKING:
    from .engine import Spooler
    from .logons import LogonHandle

log = logging.getLogger("mapispool.spooler")

#: How many END_RESEND_NOW answers in a row before the spooler treats it as RESEND_LATER.
MAX_RESEND_NOW = 5


class Outcome(Enum):
    """What one offer of a message to a transport ended in."""

    NOTHING = "nothing"  # the transport had no recipient of this message
    SENT = "sent"  # the transport took its recipients (others may remain)
    DECLINED = "declined"  # MAPI_E_NOT_ME, or it took none of its recipients
    RETRY = "retry"
    PARKED = "parked"
    UNCERTAIN = "uncertain"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class Offered:
    """The result of ``OutboundRunner.offer``: the outcome, the recipients reported failed
    in this attempt, and the message size."""

    outcome: Outcome
    failed: int = 0
    size: int = 0


@dataclass
class _Attempt:
    """The bookkeeping of one submit/end pair."""

    handle: LogonHandle
    entry: QueueEntry
    message: OutboundMessage
    mine: list[Recipient]
    failed_rows: set[int]
    #: The message's properties as stored (the transport may change ``message.props``).
    stored_props: dict[int, Any]


class OutboundRunner:
    """Offers messages to transports and settles them; one per spooler."""

    def __init__(self, spooler: Spooler) -> None:
        self.spooler = spooler
        self._attempts: dict[bytes, _Attempt] = {}

    @property
    def store(self) -> Store:
        return self.spooler.store

    # -- routing --------------------------------------------------------------------

    def recipients_for(
        self,
        handle: LogonHandle,
        recipients: Sequence[Recipient],
        declined: Sequence[str],
        registrations: Sequence[Registration],
    ) -> list[Recipient]:
        """The pending recipients that routing gives to ``handle``."""
        return [
            r
            for r in recipients
            if not r.responsibility and route(r.addrtype, registrations, declined) == handle.name
        ]

    # -- one offer ------------------------------------------------------------------

    async def offer(self, handle: LogonHandle, entry: QueueEntry) -> Offered:
        """Offer ``entry`` to ``handle`` once (with END_RESEND_NOW repeats) and record the
        result. Never raises for a transport's failure: the message stays safe."""
        props, recipients, size = self.store.load_outbound(entry.entry_id)
        registrations = self.spooler.registrations()
        mine = self.recipients_for(handle, recipients, entry.declined, registrations)
        if not mine:
            return Offered(Outcome.NOTHING)
        flags = 0
        if entry.state is QueueState.PARKED:
            flags = BEGIN_DEFERRED
        mine_rows = {r.row_id for r in mine}
        # MAPI: before offering, the spooler sets PR_RESPONSIBILITY false for the recipients
        # this transport should handle and true for every other one.
        for r in recipients:
            r.responsibility = r.row_id not in mine_rows
        entry_id = entry.entry_id
        message = OutboundMessage(
            entry_id,
            props,
            recipients,
            size=size,
            open_content=lambda: self.store.open_content(entry_id),
            on_handoff=lambda begun: self._handoff(entry_id, begun),
        )
        self.store.transition(
            entry_id, QueueState.IN_FLIGHT, count_attempt=True, event="offered",
            transport=handle.name,
        )  # fmt: skip
        attempt = _Attempt(handle, entry, message, mine, set(), dict(props))
        self._attempts[entry_id] = attempt
        try:
            outcome = await self._submit_and_end(attempt, flags)
            return Offered(outcome, len(attempt.failed_rows), size)
        finally:
            self._attempts.pop(entry_id, None)
            self.spooler.queue_changed()

    def _handoff(self, entry_id: bytes, begun: bool) -> None:
        """Persist the start of a hand-over. Its end is not persisted on its own: the
        transaction that records the attempt's outcome clears the flag, so that a crash
        after the server answered but before the outcome was committed still counts as
        uncertain (the answer is lost with the process)."""
        if begun:
            self.store.mark_handoff(entry_id, True)

    async def _submit_and_end(self, attempt: _Attempt, flags: int) -> Outcome:
        handle, message = attempt.handle, attempt.message
        assert handle.logon is not None
        logon = handle.logon
        for _ in range(MAX_RESEND_NOW):
            try:
                async with handle.submit_slot():
                    await logon.submit_message(message, flags)
                    answer = await logon.end_message(message)
            except MapiError as exc:
                return self._after_error(attempt, exc)
            except Exception as exc:  # a transport bug must not lose or block anything
                log.exception("transport %s failed in submit_message", handle.name)
                return self._after_error(attempt, exc)
            if answer & END_RESEND_NOW:
                self._record_taken(attempt)
                continue
            return self._after_end(attempt, answer)
        return self._retry(attempt, "the transport kept asking to resend now", hint=None)

    # -- outcomes -------------------------------------------------------------------

    def _record_taken(self, attempt: _Attempt) -> list[Recipient]:
        """Persist the recipients the transport took (responsibility now true)."""
        taken = [
            r for r in attempt.mine if r.responsibility and r.row_id not in attempt.failed_rows
        ]
        if taken:
            self.store.set_recipient_outcome(
                attempt.entry.entry_id,
                [r.row_id for r in taken],
                "delivered",
                transport=attempt.handle.name,
            )
        self.store.save_recipients(attempt.entry.entry_id, attempt.mine)
        return taken

    def _after_end(self, attempt: _Attempt, answer: int) -> Outcome:
        entry_id, name = attempt.entry.entry_id, attempt.handle.name
        if self._delivered_whole(attempt, answer):
            return Outcome.SENT
        self._record_taken(attempt)
        if answer & END_DONT_RESEND:
            self.store.transition(entry_id, QueueState.PARKED, parked_by=name, transport=name)
            attempt.handle.released.discard(entry_id)
            return Outcome.PARKED
        if answer & END_RESEND_LATER:
            delay = self.spooler.profile.retry.resend_later
            remaining = [r for r in attempt.mine if not r.responsibility]
            if remaining:
                return self._retry(attempt, "the transport will send it later", hint=delay)
        left = [r for r in attempt.mine if not r.responsibility]
        if left and len(left) == len(attempt.mine):
            # The transport took none of its recipients: as if it had said MAPI_E_NOT_ME.
            self.store.add_declined(entry_id, name)
            self.store.transition(entry_id, QueueState.QUEUED, event="declined", transport=name)
            self.settle(entry_id)
            return Outcome.DECLINED
        if left:
            self.store.add_declined(entry_id, name)
        self.store.transition(entry_id, QueueState.QUEUED, event="handed-over", transport=name)
        self.settle(entry_id)
        return Outcome.SENT

    def _delivered_whole(self, attempt: _Attempt, answer: int) -> bool:
        """The common case in two transactions instead of five: the transport took every
        recipient of the message and reported none failed, so after the outcomes the
        hand-over and the sent-items move commit together (what ``save_recipients``,
        the transition back to queued and ``settle`` would do one by one)."""
        message = attempt.message
        if (
            answer & (END_DONT_RESEND | END_RESEND_LATER)
            or attempt.failed_rows
            or len(attempt.mine) != len(message.recipients)
            or not all(r.responsibility for r in attempt.mine)
        ):
            return False
        props = attempt.stored_props
        folder: str | None = "Sent Items"
        if props.get(PR_DELETE_AFTER_SUBMIT):
            folder = None
        elif isinstance(props.get(PR_SENTMAIL_ENTRYID), bytes):
            folder = self.store.folder_by_entry_id(props[PR_SENTMAIL_ENTRYID]) or "Sent Items"
        entry_id, name = attempt.entry.entry_id, attempt.handle.name
        # The outcomes commit first and on their own, as on every path: a crash right
        # after them finishes the message at the next start, never resends it.
        self.store.set_recipient_outcome(
            entry_id, [r.row_id for r in attempt.mine], "delivered", transport=name
        )
        self.store.complete_delivery(entry_id, attempt.mine, transport=name, folder=folder)
        return True

    def _after_error(self, attempt: _Attempt, exc: Exception) -> Outcome:
        entry_id, name = attempt.entry.entry_id, attempt.handle.name
        text = str(exc) or type(exc).__name__
        hresult = exc.hresult if isinstance(exc, MapiError) else None
        if hresult == MAPI_E_CORRUPT_DATA:
            return self._fail_corrupt(attempt, text)
        if attempt.message.handoff_uncertain:
            self._record_taken(attempt)
            self.store.transition(
                entry_id, QueueState.UNCERTAIN, error=f"delivery uncertain: {text}",
                transport=name,
            )  # fmt: skip
            return Outcome.UNCERTAIN
        if hresult == MAPI_E_NOT_ME:
            self._record_taken(attempt)
            self.store.add_declined(entry_id, name)
            self.store.transition(entry_id, QueueState.QUEUED, event="not-me", transport=name)
            self.settle(entry_id)
            return Outcome.DECLINED
        if hresult == MAPI_E_CANCEL:
            self._record_taken(attempt)
            self.store.finish(entry_id, QueueState.CANCELLED, folder="Deleted Items")
            return Outcome.CANCELLED
        self._record_taken(attempt)
        hint = exc.retry_after if isinstance(exc, MapiError) else None
        if hresult == MAPI_E_BUSY and hint is None:
            hint = min(30.0, self.spooler.profile.retry.floor)
        if hresult not in (MAPI_E_WAIT, MAPI_E_NETWORK_ERROR, MAPI_E_BUSY):
            log.warning("transport %s failed on %s: %s", name, entry_id.hex(), text)
        return self._retry(attempt, text, hint=hint)

    def _fail_corrupt(self, attempt: _Attempt, error: str) -> Outcome:
        """The stored content failed its checksum (``store.integrity``): the read that
        would have given a transport its last bytes raised instead, so nothing complete
        was handed over, and a resend would read the same bytes. Every pending recipient
        fails (NDR) and the message ends ``failed`` with the reason as its last error.
        Nothing the transport marked in this attempt counts as delivered."""
        entry_id = attempt.entry.entry_id
        log.error("message %s was not sent: %s", entry_id.hex(), error)
        self.store.transition(
            entry_id, QueueState.QUEUED, error=error, event="corrupt",
            transport=attempt.handle.name,
        )  # fmt: skip
        pending = [row for row, outcome, _t, _s in self.store.recipient_outcomes(entry_id)
                   if outcome is None]  # fmt: skip
        self.store.set_recipient_outcome(
            entry_id, pending, "failed", transport=None, report_text=error
        )
        self.settle(entry_id)
        return Outcome.FAILED

    def _retry(self, attempt: _Attempt, error: str, *, hint: float | None) -> Outcome:
        entry_id = attempt.entry.entry_id
        queue_entry = self.store.queue_entry(entry_id, with_recipients=False)
        delay = self.spooler.retry_policy.delay(queue_entry.attempts, hint=hint)
        not_before = time.time() + delay
        if not_before >= queue_entry.expires_at:
            self.store.transition(entry_id, QueueState.RETRY, not_before=not_before, error=error)
            self.expire(entry_id, error)
            return Outcome.FAILED
        self.store.transition(
            entry_id, QueueState.RETRY, not_before=not_before, error=error,
            transport=attempt.handle.name,
        )  # fmt: skip
        self.settle(entry_id)
        # Every recipient may be done after all (taken before the error): then it is sent.
        if self.store.queue_entry(entry_id, with_recipients=False).state is QueueState.SENT:
            return Outcome.SENT
        return Outcome.RETRY

    # -- StatusRecips ---------------------------------------------------------------

    def status_recips(
        self, handle: LogonHandle, message: OutboundMessage, recipients: Sequence[Recipient]
    ) -> None:
        """A transport reports recipients that failed for good: record them for the NDR."""
        attempt = self._attempts.get(message.entry_id)
        rows = []
        for recipient in recipients:
            recipient.responsibility = True
            text = str(recipient.props.get(PR_REPORT_TEXT) or "delivery failed")
            diag = recipient.props.get(PR_NDR_DIAG_CODE)
            reason = (
                f"{text} (diagnostic {diag})"
                if diag is not None and str(diag) not in text
                else text
            )
            self.store.set_recipient_outcome(
                message.entry_id, [recipient.row_id], "failed", transport=handle.name,
                report_text=reason,
            )  # fmt: skip
            rows.append(recipient.row_id)
        if attempt is not None:
            attempt.failed_rows.update(rows)

    # -- settling -------------------------------------------------------------------

    def settle(self, entry_id: bytes) -> None:
        """After any attempt: fail recipients no transport can take, send the NDR for new
        failures, and finish the message once every recipient is done."""
        entry = self.store.queue_entry(entry_id, with_recipients=False)
        if entry.state.finished:
            return
        props, recipients, _size = self.store.load_outbound(entry_id)
        outcomes = {row: (outcome, text, sent) for row, outcome, text, sent in
                    self.store.recipient_outcomes(entry_id)}  # fmt: skip
        registrations = self.spooler.registrations()
        unroutable = []
        if self.spooler.all_logged_on():
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
            self.store.set_recipient_outcome(entry_id, [r.row_id], "failed", transport=None,
                                             report_text=why)  # fmt: skip
            outcomes[r.row_id] = ("failed", why, False)
        self._send_ndr(entry_id, props, recipients, outcomes)
        if any(o is None for o, _t, _s in outcomes.values()):
            return
        delivered = any(o == "delivered" for o, _t, _s in outcomes.values())
        if entry.state is QueueState.IN_FLIGHT:
            return  # the running attempt finishes it
        if entry.state not in (QueueState.QUEUED, QueueState.RETRY):
            return
        if delivered:
            self._finish_sent(entry_id, props)
        else:
            self.store.finish(entry_id, QueueState.FAILED, folder="Outbox")

    def _send_ndr(
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
            self.store.deliver_report(entry_id, None, {}, ndr_rows=rows)
            return
        failed = [
            FailedRecipient(r.address, r.addrtype, outcomes[r.row_id][1] or "delivery failed")
            for r in fresh
        ]
        with self.store.open_content(entry_id, verify=False) as stream:
            head = stream.read(64 * 1024)
        content, ndr_props = build_ndr(props, head, failed)
        self.store.deliver_report(entry_id, content, ndr_props, ndr_rows=rows)
        self.store.log_event(entry_id, "ndr", detail=", ".join(f.address for f in failed))

    def warn_delayed(self) -> None:
        """``retry.delay_warning``: tell the sender once (a ``Report.IPM.Note.DelayedDR``
        in the Inbox) about each message still not sent that long after submission."""
        after = self.spooler.profile.retry.delay_warning
        if not after:
            return
        for entry in self.store.delayed_entries(time.time() - after):
            props, recipients, _size = self.store.load_outbound(entry.entry_id)
            if not wants_ndr(props):
                self.store.deliver_report(entry.entry_id, None, {}, delay_notice=True)
                continue
            outcomes = self.store.recipient_outcomes(entry.entry_id)
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
            self.store.deliver_report(entry.entry_id, content, report_props, delay_notice=True)
            self.store.log_event(entry.entry_id, "delay-notice")

    def settle_leftovers(self) -> None:
        """Finish the messages a previous spooler stopped before finishing: every
        recipient has an outcome, but the message still waits in the queue."""
        for entry in self.store.settled_entries():
            self.settle(entry.entry_id)

    def _finish_sent(self, entry_id: bytes, props: dict[int, Any]) -> None:
        """Sent-items handling (spec §4.3 step 9): delete with PR_DELETE_AFTER_SUBMIT, move
        to PR_SENTMAIL_ENTRYID, or by default to Sent Items."""
        folder: str | None = "Sent Items"
        if props.get(PR_DELETE_AFTER_SUBMIT):
            folder = None
        elif isinstance(props.get(PR_SENTMAIL_ENTRYID), bytes):
            folder = self.store.folder_by_entry_id(props[PR_SENTMAIL_ENTRYID]) or "Sent Items"
        self.store.finish(entry_id, QueueState.SENT, folder=folder)

    def expire(self, entry_id: bytes, error: str) -> None:
        """The message outlived its lifetime: every pending recipient fails (NDR)."""
        outcomes = self.store.recipient_outcomes(entry_id)
        pending = [row for row, outcome, _t, _s in outcomes if outcome is None]
        why = f"gave up after the message lifetime; last error: {error}"
        self.store.set_recipient_outcome(
            entry_id, pending, "failed", transport=None, report_text=why
        )
        self.settle(entry_id)

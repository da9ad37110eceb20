"""Outbound: offering one queued message to one transport (SubmitMessage / EndMessage and
every outcome of spec §3.3), recording per-recipient results, NDRs and sent-items handling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

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

_T = TypeVar("_T")

#: The name under which a failure to record outcomes shows on the spooler's status row.
RECORDING = "recording"

#: How many END_RESEND_NOW answers in a row before the spooler treats it as RESEND_LATER.
MAX_RESEND_NOW = 5


def printable(text: str) -> str:
    """``text`` made safe to store and show: characters that cannot be encoded (lone
    surrogates from a reply decoded with surrogateescape) become backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Outcome(Enum):
    """What one offer of a message to a transport ended in."""

    NOTHING = "nothing"  # the transport had no recipient of this message
    SENT = "sent"  # the attempt delivered its recipients (others may remain)
    DECLINED = "declined"  # MAPI_E_NOT_ME, or it took none of its recipients
    RETRY = "retry"
    PARKED = "parked"
    UNCERTAIN = "uncertain"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class Offered:
    """The result of ``OutboundRunner.offer``: the outcome, the recipients reported failed
    in this attempt, the message size, and how many recipients the attempt handled."""

    outcome: Outcome
    failed: int = 0
    size: int = 0
    handled: int = 0


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
    #: Recipients reported with ``delivered_recips`` (their outcome is recorded already).
    delivered_rows: set[int] = field(default_factory=set)


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
            if entry.state is QueueState.PARKED:
                # Released, but nothing of it is left for the transport that held it (a
                # store written before marks stopped counting as delivery): unpark it,
                # so that it finishes or goes on to other transports instead of waiting.
                self.store.transition(entry.entry_id, QueueState.QUEUED, event="unparked",
                                      transport=handle.name)  # fmt: skip
                self.settle(entry.entry_id)
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
            return Offered(outcome, len(attempt.failed_rows), size, len(attempt.mine))
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
        """Run submit/end pairs (again at once on END_RESEND_NOW) and record the outcome.
        Recording never raises: a store failure leaves the message retrying (never
        delivered), see ``_recording_failed``."""
        handle, message = attempt.handle, attempt.message
        assert handle.logon is not None
        logon = handle.logon
        for _ in range(MAX_RESEND_NOW):
            try:
                async with handle.submit_slot():
                    await logon.submit_message(message, flags)
                    answer = await logon.end_message(message)
            except MapiError as exc:
                return self._recording(attempt, self._after_error, exc)
            except Exception as exc:  # a transport bug must not lose or block anything
                log.exception("transport %s failed in submit_message", handle.name)
                return self._recording(attempt, self._after_error, exc)
            if answer & END_RESEND_NOW:
                try:
                    left = self._record_attempt(attempt, marks_deliver=False)
                except Exception as exc:
                    return self._recording_failed(attempt, exc)
                if left:
                    # Offered again with every recipient not delivered yet, as a new attempt.
                    message.handoff_begun = message.handoff_ended = False
                    continue
                answer = 0  # everything was reported delivered or failed: nothing to resend
            return self._recording(attempt, self._after_end, answer)
        return self._recording(attempt, self._resend_now_exhausted, None)

    # -- outcomes -------------------------------------------------------------------

    def _recording(
        self, attempt: _Attempt, record: Callable[[_Attempt, _T], Outcome], arg: _T
    ) -> Outcome:
        """``record(attempt, arg)``, turning a failure to record into a retry."""
        try:
            outcome = record(attempt, arg)
        except Exception as exc:
            return self._recording_failed(attempt, exc)
        self.spooler.supervisor.ok(RECORDING)
        return outcome

    def _record_attempt(self, attempt: _Attempt, *, marks_deliver: bool) -> list[Recipient]:
        """Persist what one attempt did for the recipients it handled (DESIGN §7) and
        return the ones still pending.

        ``marks_deliver``: the attempt ended well (``end_message`` answered 0), so every
        recipient the transport marked is delivered. Otherwise only the recipients it
        reported through ``delivered_recips`` (already recorded) or ``status_recips``
        have an outcome; the marks of every other one are reset, so that it stays
        pending and is offered again."""
        reported = attempt.failed_rows | attempt.delivered_rows
        taken: list[Recipient] = []
        left: list[Recipient] = []
        for r in attempt.mine:
            if r.row_id in reported:
                r.responsibility = True
            elif marks_deliver and r.responsibility:
                taken.append(r)
            else:
                r.responsibility = False
                left.append(r)
        if taken:
            self.store.set_recipient_outcome(
                attempt.entry.entry_id,
                [r.row_id for r in taken],
                "delivered",
                transport=attempt.handle.name,
            )
        self.store.save_recipients(attempt.entry.entry_id, attempt.mine)
        return left

    def _after_end(self, attempt: _Attempt, answer: int) -> Outcome:
        entry_id, name = attempt.entry.entry_id, attempt.handle.name
        held = bool(answer & (END_DONT_RESEND | END_RESEND_LATER))
        if not held and self._delivered_whole(attempt):
            return Outcome.SENT
        left = self._record_attempt(attempt, marks_deliver=not held)
        if answer & END_DONT_RESEND and left:
            self.store.transition(entry_id, QueueState.PARKED, parked_by=name, transport=name)
            attempt.handle.released.discard(entry_id)
            return Outcome.PARKED
        if answer & END_RESEND_LATER and left:
            delay = self.spooler.profile.retry.resend_later
            return self._retry(attempt, "the transport will send it later", hint=delay)
        if not held and left and len(left) == len(attempt.mine):
            # The transport took none of its recipients: as if it had said MAPI_E_NOT_ME.
            self.store.add_declined(entry_id, name)
            self.store.transition(entry_id, QueueState.QUEUED, event="declined", transport=name)
            self.settle(entry_id)
            return Outcome.DECLINED
        if not held and left:
            self.store.add_declined(entry_id, name)
        self.store.transition(entry_id, QueueState.QUEUED, event="handed-over", transport=name)
        self.settle(entry_id)
        return Outcome.SENT

    def _delivered_whole(self, attempt: _Attempt) -> bool:
        """The common case in two transactions instead of five: the attempt ended well,
        the transport took every recipient of the message and reported none failed, so
        after the outcomes the hand-over and the sent-items move commit together (what
        ``save_recipients``, the transition back to queued and ``settle`` would do one
        by one)."""
        message = attempt.message
        if (
            attempt.failed_rows
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
        """An error raised from the attempt: nothing marked in it was delivered; only
        what the transport reported through delivered_recips / status_recips counts."""
        entry_id, name = attempt.entry.entry_id, attempt.handle.name
        text = printable(str(exc) or type(exc).__name__)
        hresult = exc.hresult if isinstance(exc, MapiError) else None
        self._record_attempt(attempt, marks_deliver=False)
        if hresult == MAPI_E_CORRUPT_DATA:
            return self._fail_corrupt(attempt, text)
        if attempt.message.handoff_uncertain:
            self.store.transition(
                entry_id, QueueState.UNCERTAIN, error=f"delivery uncertain: {text}",
                transport=name,
            )  # fmt: skip
            return Outcome.UNCERTAIN
        if hresult == MAPI_E_NOT_ME:
            self.store.add_declined(entry_id, name)
            self.store.transition(entry_id, QueueState.QUEUED, event="not-me", transport=name)
            self.settle(entry_id)
            return Outcome.DECLINED
        if hresult == MAPI_E_CANCEL:
            self.store.finish(entry_id, QueueState.CANCELLED, folder="Deleted Items")
            return Outcome.CANCELLED
        hint = exc.retry_after if isinstance(exc, MapiError) else None
        if hresult == MAPI_E_BUSY and hint is None:
            hint = min(30.0, self.spooler.profile.retry.floor)
        if hresult not in (MAPI_E_WAIT, MAPI_E_NETWORK_ERROR, MAPI_E_BUSY):
            log.warning("transport %s failed on %s: %s", name, entry_id.hex(), text)
        return self._retry(attempt, text, hint=hint)

    def _resend_now_exhausted(self, attempt: _Attempt, _arg: None) -> Outcome:
        return self._retry(attempt, "the transport kept asking to resend now", hint=None)

    def _recording_failed(self, attempt: _Attempt, exc: Exception) -> Outcome:
        """Recording the attempt's outcome failed (the store raised): treated as a crash
        at that point, never as delivered. Every recipient without a recorded outcome
        stays pending; a message whose hand-over had begun becomes uncertain (as a
        restart would make it), any other goes to the retry schedule with the error
        visible; one whose recipients all have outcomes is finished. The failure shows
        on the spooler's status row until an outcome is recorded again. If even these
        writes fail, the message is left in flight for ``Offering.repair_stranded``
        (the next send pass or flush, at the latest the next start)."""
        entry_id, name = attempt.entry.entry_id, attempt.handle.name
        log.error("could not record the outcome of %s on %s", entry_id.hex(), name, exc_info=exc)
        self.spooler.supervisor.report(RECORDING, "Recording message outcomes", exc)
        error = printable(f"could not record the outcome of the attempt: {exc}")
        for r in attempt.mine:
            if r.row_id not in attempt.failed_rows | attempt.delivered_rows:
                r.responsibility = False
        try:
            self.store.save_recipients(entry_id, attempt.mine)
        except Exception:
            log.warning("could not reset the recipients of %s", entry_id.hex(), exc_info=True)
        try:
            entry = self.store.queue_entry(entry_id, with_recipients=False)
            if entry.state is QueueState.IN_FLIGHT:
                pending = any(o is None for _row, o, _t, _s in
                              self.store.recipient_outcomes(entry_id))  # fmt: skip
                if attempt.message.handoff_begun and pending:
                    self.store.transition(
                        entry_id, QueueState.UNCERTAIN, transport=name,
                        error=f"delivery uncertain: {error}",
                    )  # fmt: skip
                    return Outcome.UNCERTAIN
                delay = self.spooler.retry_policy.delay(entry.attempts, hint=None)
                self.store.transition(
                    entry_id, QueueState.RETRY, not_before=time.time() + delay, error=error,
                    transport=name,
                )  # fmt: skip
            self.settle(entry_id)  # every recipient may have its outcome already
        except Exception:
            log.exception("could not put %s back in the queue either", entry_id.hex())
            self.spooler.offering.stranded = True
            return Outcome.FAILED
        return Outcome.RETRY

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

    # -- StatusRecips and delivered_recips --------------------------------------------

    def delivered_recips(
        self, handle: LogonHandle, message: OutboundMessage, recipients: Sequence[Recipient]
    ) -> None:
        """A transport reports recipients delivered in this attempt, whatever its end:
        record them at once (a crash after this never resends to them)."""
        attempt = self._attempts.get(message.entry_id)
        mine = {r.row_id for r in attempt.mine} if attempt is not None else None
        rows = []
        for recipient in recipients:
            if mine is not None and recipient.row_id not in mine:
                continue  # not one this transport was asked to handle
            if attempt is not None and recipient.row_id in attempt.failed_rows:
                continue  # reported failed first: that stands
            recipient.responsibility = True
            rows.append(recipient.row_id)
        if rows:
            self.store.set_recipient_outcome(
                message.entry_id, rows, "delivered", transport=handle.name
            )
        if attempt is not None:
            attempt.delivered_rows.update(rows)

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
            # The failure is the message's last error, not what an earlier try left.
            reasons = "; ".join(
                f"{r.address}: {outcomes[r.row_id][1] or 'failed'}"
                for r in recipients
                if outcomes[r.row_id][0] == "failed"
            )
            self.store.finish(entry_id, QueueState.FAILED, folder="Outbox", error=reasons or None)

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

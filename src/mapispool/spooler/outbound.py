"""Outbound: offering one queued message to one transport (SubmitMessage / EndMessage and
every outcome of spec §3.3), recording per-recipient results, NDRs and sent-items handling.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

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
    PR_SENDER_EMAIL_ADDRESS,
    MapiError,
)
from ..profile import Profile
from ..spi import OutboundMessage, Recipient
from ..store import (
    Claim,
    Outcome,
    QueueState,
    RecipientOutcome,
    StaleClaim,
    Store,
)
from .attempts import Attempt, Offered, Result, lost_claim, printable
from .bridge import BlockingBridge
from .handles import LogonHandle
from .recipient_reports import RecipientReports
from .retry import RetryPolicy
from .routing import Registration, route
from .sender_routing import by_sender, profile_patterns
from .settling import Settler, sent_folder
from .supervision import Supervisor

log = logging.getLogger("mapispool.spooler")

_T = TypeVar("_T")

#: The name under which a failure to record outcomes shows on the spooler's status row.
RECORDING = "recording"

#: How many END_RESEND_NOW answers in a row before the spooler treats it as RESEND_LATER.
MAX_RESEND_NOW = 5


class OutboundHost(Protocol):
    """What the outbound runner needs from the spooler."""

    store: Store
    profile: Profile
    bridge: BlockingBridge
    supervisor: Supervisor
    retry_policy: RetryPolicy

    def registrations(self) -> list[Registration]: ...

    def all_logged_on(self) -> bool: ...

    def queue_changed(self) -> None: ...


class OutboundRunner:
    """Offers messages to transports and settles them; one per spooler."""

    def __init__(self, spooler: OutboundHost) -> None:
        self.spooler = spooler
        self._attempts: dict[bytes, Attempt] = {}
        self.reports = RecipientReports(lambda: self.spooler.store, self._attempts)
        profile = spooler.profile
        self.settler = Settler(
            spooler.store, spooler.registrations, spooler.all_logged_on,
            profile.retry.delay_warning or 0.0,
            bounce_lifetime=profile.retry.lifetime if profile.bounce_to_sender else None,
            queue_changed=spooler.queue_changed,
        )  # fmt: skip
        #: The transports' ``senders`` lists: a message's transport order follows its sender.
        self.senders = profile_patterns(profile.transports)
        #: An error of the spooler's own (the store failed) left a message in flight or
        #: unfinished: ``Offering.repair_stranded`` puts it back.
        self.stranded = False

    @property
    def store(self) -> Store:
        return self.spooler.store

    async def _record(self, outcome: Outcome) -> QueueState | None:
        """Record one outcome (raising its error); its old state."""
        return await self.store.record_one(outcome)

    async def _transition(self, entry_id: bytes, state: QueueState, **changes: Any) -> None:
        await self._record(Outcome(entry_id, state, **changes))

    async def _set_outcome(
        self, entry_id: bytes, rows: Sequence[int], outcome: str, *, transport: str | None,
        report_text: str | None = None, token: int | None = None,
    ) -> None:  # fmt: skip
        """Record ``delivered`` or ``failed`` for some recipients of a message (fenced by
        ``token`` when it comes from an attempt)."""
        result = RecipientOutcome(tuple(rows), outcome, transport, report_text)
        await self._record(Outcome(entry_id, token=token, recipient_outcomes=[result]))

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

    async def offer(
        self, handle: LogonHandle, claim: Claim, keep_going: Callable[[], bool] | None = None
    ) -> Offered | None:
        """Offer a claimed message to ``handle`` once (with END_RESEND_NOW repeats) and
        record the result. Never raises for a transport's failure: the message stays
        safe. The claim holds everything the transport needs (no read of the store).
        Returns None, having done nothing, when ``keep_going()`` is false once the
        transport's submit slot is free (the caller releases the claim)."""
        entry = claim.entry
        props, recipients, size = claim.props, claim.recipients, entry.size
        registrations = by_sender(
            self.spooler.registrations(), props.get(PR_SENDER_EMAIL_ADDRESS), self.senders
        )
        mine = self.recipients_for(handle, recipients, entry.declined, registrations)
        entry_id = entry.entry_id
        if not mine:
            if claim.claimed_from is QueueState.PARKED:
                # Released, but nothing of it is left for the transport that held it (a
                # store written before marks stopped counting as delivery): unpark it,
                # so that it finishes or goes on to other transports instead of waiting.
                try:
                    await self._transition(entry_id, QueueState.QUEUED, event="unparked",
                                           transport=handle.name, token=claim.token)  # fmt: skip
                except StaleClaim as exc:
                    return Offered(lost_claim(entry_id, handle.name, exc))
                await self.settle(entry_id)
            else:
                await self.store.release([claim])
            return Offered(Result.NOTHING)
        flags = BEGIN_DEFERRED if claim.claimed_from is QueueState.PARKED else 0
        mine_rows = {r.row_id for r in mine}
        # MAPI: before offering, the spooler sets PR_RESPONSIBILITY false for the recipients
        # this transport should handle and true for every other one.
        for r in recipients:
            r.responsibility = r.row_id not in mine_rows
        content = claim.content
        store = self.store
        message = OutboundMessage(
            entry_id, props, recipients, size=size,
            open_content=(
                (lambda: io.BytesIO(content))
                if content is not None
                else (lambda: store.open_content(entry_id))
            ),
            on_handoff=lambda begun: self._handoff(entry_id, claim.token, begun),
            start_mark=lambda: store.mark_handoff(entry_id, claim.token, True),
            eight_bit=claim.eight_bit,
            canonical=claim.canonical,
        )  # fmt: skip
        attempt = Attempt(handle, entry, message, mine, set(), dict(props), token=claim.token)
        self._attempts[entry_id] = attempt
        try:
            outcome = await self._submit_and_end(attempt, flags, keep_going)
            if outcome is None:
                return None
            return attempt.offered(outcome)
        finally:
            self._attempts.pop(entry_id, None)
            self.spooler.queue_changed()

    def _handoff(self, entry_id: bytes, token: int, begun: bool) -> None:
        """Persist the start of a hand-over. Its end is not persisted on its own: the
        transaction that records the attempt's outcome clears the flag, so that a crash
        after the server answered but before the outcome was committed still counts as
        uncertain (the answer is lost with the process)."""
        if begun:
            self.spooler.bridge.run(lambda: self.store.mark_handoff(entry_id, token, True))

    async def _submit_and_end(
        self, attempt: Attempt, flags: int, keep_going: Callable[[], bool] | None
    ) -> Result | None:
        """Run submit/end pairs (again at once on END_RESEND_NOW, keeping the slot) and
        record the outcome after giving the slot back, so that the transport sends the
        next message meanwhile; None when ``keep_going()`` is false once the slot is free.
        Recording never raises: a store failure leaves the message retrying (never
        delivered), see ``_recording_failed``."""
        handle, message = attempt.handle, attempt.message
        assert handle.logon is not None
        logon = handle.logon
        finish: Callable[[], Awaitable[Result]] = lambda: self._recording(  # noqa: E731
            attempt, self._resend_now_exhausted, None
        )
        async with handle.submit_slot():
            if keep_going is not None and not keep_going():
                return None
            for _ in range(MAX_RESEND_NOW):
                try:
                    await logon.submit_message(message, flags)
                    answer = await logon.end_message(message)
                except Exception as exc:
                    if not isinstance(exc, MapiError):  # a transport bug must not lose
                        log.exception("transport %s failed in submit_message", handle.name)
                    finish = partial(self._recording, attempt, self._after_error, exc)
                    break
                if answer & END_RESEND_NOW:
                    try:
                        left = await self._record_attempt(attempt, marks_deliver=False)
                    except Exception as exc:
                        finish = partial(self._recording_failed, attempt, exc)
                        break
                    if left:  # again, with every recipient not delivered yet
                        message.handoff_begun = message.handoff_ended = False
                        continue
                    answer = 0  # everything was reported delivered or failed: no resend
                finish = partial(self._recording, attempt, self._after_end, answer)
                break
        return await finish()

    # -- outcomes -------------------------------------------------------------------

    async def _recording(
        self, attempt: Attempt, record: Callable[[Attempt, _T], Awaitable[Result]], arg: _T
    ) -> Result:
        """``record(attempt, arg)``, turning a failure to record into a retry."""
        try:
            outcome = await record(attempt, arg)
        except Exception as exc:
            return await self._recording_failed(attempt, exc)
        self.spooler.supervisor.ok(RECORDING)
        return outcome

    async def _record_attempt(self, attempt: Attempt, *, marks_deliver: bool) -> list[Recipient]:
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
        results = []
        if taken:
            rows = tuple(r.row_id for r in taken)
            results.append(RecipientOutcome(rows, "delivered", attempt.handle.name))
        await self._record(
            Outcome(attempt.entry.entry_id, token=attempt.token, recipients=attempt.mine,
                    recipient_outcomes=results)
        )  # fmt: skip
        return left

    async def _after_end(self, attempt: Attempt, answer: int) -> Result:
        entry_id, name = attempt.entry.entry_id, attempt.handle.name
        held = bool(answer & (END_DONT_RESEND | END_RESEND_LATER))
        if not held and await self._delivered_whole(attempt):
            attempt.finished = True
            return Result.SENT
        left = await self._record_attempt(attempt, marks_deliver=not held)
        if answer & END_DONT_RESEND and left:
            await self._transition(
                entry_id, QueueState.PARKED, parked_by=name, transport=name, token=attempt.token
            )
            attempt.handle.released.discard(entry_id)
            return Result.PARKED
        if answer & END_RESEND_LATER and left:
            delay = self.spooler.profile.retry.resend_later
            return await self._retry(attempt, "the transport will send it later", hint=delay)
        if not held and left and len(left) == len(attempt.mine):
            # The transport took none of its recipients: as if it had said MAPI_E_NOT_ME.
            await self._transition(
                entry_id, QueueState.QUEUED, event="declined", transport=name, declined=name,
                token=attempt.token,
            )  # fmt: skip
            await self.settle(entry_id)
            return Result.DECLINED
        await self._transition(
            entry_id, QueueState.QUEUED, event="handed-over", transport=name,
            declined=name if not held and left else None, token=attempt.token,
        )  # fmt: skip
        await self.settle(entry_id)
        return Result.SENT

    async def _delivered_whole(self, attempt: Attempt) -> bool:
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
        folder = sent_folder(self.store, attempt.stored_props)
        entry_id, name = attempt.entry.entry_id, attempt.handle.name
        # The outcomes are applied first and on their own (a savepoint), as on every
        # path: if finishing fails, they stay, and the message is finished later, never
        # sent again. If they fail, the finish is refused too (same message).
        rows = tuple(r.row_id for r in attempt.mine)
        result = RecipientOutcome(rows, "delivered", name)
        # One event row: "sent", naming the transport that took the message.
        finish = Outcome(
            entry_id, QueueState.SENT, token=attempt.token, recipients=attempt.mine,
            folder=folder, delete=folder is None, transport=name,
        )  # fmt: skip
        for recorded in await self.store.record(
            [Outcome(entry_id, token=attempt.token, recipient_outcomes=[result]), finish]
        ):
            recorded.check()
        return True

    async def _after_error(self, attempt: Attempt, exc: Exception) -> Result:
        """An error raised from the attempt: nothing marked in it was delivered; only
        what the transport reported through delivered_recips / status_recips counts."""
        entry_id, name = attempt.entry.entry_id, attempt.handle.name
        text = printable(str(exc) or type(exc).__name__)
        hresult = exc.hresult if isinstance(exc, MapiError) else None
        await self._record_attempt(attempt, marks_deliver=False)
        if hresult == MAPI_E_CORRUPT_DATA:
            return await self._fail_corrupt(attempt, text)
        if attempt.message.handoff_uncertain:
            await self._transition(
                entry_id, QueueState.UNCERTAIN, error=f"delivery uncertain: {text}",
                transport=name, token=attempt.token,
            )  # fmt: skip
            return Result.UNCERTAIN
        if hresult == MAPI_E_NOT_ME:
            await self._transition(
                entry_id, QueueState.QUEUED, event="not-me", transport=name, declined=name,
                token=attempt.token,
            )  # fmt: skip
            await self.settle(entry_id)
            return Result.DECLINED
        if hresult == MAPI_E_CANCEL:
            await self._transition(
                entry_id, QueueState.CANCELLED, folder="Deleted Items", token=attempt.token
            )
            return Result.CANCELLED
        hint = exc.retry_after if isinstance(exc, MapiError) else None
        if hresult == MAPI_E_BUSY and hint is None:
            hint = min(30.0, self.spooler.profile.retry.floor)
        if hresult not in (MAPI_E_WAIT, MAPI_E_NETWORK_ERROR, MAPI_E_BUSY):
            log.warning("transport %s failed on %s: %s", name, entry_id.hex(), text)
        return await self._retry(attempt, text, hint=hint)

    async def _resend_now_exhausted(self, attempt: Attempt, _arg: None) -> Result:
        return await self._retry(attempt, "the transport kept asking to resend now", hint=None)

    async def _recording_failed(self, attempt: Attempt, exc: Exception) -> Result:
        """Recording the attempt's outcome failed (the store raised): treated as a crash
        at that point, never as delivered. Every recipient without a recorded outcome
        stays pending; a message whose hand-over had begun becomes uncertain (as a
        restart would make it), any other goes to the retry schedule with the error
        visible; one whose recipients all have outcomes is finished. The failure shows
        on the spooler's status row until an outcome is recorded again. If even these
        writes fail, the message is left in flight for ``Offering.repair_stranded``
        (the next send pass or flush, at the latest the next start). A refused write
        (``StaleClaim``: another worker took the message over) is no failure: the
        attempt's result is dropped (``lost_claim``)."""
        entry_id, name = attempt.entry.entry_id, attempt.handle.name
        if isinstance(exc, StaleClaim):
            return lost_claim(entry_id, name, exc)
        log.error("could not record the outcome of %s on %s", entry_id.hex(), name, exc_info=exc)
        self.spooler.supervisor.report(RECORDING, "Recording message outcomes", exc)
        error = printable(f"could not record the outcome of the attempt: {exc}")
        for r in attempt.mine:
            if r.row_id not in attempt.failed_rows | attempt.delivered_rows:
                r.responsibility = False
        try:
            await self._record(Outcome(entry_id, token=attempt.token, recipients=attempt.mine))
        except StaleClaim as stale:
            return lost_claim(entry_id, name, stale)
        except Exception:
            log.warning("could not reset the recipients of %s", entry_id.hex(), exc_info=True)
        try:
            entry = await self.store.queue_entry(entry_id, with_recipients=False)
            if entry.state is QueueState.IN_FLIGHT:
                pending = any(o is None for _row, o, _t, _s in
                              await self.store.recipient_outcomes(entry_id))  # fmt: skip
                if attempt.message.handoff_begun and pending:
                    await self._transition(
                        entry_id, QueueState.UNCERTAIN, transport=name,
                        error=f"delivery uncertain: {error}", token=attempt.token,
                    )  # fmt: skip
                    return Result.UNCERTAIN
                delay = self.spooler.retry_policy.delay(entry.attempts, hint=None)
                await self._transition(
                    entry_id, QueueState.RETRY, not_before=time.time() + delay, error=error,
                    transport=name, token=attempt.token,
                )  # fmt: skip
            await self.settle(entry_id)  # every recipient may have its outcome already
        except StaleClaim as stale:
            return lost_claim(entry_id, name, stale)
        except Exception:
            log.exception("could not put %s back in the queue either", entry_id.hex())
            self.stranded = True
            return Result.FAILED
        return Result.RETRY

    async def _fail_corrupt(self, attempt: Attempt, error: str) -> Result:
        """The stored content failed its checksum (``store.integrity``): the read that
        would have given a transport its last bytes raised instead, so nothing complete
        was handed over, and a resend would read the same bytes. Every pending recipient
        fails (NDR) and the message ends ``failed`` with the reason as its last error.
        Nothing the transport marked in this attempt counts as delivered."""
        entry_id = attempt.entry.entry_id
        log.error("message %s was not sent: %s", entry_id.hex(), error)
        # The recipients fail under the claim, before the message leaves in_flight: once
        # queued, another worker may claim it.
        pending = [row for row, outcome, _t, _s in await self.store.recipient_outcomes(entry_id)
                   if outcome is None]  # fmt: skip
        await self._set_outcome(entry_id, pending, "failed", transport=None, report_text=error,
                                token=attempt.token)  # fmt: skip
        await self._transition(
            entry_id, QueueState.QUEUED, error=error, event="corrupt",
            transport=attempt.handle.name, token=attempt.token,
        )  # fmt: skip
        await self.settle(entry_id)
        return Result.FAILED

    async def _retry(self, attempt: Attempt, error: str, *, hint: float | None) -> Result:
        entry_id = attempt.entry.entry_id
        queue_entry = await self.store.queue_entry(entry_id, with_recipients=False)
        delay = self.spooler.retry_policy.delay(queue_entry.attempts, hint=hint)
        not_before = time.time() + delay
        if not_before >= queue_entry.expires_at:
            await self._transition(
                entry_id, QueueState.RETRY, not_before=not_before, error=error, token=attempt.token
            )
            await self.expire(entry_id, error)
            return Result.FAILED
        await self._transition(
            entry_id, QueueState.RETRY, not_before=not_before, error=error,
            transport=attempt.handle.name, token=attempt.token,
        )  # fmt: skip
        await self.settle(entry_id)
        # Every recipient may be done after all (taken before the error): then it is sent.
        entry = await self.store.queue_entry(entry_id, with_recipients=False)
        if entry.state is QueueState.SENT:
            return Result.SENT
        return Result.RETRY

    # -- StatusRecips and delivered_recips --------------------------------------------

    async def delivered_recips(
        self, handle: LogonHandle, message: OutboundMessage, recipients: Sequence[Recipient]
    ) -> None:
        """``RecipientReports.delivered``."""
        await self.reports.delivered(handle.name, message, recipients)

    async def status_recips(
        self, handle: LogonHandle, message: OutboundMessage, recipients: Sequence[Recipient]
    ) -> None:
        """``RecipientReports.failed``."""
        await self.reports.failed(handle.name, message, recipients)

    # -- settling (``settling.Settler``) -----------------------------------------------

    async def settle(self, entry_id: bytes) -> None:
        """``Settler.settle``."""
        await self.settler.settle(entry_id)

    async def expire(self, entry_id: bytes, error: str) -> None:
        """``Settler.expire``."""
        await self.settler.expire(entry_id, error)

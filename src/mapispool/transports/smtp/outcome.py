"""What one SMTP transaction means for a MAPI message: the decision table of the SPI's
per-recipient semantics (DESIGN §5), with no I/O.

* RCPT 2xx and DATA 2xx → the recipient is delivered (responsibility taken; reported
  with ``Support.delivered_recips`` when others wait, see below).
* RCPT 5xx, or MAIL/DATA 5xx → the recipient failed for good (report it, NDR follows).
* RCPT 4xx → the recipient is left for a later retry (``END_RESEND_LATER``). Under that
  answer a mark is not delivery (DESIGN §7), so the delivered ones of the same
  transaction are reported explicitly: the partial delivery of the SPI.
* 421 anywhere, MAIL 4xx, DATA 4xx → the whole message is retried later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .replies import ReplyClass, classify, format_reply, is_closing


@dataclass(frozen=True)
class Reply:
    """One server reply: its code and its text (without the code)."""

    code: int
    text: str

    @property
    def line(self) -> str:
        """``"550 5.1.1 no such user"``: the reply as one line."""
        return format_reply(self.code, self.text)

    @property
    def kind(self) -> ReplyClass:
        """The reply's class (OK, TEMPORARY, PERMANENT, ...)."""
        return classify(self.code)


@dataclass
class Transaction:
    """The replies of one MAIL/RCPT/DATA exchange, filled in as it goes.

    ``rcpt`` is parallel to the recipient list given to the transaction. ``data`` is the
    reply to the DATA command (354 expected); ``final`` the reply after the end of data.
    A field is ``None`` when the command was never sent.
    """

    mail: Reply | None = None
    rcpt: list[Reply] = field(default_factory=list)
    data: Reply | None = None
    final: Reply | None = None


class Verdict(Enum):
    """The message-level result of a transaction."""

    DONE = "done"  # every recipient decided or left for later: return normally
    RETRY = "retry"  # temporary failure of the whole message: raise MAPI_E_WAIT


@dataclass
class Outcome:
    """The decision: which recipient indexes were delivered, which failed for good (with
    the reply to report), which wait for a retry, and the whole-message verdict with the
    reply that caused a ``RETRY``."""

    verdict: Verdict
    delivered: list[int] = field(default_factory=list)
    failed: dict[int, Reply] = field(default_factory=dict)
    deferred: list[int] = field(default_factory=list)
    reason: Reply | None = None

    @property
    def resend_later(self) -> bool:
        """True when some recipients must be tried again (``END_RESEND_LATER``); then the
        ``delivered`` ones must be reported with ``Support.delivered_recips``."""
        return bool(self.deferred)


def _retry(reason: Reply) -> Outcome:
    return Outcome(Verdict.RETRY, reason=reason)


def decide(transaction: Transaction, recipients: int) -> Outcome:
    """The outcome of ``transaction`` for ``recipients`` envelope recipients.

    A reply of an unexpected class (a 3xx where 2xx belongs, a garbled code) counts as a
    temporary failure: the message stays queued rather than being lost or bounced.
    """
    everyone = list(range(recipients))
    mail = transaction.mail
    if mail is None:
        raise ValueError("a transaction without a MAIL reply has no outcome")
    if is_closing(mail.code) or mail.kind is not ReplyClass.OK:
        if mail.kind is ReplyClass.PERMANENT:
            return Outcome(Verdict.DONE, failed=dict.fromkeys(everyone, mail))
        return _retry(mail)
    outcome = Outcome(Verdict.DONE)
    accepted: list[int] = []
    for index, reply in enumerate(transaction.rcpt):
        if is_closing(reply.code):
            return _retry(reply)
        if reply.kind is ReplyClass.OK:
            accepted.append(index)
        elif reply.kind is ReplyClass.PERMANENT:
            outcome.failed[index] = reply
        else:
            outcome.deferred.append(index)
    if not accepted:
        return outcome
    data = transaction.data
    if data is None:
        raise ValueError("recipients were accepted but DATA has no reply")
    if data.code != 354:
        return _after_data(outcome, accepted, data)
    final = transaction.final
    if final is None:
        raise ValueError("DATA was accepted but the end of data has no reply")
    return _after_data(outcome, accepted, final)


def _after_data(outcome: Outcome, accepted: list[int], reply: Reply) -> Outcome:
    if reply.kind is ReplyClass.OK and not is_closing(reply.code):
        outcome.delivered = accepted
        return outcome
    if reply.kind is ReplyClass.PERMANENT:
        # A refusal of the content would refuse it for the deferred recipients too, so
        # every recipient still pending fails with it (one NDR, no pointless retries).
        for index in (*accepted, *outcome.deferred):
            outcome.failed[index] = reply
        outcome.deferred = []
        return outcome
    return _retry(reply)

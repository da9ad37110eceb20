"""What a transport reports about single recipients during an attempt (the SPI's
``Support.delivered_recips`` and ``Support.status_recips``), recorded at once and fenced
by the attempt's claim (DESIGN §9)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ..mapi import PR_NDR_DIAG_CODE, PR_REPORT_TEXT
from ..spi import OutboundMessage, Recipient
from ..store import Outcome, RecipientOutcome, Store
from .attempts import Attempt


class RecipientReports:
    """Records recipients a transport reports delivered or failed. ``attempts`` maps the
    entry id of each message being offered to its running ``Attempt``: a report about
    one of them carries that attempt's fencing token, so a worker that lost the claim
    has it refused (``StaleClaim`` raised to the transport); a report about a message
    not being offered (a parked one the transport sends later) is not fenced."""

    def __init__(self, store: Callable[[], Store], attempts: Mapping[bytes, Attempt]) -> None:
        self._store = store
        self._attempts = attempts

    async def _record(self, entry_id: bytes, result: RecipientOutcome, token: int | None) -> None:
        await self._store().record_one(Outcome(entry_id, token=token, recipient_outcomes=[result]))

    async def delivered(
        self, transport: str, message: OutboundMessage, recipients: Sequence[Recipient]
    ) -> None:
        """Recipients delivered in this attempt, whatever its end: recorded at once (a
        crash after this never resends to them)."""
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
            result = RecipientOutcome(tuple(rows), "delivered", transport)
            await self._record(message.entry_id, result, _token(attempt))
        if attempt is not None:
            attempt.delivered_rows.update(rows)

    async def failed(
        self, transport: str, message: OutboundMessage, recipients: Sequence[Recipient]
    ) -> None:
        """Recipients that failed for good: recorded with their reason, for the NDR."""
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
            result = RecipientOutcome((recipient.row_id,), "failed", transport, reason)
            await self._record(message.entry_id, result, _token(attempt))
            rows.append(recipient.row_id)
        if attempt is not None:
            attempt.failed_rows.update(rows)


def _token(attempt: Attempt | None) -> int | None:
    return attempt.token if attempt is not None else None

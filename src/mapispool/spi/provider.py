"""``TransportProvider``, ``TransportLogon`` and ``Support``: the transport SPI (DESIGN §5).

Modelled on MAPI's IXPProvider, IXPLogon and IMAPISupport, in snake_case and async. The
base classes carry the MRXP-style defaults (spec §5.2), so a minimal outbound transport
implements ``address_types`` and ``submit_message`` and nothing else.

Who calls what: only the spooler calls a logon's methods, and it serializes them: no two
calls into one logon overlap, except ``transport_notify(NOTIFY_CANCEL_MESSAGE)``, which
may arrive while another call runs, and ``submit_message``/``end_message`` pairs, which
overlap up to ``max_in_flight``. Transports call back into the spooler only through the
``Support`` object they were given.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar

from ..mapi import (
    FLUSH_DOWNLOAD,
    FLUSH_UPLOAD,
    MAPI_E_LOGON_FAILED,
    MAPI_E_NOT_ME,
    NOTIFY_BEGIN_INBOUND,
    NOTIFY_BEGIN_OUTBOUND,
    NOTIFY_END_INBOUND,
    NOTIFY_END_INBOUND_FLUSH,
    NOTIFY_END_OUTBOUND,
    NOTIFY_END_OUTBOUND_FLUSH,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    STATUS_AVAILABLE,
    STATUS_FAILURE,
    STATUS_FLUSH_QUEUES,
    STATUS_INBOUND_ENABLED,
    STATUS_INBOUND_FLUSH,
    STATUS_OFFLINE,
    STATUS_OUTBOUND_ENABLED,
    STATUS_OUTBOUND_FLUSH,
    STATUS_VALIDATE_STATE,
    STATUSROW_UPDATE,
    MapiError,
)
from .messages import InboundBatch, InboundMessage, OutboundMessage, Recipient

#: The one table that maps FlushQueues flags to the status bits a transport sets for them
#: (spec §6.1: FLUSH_UPLOAD is outbound, FLUSH_DOWNLOAD inbound). Flip it here, nowhere else.
FLUSH_FLAG_TO_STATUS_BIT: Mapping[int, int] = {
    FLUSH_UPLOAD: STATUS_OUTBOUND_FLUSH,
    FLUSH_DOWNLOAD: STATUS_INBOUND_FLUSH,
}

#: ``NOTIFY_END_*_FLUSH`` → the status bit it clears (MRXP), and BEGIN/END ↔ ENABLED bits.
END_FLUSH_CLEARS: Mapping[int, int] = {
    NOTIFY_END_OUTBOUND_FLUSH: STATUS_OUTBOUND_FLUSH,
    NOTIFY_END_INBOUND_FLUSH: STATUS_INBOUND_FLUSH,
}
ENABLE_NOTIFICATIONS: Mapping[int, tuple[int, bool]] = {
    NOTIFY_BEGIN_INBOUND: (STATUS_INBOUND_ENABLED, True),
    NOTIFY_END_INBOUND: (STATUS_INBOUND_ENABLED, False),
    NOTIFY_BEGIN_OUTBOUND: (STATUS_OUTBOUND_ENABLED, True),
    NOTIFY_END_OUTBOUND: (STATUS_OUTBOUND_ENABLED, False),
}


def flush_flags_for(bits: int) -> int:
    """The FlushQueues flags that status ``bits`` stand for (the inverse of
    ``flush_bits_for``): how the spooler reads a flush a transport's row asks for."""
    flags = 0
    for flag, bit in FLUSH_FLAG_TO_STATUS_BIT.items():
        if bits & bit:
            flags |= flag
    return flags


def flush_bits_for(flags: int) -> int:
    """The status bits that ``flags`` (FLUSH_UPLOAD / FLUSH_DOWNLOAD) ask a transport to set."""
    bits = 0
    for flag, bit in FLUSH_FLAG_TO_STATUS_BIT.items():
        if flags & flag:
            bits |= bit
    return bits


class Support(ABC):
    """IMAPISupport: what the spooler offers each logged-on transport.

    One ``Support`` per logon; the spooler creates it and passes it to
    ``TransportProvider.transport_logon``. Every method is synchronous and cheap; none
    performs network I/O, so a transport may call them from any of its coroutines.
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """The transport's profile section name (its status row's ``PR_DISPLAY_NAME``)."""

    @property
    @abstractmethod
    def settings(self) -> Mapping[str, Any]:
        """The transport's profile section, without ``provider``."""

    @property
    @abstractmethod
    def logger(self) -> logging.Logger:
        """A logger named after the transport; never log secrets through it."""

    @abstractmethod
    def modify_status_row(self, props: Mapping[int, object], flags: int = 0) -> None:
        """``ModifyStatusRow``: replace the transport's row with ``props`` (``flags`` 0) or
        merge them into it (``STATUSROW_UPDATE``). Columns the spooler computes
        (``PR_ENTRYID``, ``PR_DISPLAY_NAME``, ``PR_RESOURCE_TYPE``, ``PR_OBJECT_TYPE``) are
        kept whatever the transport passes. Every change is published to status-table
        subscribers; the spooler re-reads the row after every call it makes."""

    @abstractmethod
    def status_row(self) -> Mapping[int, object]:
        """A snapshot of the transport's current status row."""

    @abstractmethod
    def spooler_notify(self, flags: int, data: object | None = None) -> None:
        """``SpoolerNotify``: ``NOTIFY_NEWMAIL`` (inbound is waiting: the spooler will call
        ``start_message`` soon), ``NOTIFY_SENTDEFERRED`` (``data`` is the entry id of a
        message this transport deferred, or ``None`` for every message it holds at the
        moment of the call, never one it defers later: offer it again with
        ``BEGIN_DEFERRED``, in the same flush when called from ``flush_queues``),
        ``NOTIFY_READYTOSEND`` (the transport can send again), ``NOTIFY_CRITICAL_ERROR``
        (never call this transport again except to log it off),
        ``NOTIFY_CONFIG_CHANGE`` (address types changed: the spooler asks again)."""

    @abstractmethod
    def status_recips(self, message: OutboundMessage, recipients: Sequence[Recipient]) -> None:
        """``StatusRecips``: report recipients of ``message`` that failed for good.

        Each gets a non-delivery report naming it and the reason, taken from its
        ``PR_REPORT_TEXT`` (and ``PR_NDR_DIAG_CODE`` / ``PR_NDR_REASON_CODE`` if set); the
        spooler marks them responsible. Call it once per message with every failed one.
        A failure reported here stands whatever the attempt's end (answer or error).
        Raises ``MapiError`` when the store cannot record it; let that propagate (the
        attempt then fails and nothing in it counts as delivered)."""

    def delivered_recips(self, message: OutboundMessage, recipients: Sequence[Recipient]) -> None:
        """Beyond MAPI: report recipients of ``message`` that *were delivered in this
        attempt, whatever the attempt's answer*: the explicit partial delivery.

        Marking ``PR_RESPONSIBILITY`` only says "this transport handles the recipient in
        this attempt"; the attempt's end decides (``end_message`` answering 0 delivers
        every marked recipient not reported failed). When an attempt ends otherwise
        (``END_RESEND_LATER``, ``END_RESEND_NOW``, ``END_DONT_RESEND``, or an error raised
        from ``submit_message``/``end_message``), only the recipients reported here (or
        failed through ``status_recips``) get an outcome; every other one stays pending
        and is offered again. Use it when part of a message went out before the rest had
        to wait: SMTP's "RCPT 250 for Bob, 451 for Carol", or a delivery to several
        Maildirs that failed for one. The recipients are marked responsible and their
        delivery is recorded at once (durably enough that a crash never resends to
        them). Raises ``MapiError`` when the store cannot record it.

        This default, for a ``Support`` that records nothing (a test double), only marks
        them; the spooler's ``Support`` records them."""
        for recipient in recipients:
            recipient.responsibility = True

    @abstractmethod
    def has_dedupe_key(self, key: str) -> bool:
        """True when an inbound message with this dedupe key is already committed."""

    def known_dedupe_keys(self, keys: Collection[str]) -> set[str]:
        """The keys of ``keys`` already committed with an inbound message: one question
        for a whole mailbox listing instead of one ``has_dedupe_key`` per message. The
        default asks ``has_dedupe_key`` once per key; the spooler's ``Support`` asks the
        store once."""
        return {key for key in keys if self.has_dedupe_key(key)}

    def sync(self) -> None:
        """The durability barrier for inbound mail: when this returns, every message this
        logon (or any other) saved with ``InboundMessage.save_changes(sync=False)`` before
        the call is durable, against power loss too, as if saved with ``sync=True``.

        Call it once per batch, after the batch's saves and *before* the first server-side
        action for any message of it (delete, move, ``\\Seen``, POP3 DELE, Maildir
        rename or unlink): that ordering is what keeps inbound exactly-once (DESIGN §7).
        It costs one fsync when something waits for it, nothing otherwise. Raises
        ``MapiError`` when the store cannot write; then apply no server action. The
        default does nothing, which is right for a ``Support`` whose messages are always
        saved durably."""
        return None

    @abstractmethod
    def get_state(self, key: str) -> Any:
        """Durable per-transport state (JSON values) saved with ``set_state``, or None."""

    @abstractmethod
    def set_state(self, key: str, value: Any) -> None:
        """Save a JSON-serialisable value that survives restarts (e.g. a UIDVALIDITY)."""


class TransportLogon(ABC):  # noqa: B024 - every method has a default; subclass it
    """IXPLogon: one logged-on transport, driven by the spooler.

    Class attributes the spooler reads once, right after ``transport_logon``:
    ``logon_flags`` (``LOGON_SP_POLL``: call ``poll`` every ``poll_interval`` seconds;
    ``LOGON_SP_IDLE``: call ``idle`` when nothing else happens), ``resource_methods``
    (``PR_RESOURCE_METHODS`` of the row), ``resources`` (names of exclusive external
    resources held from ``flush_queues`` to the end of the flush; two transports that
    share one never flush at the same time) and ``max_in_flight`` (how many
    submit/end pairs may overlap).
    """

    logon_flags: int = 0
    resource_methods: int = STATUS_VALIDATE_STATE | STATUS_FLUSH_QUEUES
    resources: frozenset[str] = frozenset()
    max_in_flight: int = 1

    def __init__(self, support: Support) -> None:
        self.support = support

    # -- identity and routing -------------------------------------------------------

    def address_types(self) -> Sequence[str]:
        """``AddressTypes``: recipient address types this transport sends to, matched
        exactly against ``Recipient.addrtype`` (``["*"]`` takes every type; ``[]`` sends
        nothing: an inbound-only transport). Called after logon and after
        ``NOTIFY_CONFIG_CHANGE``. Default: none."""
        return ()

    @property
    def receives(self) -> bool:
        """True when this logon delivers inbound mail. Read once after logon: only a
        receiving transport gets ``NOTIFY_BEGIN_INBOUND`` (so only its row claims
        ``STATUS_INBOUND_ENABLED``), and only a transport with address types gets
        ``NOTIFY_BEGIN_OUTBOUND``. Default: True when the class overrides
        ``start_message`` or ``start_messages``; override it when receiving depends on
        the settings (a maildir section without ``path`` only sends)."""
        cls = type(self)
        return (
            cls.start_message is not TransportLogon.start_message
            or cls.start_messages is not TransportLogon.start_messages
        )

    # -- notifications ----------------------------------------------------------------

    async def transport_notify(self, flags: int, data: object | None = None) -> None:
        """``TransportNotify``. Default (MRXP): BEGIN/END_INBOUND and BEGIN/END_OUTBOUND
        set or clear the ENABLED bits; ``NOTIFY_END_OUTBOUND_FLUSH`` and
        ``NOTIFY_END_INBOUND_FLUSH`` clear the matching FLUSH bit. ``data`` carries the
        entry id for ``NOTIFY_ABORT_DEFERRED`` / ``NOTIFY_CANCEL_MESSAGE``; the default
        ignores both. The spooler takes back a message this transport holds
        (``END_DONT_RESEND``) with ``NOTIFY_ABORT_DEFERRED`` at logoff or shutdown (the
        message goes back to the queue unsent), and with ``NOTIFY_ABORT_DEFERRED |
        NOTIFY_CANCEL_MESSAGE`` before a person holds, purges or cancels it: forget it.
        May be called concurrently with another call only for
        ``NOTIFY_CANCEL_MESSAGE``."""
        set_bits = clear_bits = 0
        for flag, (bit, enable) in ENABLE_NOTIFICATIONS.items():
            if flags & flag:
                if enable:
                    set_bits |= bit
                else:
                    clear_bits |= bit
        for flag, bit in END_FLUSH_CLEARS.items():
            if flags & flag:
                clear_bits |= bit
        if set_bits or clear_bits:
            self.update_status(set_bits=set_bits, clear_bits=clear_bits)

    # -- outbound ---------------------------------------------------------------------

    async def submit_message(self, message: OutboundMessage, flags: int) -> None:
        """``SubmitMessage``: handle ``message`` for the recipients whose responsibility is
        false and that this transport can reach; set ``responsibility = True`` on each one
        it handles (report failures with ``support.status_recips``). Recipients left
        unmarked are offered to the next transport that can reach them.
        ``flags`` is ``BEGIN_DEFERRED`` when the message is one this transport deferred
        earlier. Return normally for S_OK (``end_message`` follows), or raise
        ``MapiError``: ``MAPI_E_WAIT`` / ``MAPI_E_NETWORK_ERROR`` with ``retry_after``
        (retry later), ``MAPI_E_NOT_ME`` (offer it elsewhere; no ``end_message``),
        ``MAPI_E_BUSY`` (retry later; no ``end_message``), ``MAPI_E_CANCEL`` (do not
        resend). Anything else leaves the message safely queued with the error recorded.
        Default: ``MAPI_E_NOT_ME``.

        The fate of the message (DESIGN §7) follows how the attempt ends, never the marks
        alone: marking means "handled in this attempt", not "delivered". ``end_message``
        answering 0 delivers every marked recipient not reported failed. Any error raised
        here (``MAPI_E_WAIT``, ``MAPI_E_NETWORK_ERROR``, ``MAPI_E_BUSY``, any other)
        means nothing was delivered by this attempt, whatever was marked, except the
        recipients reported with ``support.delivered_recips`` or ``status_recips``."""
        raise MapiError(MAPI_E_NOT_ME, "this transport sends nothing")

    async def end_message(self, message: OutboundMessage) -> int:
        """``EndMessage``: called once after a ``submit_message`` that returned normally.
        The answer decides what the attempt delivered:

        - 0: every recipient marked responsible (and not reported failed) is delivered;
          unmarked ones go to the next capable transport.
        - ``END_RESEND_NOW``: nothing marked is delivered; the message is offered again at
          once with every recipient not yet delivered (their marks reset).
        - ``END_RESEND_LATER``: nothing marked is delivered; the message waits in the retry
          schedule and is never moved to Sent Items meanwhile.
        - ``END_DONT_RESEND``: the transport holds the message; it stays parked, unsent,
          its recipients pending for this transport, until
          ``spooler_notify(NOTIFY_SENTDEFERRED)``; then it is submitted again here with
          ``BEGIN_DEFERRED``. At logoff the spooler takes it back with
          ``transport_notify(NOTIFY_ABORT_DEFERRED, entry_id)``, and before a hold, purge
          or cancel with ``NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE``.

        With any non-zero answer only recipients reported through
        ``support.delivered_recips`` (delivered) or ``status_recips`` (failed) get an
        outcome. An error raised here counts as an error of the attempt (nothing marked
        is delivered). Default: 0."""
        return 0

    # -- inbound ----------------------------------------------------------------------

    async def poll(self) -> int:
        """``Poll``: a positive number when inbound messages wait. Called every
        ``poll_interval`` seconds, only with ``LOGON_SP_POLL``. Default: 0."""
        return 0

    async def start_message(self, message: InboundMessage) -> None:
        """``StartMessage``: fill ``message`` with one received message and call
        ``message.save_changes()``; return without saving when nothing is waiting.
        Commit locally before deleting or flagging anything on a server: either with
        ``save_changes()`` (durable when it returns), or with ``save_changes(sync=False)``
        and then ``self.support.sync()`` before the first server action that concerns
        the message. Default: nothing to deliver."""
        return None

    async def start_messages(self, batch: InboundBatch) -> None:
        """``StartMessage`` for a batch: the spooler's inbound loop calls this (not
        ``start_message``) while the transport keeps delivering.

        Fill one message from ``batch.new_message()`` per received message and commit
        them all in one store transaction with ``await batch.save(sync=False)``, then
        call ``self.support.sync()`` before the first server action (delete, move,
        ``\\Seen``, DELE) that concerns any of them. Return without saving anything when
        nothing is waiting: that ends the inbound loop. A transport that downloads in
        batches should override this (one transaction per batch instead of one per
        message); the loop checks whether to go on after each call, so keep a batch to
        what one server round trip brings.

        Default: one ``start_message`` call with ``batch.new_message()``, so a transport
        that implements only ``start_message`` works unchanged, one message per call."""
        await self.start_message(batch.new_message())

    # -- flushing and state -----------------------------------------------------------

    async def flush_queues(self, flags: int) -> None:
        """``IXPLogon::FlushQueues``: the spooler is about to flush this transport.
        Called once with every flag of the request. Release deferred messages
        (``spooler_notify(NOTIFY_SENTDEFERRED)``), take external resources, and set the
        FLUSH bits to ask for ``submit_message`` / ``start_message`` calls. Default (MRXP):
        set ``STATUS_OUTBOUND_FLUSH`` for ``FLUSH_UPLOAD`` and ``STATUS_INBOUND_FLUSH`` for
        ``FLUSH_DOWNLOAD``."""
        bits = flush_bits_for(flags)
        if bits:
            self.update_status(set_bits=bits)

    async def validate_state(self, flags: int) -> None:
        """``ValidateState``: check the connection and set ``STATUS_AVAILABLE``,
        ``STATUS_OFFLINE`` or ``STATUS_FAILURE`` (with a ``PR_STATUS_STRING``). Never take
        shared resources here. Default: nothing to check."""
        return None

    async def idle(self) -> None:
        """``Idle``: low-priority background work; only with ``LOGON_SP_IDLE``."""
        return None

    async def logoff(self, flags: int) -> None:
        """``TransportLogoff``: close connections and free everything. Always accepted;
        any error still counts as logged off."""
        return None

    # -- helpers for implementations --------------------------------------------------

    def update_status(
        self, *, set_bits: int = 0, clear_bits: int = 0, text: str | None = None
    ) -> None:
        """Merge a change of ``PR_STATUS_CODE`` bits (and optionally the status string)
        into this logon's row with ``STATUSROW_UPDATE``."""
        code = self.status_code
        props: dict[int, object] = {PR_STATUS_CODE: (code | set_bits) & ~clear_bits}
        if text is not None:
            props[PR_STATUS_STRING] = text
        self.support.modify_status_row(props, STATUSROW_UPDATE)

    def report_health(
        self,
        error: MapiError | None,
        *,
        connected_text: str = "Available",
        also_clear: int = 0,
    ) -> None:
        """Set the row's health after a connection check or a failed pass:
        ``STATUS_AVAILABLE`` with ``connected_text`` when ``error`` is None;
        ``STATUS_FAILURE`` for ``MAPI_E_LOGON_FAILED`` (the settings need fixing);
        ``STATUS_OFFLINE`` for anything else (unreachable: it may come back by itself).
        The error's text goes into ``PR_STATUS_STRING``; ``also_clear`` names more bits to
        clear at the same time (e.g. the ACTIVE and FLUSH bits of a pass that failed)."""
        health = STATUS_AVAILABLE | STATUS_OFFLINE | STATUS_FAILURE
        if error is None:
            bit, text = STATUS_AVAILABLE, connected_text
        else:
            bit = STATUS_FAILURE if error.hresult == MAPI_E_LOGON_FAILED else STATUS_OFFLINE
            text = f"Last error: {error}"
        self.update_status(set_bits=bit, clear_bits=(health & ~bit) | also_clear, text=text)

    @property
    def status_code(self) -> int:
        """The current ``PR_STATUS_CODE`` of this logon's row."""
        value = self.support.status_row().get(PR_STATUS_CODE, 0)
        return value if isinstance(value, int) else 0


class TransportProvider(ABC):  # noqa: B024 - transport_logon has a default via logon_class
    """IXPProvider: one per transport section of the profile.

    ``name`` is the section name, ``settings`` the section's keys (without ``provider``).
    The default ``transport_logon`` returns ``logon_class(support)``, so a provider can be
    as short as ``class P(TransportProvider): logon_class = MyLogon``.
    """

    logon_class: ClassVar[type[TransportLogon] | None] = None

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        self.name = name
        self.settings = settings

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Validate a profile section before any logon; raise ``ValueError`` naming the
        key and the fix. Called when the profile is loaded. Default: accept anything."""
        return None

    async def transport_logon(self, support: Support, flags: int) -> TransportLogon:
        """``TransportLogon``: log on and return the logon object. ``flags`` carry the
        spooler's ``LOGON_NO_*`` requests (inbound and outbound are enabled afterwards with
        ``transport_notify(NOTIFY_BEGIN_INBOUND | NOTIFY_BEGIN_OUTBOUND)``). Raise
        ``MapiError(MAPI_E_LOGON_FAILED / MAPI_E_FAILONEPROVIDER, ...)`` on failure."""
        if self.logon_class is None:
            raise NotImplementedError(
                f"{type(self).__name__} must set logon_class or override transport_logon()"
            )
        return self.logon_class(support)

    async def shutdown(self) -> None:
        """``Shutdown``: every logon of this provider has been logged off."""
        return None

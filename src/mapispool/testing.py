"""Public helpers for tests, ours and users': a transport that records every SPI call it
receives and can be scripted per message or per call.

    journal = Journal()
    script = TransportScript(journal=journal)
    script.on("Hello", Defer())                       # END_DONT_RESEND, released next flush
    profile = Profile.from_dict({"transports": {"a": {"provider": "recording", "script": script}}})

Messages are matched by subject. Without a scripted action a message is taken: every
pending recipient becomes responsible and ``end_message`` answers 0.

``TransportScript.marking`` chooses how the transport sets ``PR_RESPONSIBILITY``: the way
MAPI's sample transport does (``"mrxp"``: every handled recipient first, then act) or only
for recipients taken for good (``"on_success"``). A well-behaved spooler gives both the
same fate for every scripted action.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .mapi import (
    BEGIN_DEFERRED,
    END_DONT_RESEND,
    END_RESEND_LATER,
    END_RESEND_NOW,
    FLUSH_DOWNLOAD,
    FLUSH_UPLOAD,
    LOGON_SP_POLL,
    MAPI_E_NOT_ME,
    NOTIFY_END_OUTBOUND_FLUSH,
    NOTIFY_NEWMAIL,
    NOTIFY_SENTDEFERRED,
    PR_REPORT_TEXT,
    PR_SUBJECT,
    STATUS_FLUSH_QUEUES,
    STATUS_INBOUND_FLUSH,
    STATUS_OFFLINE,
    STATUS_OUTBOUND_FLUSH,
    STATUS_VALIDATE_STATE,
    MapiError,
)
from .spi import InboundMessage, OutboundMessage, Support, TransportLogon, TransportProvider


@dataclass(frozen=True)
class Call:
    """One SPI call a recording transport received."""

    transport: str
    method: str
    flags: int | None = None
    subject: str | None = None
    data: object | None = None
    at: float = field(default_factory=time.monotonic, compare=False)

    def __str__(self) -> str:
        parts = [f"{self.transport}.{self.method}"]
        if self.flags is not None:
            parts.append(f"0x{self.flags:X}")
        if self.subject is not None:
            parts.append(repr(self.subject))
        return " ".join(parts)


class Journal:
    """Every call of every recording transport that shares it, in the order received."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def record(self, call: Call) -> None:
        self.calls.append(call)

    def of(self, transport: str | None = None, *methods: str) -> list[Call]:
        """The calls into ``transport`` (all when None), optionally only these methods."""
        return [
            c
            for c in self.calls
            if (transport is None or c.transport == transport)
            and (not methods or c.method in methods)
        ]

    def trace(self, transport: str | None = None, *methods: str) -> list[str]:
        """The calls as short strings, e.g. ``"a.flush_queues 0x6"``."""
        return [str(c) for c in self.of(transport, *methods)]

    def clear(self) -> None:
        self.calls.clear()


# -- scripted actions -------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """Base class of what a scripted transport does with one submitted message."""


@dataclass(frozen=True)
class Defer(Action):
    """Answer END_DONT_RESEND; release it with NOTIFY_SENTDEFERRED at the next
    ``flush_queues`` (step 2 of the seed) unless ``release_on_flush`` is false."""

    release_on_flush: bool = True


@dataclass(frozen=True)
class ResendNow(Action):
    """Answer END_RESEND_NOW (then, on the next call, send normally)."""


@dataclass(frozen=True)
class ResendLater(Action):
    """Deliver nothing and answer END_RESEND_LATER (in the ``"mrxp"`` marking the
    recipients are marked all the same: that is not delivery)."""


@dataclass(frozen=True)
class Take(Action):
    """Handle only these addresses (mark them and send them); leave every other pending
    recipient untouched, for the next transport that can reach it. Answers 0."""

    addresses: tuple[str, ...]


@dataclass(frozen=True)
class DeliverSome(Action):
    """Report these addresses delivered with ``Support.delivered_recips`` (the explicit
    partial delivery of DESIGN §5), then do ``then``: by default answer END_RESEND_LATER;
    ``Raise(...)`` fails the attempt after the partial delivery, as the maildir transport
    does when one Maildir of several is full."""

    addresses: tuple[str, ...]
    then: Action = ResendLater()


@dataclass(frozen=True)
class Raise(Action):
    """Raise ``MapiError(hresult, retry_after=...)`` from ``submit_message``."""

    hresult: int
    retry_after: float | None = None
    message: str = "scripted failure"


@dataclass(frozen=True)
class NotMe(Action):
    """Raise MAPI_E_NOT_ME: not this transport's message."""


@dataclass(frozen=True)
class Refuse(Action):
    """Report these addresses failed (``status_recips``) with ``reason``; take the rest."""

    addresses: tuple[str, ...]
    reason: str = "550 5.1.1 recipient refused"


@dataclass(frozen=True)
class Meanwhile(Action):
    """Inside ``submit_message``, await ``hook(entry_id)`` before acting, then do ``then``
    (None: take the message): what happens elsewhere while the transport holds the
    message, e.g. another worker taking over its claim."""

    hook: Callable[[bytes], Awaitable[None]]
    then: Action | None = None


@dataclass
class TransportScript:
    """How one recording transport behaves.

    ``style``: ``"mrxp"`` sets both FLUSH bits in ``flush_queues`` (the MRXP sample);
    ``"seed"`` sets STATUS_INBOUND_FLUSH only after NOTIFY_END_OUTBOUND_FLUSH (step 9).
    ``stop_outbound_after`` / ``stop_inbound_after``: clear the FLUSH bit after that many
    messages (a transport ending the flush early). ``inbound``: messages to deliver.
    ``submit_delay``: seconds each ``submit_message`` takes. ``stay_offline``: after
    ``logon.go_offline()``, ``validate_state`` does not bring the transport back.

    ``marking`` is how the transport sets ``PR_RESPONSIBILITY`` (DESIGN §7: marking is
    never delivery; the attempt's end decides):

    - ``"on_success"`` (the default): marks a recipient only when it takes it for good, so
      a deferring, resending or failing attempt leaves every recipient unmarked;
    - ``"mrxp"``: the way MAPI's sample transport is written: ``submit_message`` first marks
      every recipient it handles, then acts (defers, asks for a resend, raises or takes).
    """

    journal: Journal = field(default_factory=Journal)
    style: str = "mrxp"
    marking: str = "on_success"
    address_types: Sequence[str] = ("SMTP",)
    resources: frozenset[str] = frozenset()
    resource_methods: int = STATUS_VALIDATE_STATE | STATUS_FLUSH_QUEUES
    max_in_flight: int = 1
    poll: bool = False
    stop_outbound_after: int | None = None
    stop_inbound_after: int | None = None
    submit_delay: float = 0.0
    stay_offline: bool = False
    actions: dict[str, deque[Action]] = field(default_factory=dict)
    inbound: deque[bytes] = field(default_factory=deque)
    sent: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    deferred: list[bytes] = field(default_factory=list)
    failures: dict[str, deque[MapiError]] = field(default_factory=dict)
    logon: RecordingLogon | None = None

    def fail_next(self, method: str, error: MapiError) -> TransportScript:
        """Make the next call of ``method`` (e.g. ``"flush_queues"``, ``"poll"``,
        ``"start_message"``, ``"end_message"``) raise ``error`` (per-call scripting)."""
        self.failures.setdefault(method, deque()).append(error)
        return self

    def announce_newmail(self) -> None:
        """Tell the spooler, as a transport does, that inbound mail waits (NOTIFY_NEWMAIL)."""
        assert self.logon is not None
        self.logon.support.spooler_notify(NOTIFY_NEWMAIL)

    def on(self, subject: str, *actions: Action) -> TransportScript:
        """Queue ``actions`` for the messages with this subject, one per submit."""
        self.actions.setdefault(subject, deque()).extend(actions)
        return self

    def deliver(self, count: int, *, prefix: str = "inbound") -> None:
        """Make ``count`` inbound messages wait for this transport."""
        for _ in range(count):
            n = next(_serial)
            self.inbound.append(
                f"From: x@example.test\r\nTo: me@example.test\r\nSubject: {prefix} {n}\r\n"
                f"Message-ID: <{prefix}.{n}@example.test>\r\n\r\nbody {n}\r\n".encode()
            )

    def release_deferred(self, entry_id: bytes | None = None) -> None:
        """Tell the spooler now (outside a flush) that deferred messages may be resubmitted."""
        assert self.logon is not None
        self.logon.support.spooler_notify(NOTIFY_SENTDEFERRED, entry_id)


_serial = itertools.count(1)


class RecordingLogon(TransportLogon):
    """A transport logon that records each call in its script's journal and obeys it."""

    def __init__(self, support: Support, script: TransportScript) -> None:
        super().__init__(support)
        self.script = script
        self.name = support.name
        self.logon_flags = LOGON_SP_POLL if script.poll else 0
        self.resource_methods = script.resource_methods
        self.resources = frozenset(script.resources)
        self.max_in_flight = script.max_in_flight
        self._end_answers: dict[bytes, int] = {}
        self._flush_flags = 0
        self._submitted = 0
        self._received = 0
        self._release_at_flush: list[bytes] = []
        script.logon = self

    def _record(self, method: str, flags: int | None = None, subject: str | None = None,
                data: object | None = None) -> None:  # fmt: skip
        self.script.journal.record(Call(self.name, method, flags, subject, data))
        scripted = self.script.failures.get(method)
        if scripted:
            raise scripted.popleft()

    def address_types(self) -> Sequence[str]:
        self._record("address_types")
        return tuple(self.script.address_types)

    async def transport_notify(self, flags: int, data: object | None = None) -> None:
        self._record("transport_notify", flags, data=data)
        await super().transport_notify(flags, data)
        seed_style = self.script.style == "seed"
        if seed_style and flags & NOTIFY_END_OUTBOUND_FLUSH and self._flush_flags & FLUSH_DOWNLOAD:
            self.update_status(set_bits=STATUS_INBOUND_FLUSH)

    async def flush_queues(self, flags: int) -> None:
        self._record("flush_queues", flags)
        self._flush_flags = flags
        self._submitted = self._received = 0
        for entry_id in self._release_at_flush:
            self.support.spooler_notify(NOTIFY_SENTDEFERRED, entry_id)
        self._release_at_flush.clear()
        if self.script.style == "seed":
            if flags & FLUSH_UPLOAD:
                self.update_status(set_bits=STATUS_OUTBOUND_FLUSH)
        else:
            await super().flush_queues(flags)

    async def submit_message(self, message: OutboundMessage, flags: int) -> None:
        subject = str(message.props.get(PR_SUBJECT, ""))
        self._record("submit_message", flags, subject, message.entry_id)
        if self.script.submit_delay:
            await asyncio.sleep(self.script.submit_delay)
        queue = self.script.actions.get(subject)
        action = queue.popleft() if queue else None
        if isinstance(action, Meanwhile):
            await action.hook(message.entry_id)
            action = action.then
        answer = 0
        handled = message.pending_recipients()
        if isinstance(action, Take):
            handled = [r for r in handled if r.address in action.addresses]
        if self.script.marking == "mrxp":
            # MRXP: every recipient this transport handles is marked before it acts.
            for recipient in handled:
                recipient.responsibility = True
        if isinstance(action, DeliverSome):
            delivered = [r for r in handled if r.address in action.addresses]
            self.support.delivered_recips(message, delivered)
            self.script.sent.append((subject, tuple(r.address for r in delivered)))
            handled = [r for r in handled if r.address not in action.addresses]
            action = action.then
        if isinstance(action, NotMe):
            raise MapiError(MAPI_E_NOT_ME, "scripted: not mine")
        if isinstance(action, Raise):
            raise MapiError(action.hresult, action.message, retry_after=action.retry_after)
        if isinstance(action, Defer) and not flags & BEGIN_DEFERRED:
            answer = END_DONT_RESEND
            self.script.deferred.append(message.entry_id)
            if action.release_on_flush:
                self._release_at_flush.append(message.entry_id)
        elif isinstance(action, ResendLater):
            answer = END_RESEND_LATER
        elif isinstance(action, ResendNow):
            answer = END_RESEND_NOW
        else:
            refused = action.addresses if isinstance(action, Refuse) else ()
            failed = []
            taken = []
            for recipient in handled:
                if recipient.address in refused:
                    assert isinstance(action, Refuse)
                    recipient.props[PR_REPORT_TEXT] = action.reason
                    failed.append(recipient)
                else:
                    recipient.responsibility = True
                    taken.append(recipient.address)
            if failed:
                self.support.status_recips(message, failed)
            self.script.sent.append((subject, tuple(taken)))
        self._end_answers[message.entry_id] = answer

    async def end_message(self, message: OutboundMessage) -> int:
        subject = str(message.props.get(PR_SUBJECT, ""))
        self._record("end_message", None, subject, message.entry_id)
        self._submitted += 1
        limit = self.script.stop_outbound_after
        if limit is not None and self._submitted >= limit:
            self.update_status(clear_bits=STATUS_OUTBOUND_FLUSH)
        return self._end_answers.pop(message.entry_id, 0)

    async def poll(self) -> int:
        self._record("poll")
        return len(self.script.inbound)

    async def start_message(self, message: InboundMessage) -> None:
        self._record("start_message")
        if not self.script.inbound:
            return
        content = self.script.inbound.popleft()
        message.set_content(content)
        message.dedupe_key = f"recording:{self.name}:{hash(content)}:{next(_serial)}"
        message.save_changes()
        self._received += 1
        limit = self.script.stop_inbound_after
        if limit is not None and self._received >= limit:
            self.update_status(clear_bits=STATUS_INBOUND_FLUSH)

    async def validate_state(self, flags: int) -> None:
        self._record("validate_state", flags)
        if not self.script.stay_offline:
            self.update_status(clear_bits=STATUS_OFFLINE)

    def go_offline(self) -> None:
        """Set STATUS_OFFLINE, as a transport does after losing its server."""
        self.update_status(set_bits=STATUS_OFFLINE)

    async def logoff(self, flags: int) -> None:
        self._record("logoff", flags)


_SCRIPTS: dict[str, TransportScript] = {}


def register_script(name: str, script: TransportScript) -> None:
    """Make ``script`` available to profiles as ``script = "name"`` (for TOML profiles)."""
    _SCRIPTS[name] = script


class RecordingTransport(TransportProvider):
    """Provider ``recording``: setting ``script`` is a ``TransportScript`` or the name of
    one given to ``register_script``; without it the transport takes every message."""

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        super().__init__(name, settings)
        script = settings.get("script")
        if isinstance(script, str):
            script = _SCRIPTS[script]
        self.script: TransportScript = script if script is not None else TransportScript()

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        script = settings.get("script")
        if isinstance(script, str) and script not in _SCRIPTS:
            raise ValueError(f"no script registered as {script!r}; call register_script first")
        if script is not None and not isinstance(script, str | TransportScript):
            raise ValueError("script must be a TransportScript or a registered name")

    async def transport_logon(self, support: Support, flags: int) -> TransportLogon:
        self.script.journal.record(Call(self.name, "transport_logon", flags))
        return RecordingLogon(support, self.script)

    async def shutdown(self) -> None:
        self.script.journal.record(Call(self.name, "shutdown"))


__all__ = [
    "Action",
    "Call",
    "Defer",
    "DeliverSome",
    "Journal",
    "Meanwhile",
    "NotMe",
    "Raise",
    "RecordingLogon",
    "RecordingTransport",
    "Refuse",
    "ResendLater",
    "ResendNow",
    "Take",
    "TransportScript",
    "register_script",
]

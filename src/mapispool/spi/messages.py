"""The message objects the spooler hands to transports: ``Recipient``, ``OutboundMessage``,
``InboundMessage`` (the SPI's ``LPMESSAGE`` for ``SubmitMessage`` and ``StartMessage``)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from email.message import EmailMessage
from typing import IO, Any

from ..mapi import MAPI_E_INVALID_PARAMETER, PR_SENDER_EMAIL_ADDRESS, MapiError
from ..store.model import Recipient

__all__ = ["ContentOpener", "InboundBatch", "InboundMessage", "OutboundMessage", "Recipient"]

ContentOpener = Callable[[], IO[bytes]]


class OutboundMessage:
    """A queued message offered to ``TransportLogon.submit_message``.

    Valid from ``submit_message`` until ``end_message`` returns. ``recipients`` are all of
    the message's recipients; those this transport should handle have
    ``responsibility == False`` (the spooler sets it ``True`` on the others, as MAPI does).
    ``props`` is mutable; ``content`` is the RFC 5322 form, loaded on first use;
    ``open_content()`` streams it instead (use it for large messages).
    ``reference`` is the transport's message reference (``*lpulMsgRef``), free to set.

    ``canonical`` is true when the content was stored in canonical form at submit: every
    line ends with CRLF, there is no Bcc or Resent-Bcc field, and ``eight_bit`` says
    exactly whether a byte is above 127. A transport may then send the bytes as they are
    (SMTP still dot-stuffs them and folds lines over 998 characters on the wire). When it
    is false (a message stored by an older version), the content may have bare LF line
    ends or a Bcc field, and ``eight_bit`` is not known (False).
    """

    def __init__(
        self,
        entry_id: bytes,
        props: MutableMapping[int, Any],
        recipients: list[Recipient],
        *,
        size: int,
        open_content: ContentOpener,
        on_handoff: Callable[[bool], None] | None = None,
        start_mark: Callable[[], Awaitable[None]] | None = None,
        eight_bit: bool = False,
        canonical: bool = False,
    ) -> None:
        self.entry_id = entry_id
        self.eight_bit = eight_bit
        self.canonical = canonical
        self.props = props
        self.recipients = recipients
        self.size = size
        self.reference: object = 0
        self._open_content = open_content
        self._content: bytes | None = None
        self._on_handoff = on_handoff
        self._start_mark = start_mark
        #: ``start_handoff``'s record is durable and not used by a ``begin_handoff`` yet.
        self._marked = False
        self.handoff_begun = False
        self.handoff_ended = False

    @property
    def content(self) -> bytes:
        """The whole RFC 5322 message: CRLF line ends when ``canonical``, else as it was
        stored."""
        if self._content is None:
            with self._open_content() as stream:
                self._content = stream.read()
        return self._content

    def open_content(self) -> IO[bytes]:
        """A fresh binary stream over the message's RFC 5322 bytes; the caller closes it."""
        return self._open_content()

    def as_email(self) -> EmailMessage:
        """The content parsed with ``email.policy.default``."""
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def sender(self) -> str:
        """The envelope sender (``PR_SENDER_EMAIL_ADDRESS``), or ``""`` for the null sender."""
        return str(self.props.get(PR_SENDER_EMAIL_ADDRESS, ""))

    def pending_recipients(self) -> list[Recipient]:
        """The recipients this transport is being asked to handle (responsibility false)."""
        return [r for r in self.recipients if not r.responsibility]

    def begin_handoff(self) -> None:
        """Record, durably, that the message is about to pass the point of no return.

        A transport calls this right before an irreversible hand-over (for SMTP: before
        the final ``.`` of DATA). If the process dies after this call and before
        ``end_message``, the spooler marks the message *uncertain* on restart instead of
        sending it again (DESIGN §7). Calling it is optional and idempotent.
        """
        if not self.handoff_begun:
            self.handoff_begun = True
            marked, self._marked = self._marked, False
            if self._on_handoff is not None and not marked:
                self._on_handoff(True)

    def start_handoff(self) -> Callable[[], Awaitable[None]]:
        """Write the durable record of ``begin_handoff`` ahead of time, without blocking
        the event loop, for a transport that can overlap it with its own round trips
        (SMTP: while the server answers MAIL, RCPT and DATA). Returns ``ready``: an
        awaitable function that returns once the record is durable (or raises why it
        could not be made). A transport that wants the hand-over awaits ``ready()`` and
        then calls ``begin_handoff`` as usual, which no longer waits for the store. One
        that does not take the step after all still awaits ``ready()`` (so that the
        record lands before the attempt's outcome) and calls nothing else: the in-memory
        hand-over never began, and the spooler clears the record with the outcome.
        Without a spooler hook (a message built by hand) ``ready`` does nothing and
        ``begin_handoff`` records the hand-over itself."""
        self._marked = False
        if self._start_mark is None or self.handoff_uncertain:
            return _nothing
        task = asyncio.ensure_future(self._start_mark())

        async def ready() -> None:
            await asyncio.shield(task)
            self._marked = True

        return ready

    def end_handoff(self) -> None:
        """Record that the receiving side answered after ``begin_handoff`` (with any reply).

        From then on the outcome is known again: an error raised afterwards makes the
        spooler retry or fail the message as usual. An error raised between
        ``begin_handoff`` and ``end_handoff`` makes the message *uncertain*: reported,
        never silently resent.
        """
        if self.handoff_begun and not self.handoff_ended:
            self.handoff_ended = True
            if self._on_handoff is not None:
                self._on_handoff(False)

    @property
    def handoff_uncertain(self) -> bool:
        """True between ``begin_handoff`` and ``end_handoff``."""
        return self.handoff_begun and not self.handoff_ended

    def __repr__(self) -> str:
        return f"<OutboundMessage {self.entry_id.hex()} {len(self.recipients)} recipients>"


async def _nothing() -> None:
    return None


SaveCallback = Callable[["InboundMessage"], "bytes | None"]


class InboundMessage:
    """A new message in the receive folder, handed to ``TransportLogon.start_message``.

    The transport fills it (``set_content``, ``props``, ``dedupe_key``) and commits it with
    ``save_changes()``. Dedupe keys are global to the store, so make them unique across
    accounts (e.g. ``imap:<user@host>/<folder>:<uidvalidity>:<uid>``). Returning from
    ``start_message`` without saving means "nothing (more) to deliver" and ends the inbound
    loop (spec §6.2).

    Durability (DESIGN §7, exactly-once): ``save_changes()`` returns once the message is
    durable, even against power loss, so the transport may then delete, move or flag the
    server copy. A transport that downloads in batches may instead call
    ``save_changes(sync=False)`` for each message and ``Support.sync()`` once, *before* it
    changes anything on the server for any of them; see ``save_changes``.

    ``save`` commits durably; ``save_unsynced``, if given, is what
    ``save_changes(sync=False)`` uses (without it, every save is durable).
    """

    def __init__(
        self,
        save: SaveCallback,
        is_known: Callable[[str], bool],
        *,
        save_unsynced: SaveCallback | None = None,
    ) -> None:
        self.props: dict[int, Any] = {}
        self.dedupe_key: str | None = None
        self.reference: object = 1
        self.entry_id: bytes | None = None
        self.saved = False
        self.duplicate = False
        self._content: bytes | None = None
        self._save = save
        self._save_unsynced = save_unsynced
        self._is_known = is_known

    def set_content(self, data: bytes) -> None:
        """Set the RFC 5322 bytes of the received message."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MapiError(MAPI_E_INVALID_PARAMETER, "set_content() takes bytes")
        self._content = bytes(data)

    @property
    def content(self) -> bytes | None:
        """The bytes given to ``set_content``, or ``None``."""
        return self._content

    def is_known(self, dedupe_key: str) -> bool:
        """True when a message with this dedupe key is already in the store."""
        return self._is_known(dedupe_key)

    def save_changes(self, *, sync: bool = True) -> bytes | None:
        """Commit the message to the receive folder, atomically with its dedupe key.

        Returns the new entry id, or ``None`` when a message with the same ``dedupe_key``
        was already stored (then ``duplicate`` is true and nothing is written). Either way
        the call counts as "saved" for the inbound loop. Raises ``MapiError`` when there is
        no content or the store cannot write (nothing is committed then).

        ``sync=True`` (the default): the commit is durable when this returns, against a
        crash of the process and a power loss; the transport may delete or flag the
        server copy right away (a duplicate too).

        ``sync=False``: the commit survives a crash of the process (kill -9) but may be
        lost on a power loss until the transport calls ``Support.sync()``, the durability
        barrier, which makes every earlier save of the store durable at once. The
        contract: change nothing on the server (delete, move, flag, POP3 DELE, unlink or
        rename a file) for a message saved with ``sync=False``, a duplicate included,
        until a ``Support.sync()`` call made after its save has returned. If the commit is
        lost, the message and its dedupe key are lost together and the next download
        stores it again, once. The spooler also calls the barrier when the inbound loop
        ends, but a transport must not rely on that for its own server actions.
        """
        if self._content is None:
            raise MapiError(MAPI_E_INVALID_PARAMETER, "save_changes() before set_content()")
        if sync or self._save_unsynced is None:
            entry_id = self._save(self)
        else:
            entry_id = self._save_unsynced(self)
        self.mark_saved(entry_id)
        return entry_id

    def mark_saved(self, entry_id: bytes | None) -> None:
        """Record the outcome of a commit made for this message (by ``save_changes`` or
        by ``InboundBatch.save``): a new entry id, or None for a duplicate."""
        self.saved = True
        self.entry_id = entry_id
        self.duplicate = entry_id is None


BatchSaveCallback = Callable[[Sequence[InboundMessage], bool], Awaitable[list[bytes | None]]]


class InboundBatch:
    """Several received messages committed in one store transaction, for
    ``TransportLogon.start_messages``.

    The transport takes one fresh ``InboundMessage`` per received message from
    ``new_message()``, fills it (``set_content``, ``props``, ``dedupe_key``) and commits
    every filled message at once with ``await save()``. A message whose ``save_changes``
    was called is already committed on its own and is not saved again.

    The same exactly-once rules as for ``InboundMessage.save_changes`` hold, per message:
    each message is stored atomically with its dedupe key (a key already stored, also by
    an earlier message of the same batch, makes that message a duplicate: nothing is
    written for it); and after ``save(sync=False)`` nothing may change on the server for
    any message of the batch until a ``Support.sync()`` made after the save returned.
    """

    def __init__(self, new_message: Callable[[], InboundMessage], save: BatchSaveCallback) -> None:
        self._new_message = new_message
        self._save = save
        self.messages: list[InboundMessage] = []
        """Every message ``new_message`` gave out, in order."""

    def new_message(self) -> InboundMessage:
        """A fresh message in the receive folder, part of this batch."""
        message = self._new_message()
        self.messages.append(message)
        return message

    @property
    def saved(self) -> list[InboundMessage]:
        """The messages of the batch committed so far (duplicates included), in order."""
        return [m for m in self.messages if m.saved]

    async def save(self, *, sync: bool = True) -> list[bytes | None]:
        """Commit every message of the batch not saved yet, in one transaction.

        Returns, per message committed by this call and in order, its new entry id or
        None for a duplicate (``duplicate`` is then true on the message). Raises
        ``MapiError`` when a message has no content (nothing is committed then) or the
        store cannot write (nothing of the batch is committed). ``sync`` means what it
        means for ``InboundMessage.save_changes``: ``True`` is durable on return, against
        power loss too; ``False`` survives a crash of the process and becomes durable at
        the next ``Support.sync()``.
        """
        pending = [m for m in self.messages if not m.saved]
        if any(m.content is None for m in pending):
            raise MapiError(MAPI_E_INVALID_PARAMETER, "InboundBatch.save() before set_content()")
        if not pending:
            return []
        entry_ids = await self._save(pending, sync)
        for message, entry_id in zip(pending, entry_ids, strict=True):
            message.mark_saved(entry_id)
        return entry_ids

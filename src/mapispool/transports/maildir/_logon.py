"""``MaildirProvider`` and ``MaildirLogon``: the SPI side of the maildir transport."""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...mapi import (
    LOGON_SP_POLL,
    MAPI_E_DISK_ERROR,
    MAPI_E_FAILONEPROVIDER,
    MAPI_E_NOT_ME,
    MAPI_E_UNCONFIGURED,
    MAPI_E_WAIT,
    PR_MESSAGE_DELIVERY_TIME,
    PR_MESSAGE_FLAGS,
    PR_REPORT_TEXT,
    STATUS_AVAILABLE,
    STATUS_FAILURE,
    MapiError,
    MessageFlags,
)
from ...spi import InboundMessage, OutboundMessage, Recipient, Support, TransportLogon
from ...spi import TransportProvider as _TransportProvider
from ._fs import DeliveryError, Waiting, deliver, finish, list_waiting, needs_finishing
from ._names import is_seen, legacy_dedupe_key
from ._settings import SUBDIRS, MaildirSettings, maildir_problem

MAILDIR_ADDRTYPE = "MAILDIR"

#: Transport state: when this source first ran with keys that name the source. Keys in
#: the legacy form (without the source) count only for files at least as old as that.
LEGACY_CUTOFF_STATE = "maildir:legacy-cutoff"


class _Reject:
    """A recipient that is ours but can never be delivered (the reason goes in the NDR)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def route(recipient: Recipient, settings: MaildirSettings) -> Path | _Reject | None:
    """Where a recipient's mail goes: a Maildir path, a ``_Reject`` (ours, but invalid), or
    ``None`` when the recipient is not for this transport.

    ``MAILDIR:<absolute path>`` (``~`` expanded) names the Maildir itself.
    ``SMTP:<local>@<domain>`` with ``domain`` in ``domains`` goes to
    ``<deliver_root>/<local part in lower case>``; other SMTP recipients are not ours.
    """
    addrtype = recipient.addrtype.upper()
    address = recipient.address.strip()
    if addrtype == MAILDIR_ADDRTYPE:
        path = Path(address).expanduser()
        if not address or not path.is_absolute():
            return _Reject(
                f"MAILDIR address {address!r} is not an absolute path; "
                "write it as MAILDIR:/path/to/Maildir"
            )
        return path
    if addrtype != "SMTP" or not settings.domains or settings.deliver_root is None:
        return None
    local, at, domain = address.rpartition("@")
    if not at or domain.lower().rstrip(".") not in settings.domains:
        return None
    # Local delivery folds the local part to lower case, as Postfix's local(8) does, so
    # Bob@ and bob@ share one mailbox.
    mailbox = local.lower()
    if not mailbox or mailbox.startswith(".") or "/" in mailbox or "\0" in mailbox:
        return _Reject(
            f"the local part of {address!r} cannot name a Maildir under deliver_root "
            "(it is empty, starts with a dot or contains a slash)"
        )
    return settings.deliver_root / mailbox


class MaildirLogon(TransportLogon):
    """One logged-on maildir transport: delivers to Maildirs and receives from one.

    Outbound: ``submit_message`` delivers every pending recipient it routes (see ``route``)
    once per distinct Maildir; failures that retrying cannot fix are reported with
    ``status_recips`` (an NDR each); a temporary failure (disk full, I/O error) raises
    ``MAPI_E_WAIT`` after the other recipients were delivered and reported with
    ``support.delivered_recips``.
    Inbound (with ``path``): ``LOGON_SP_POLL``; ``poll`` counts files not yet stored;
    each ``start_message`` stores one file and only then moves or deletes it.
    """

    def __init__(self, support: Support, settings: MaildirSettings) -> None:
        super().__init__(support)
        self.settings = settings
        self.inbox: Path | None = settings.path
        self.logon_flags = LOGON_SP_POLL if self.inbox is not None else 0
        # Files listed but not looked at yet: each start_message takes from here, so a
        # flush lists the folder once rather than once per message.
        self._queue: deque[Waiting] = deque()
        self._finished: set[str] = set()  # keys stored and finished: skip without a query
        # Unreadable files: reported once, left out of poll's count, tried again at flushes.
        self._unreadable: set[str] = set()
        self._warned: set[str] = set()  # files we could not move or delete, reported once
        self._source = settings.source_id()
        self._legacy_cutoff = self._load_legacy_cutoff() if self.inbox is not None else 0.0

    @property
    def receives(self) -> bool:
        """Only a section with ``path`` receives; without it the transport only sends."""
        return self.inbox is not None

    # -- routing and outbound ---------------------------------------------------------

    def address_types(self) -> Sequence[str]:
        """``["MAILDIR"]``, plus ``"SMTP"`` when ``domains`` is set."""
        if self.settings.domains:
            return (MAILDIR_ADDRTYPE, "SMTP")
        return (MAILDIR_ADDRTYPE,)

    async def submit_message(self, message: OutboundMessage, flags: int) -> None:
        """Deliver ``message`` to each pending recipient this transport routes. Raises
        ``MAPI_E_NOT_ME`` when none is ours (they stay untouched for the next transport),
        ``MAPI_E_WAIT`` when some Maildir failed temporarily (the recipients delivered
        before are reported with ``support.delivered_recips`` first)."""
        targets: dict[str, tuple[Path, list[Recipient]]] = {}
        failed: list[Recipient] = []
        for recipient in message.pending_recipients():
            where = route(recipient, self.settings)
            if where is None:
                continue
            if isinstance(where, _Reject):
                recipient.props[PR_REPORT_TEXT] = where.reason
                failed.append(recipient)
                continue
            # Two recipients naming one Maildir (To and Cc, a trailing slash) get one copy.
            targets.setdefault(str(where), (where, []))[1].append(recipient)
        if not targets and not failed:
            raise MapiError(MAPI_E_NOT_ME, "no recipient is a Maildir or in a local domain")
        temporary: list[str] = []
        delivered: list[Recipient] = []
        if targets:
            content = message.content
            outcomes = await asyncio.to_thread(self._deliver_all, targets, content)
            for (_path, recipients), error in zip(targets.values(), outcomes, strict=True):
                if error is None:
                    for recipient in recipients:
                        recipient.responsibility = True
                    delivered.extend(recipients)
                elif error.permanent:
                    for recipient in recipients:
                        recipient.props[PR_REPORT_TEXT] = error.reason
                    failed.extend(recipients)
                else:
                    temporary.append(error.reason)
        if failed:
            for recipient in failed:
                recipient.responsibility = True
            self.support.status_recips(message, failed)
        if temporary:
            # An error ends the attempt, and marks alone then deliver nothing (DESIGN §7):
            # report the Maildirs that did get the message, so they never get it twice.
            if delivered:
                self.support.delivered_recips(message, delivered)
            raise MapiError(MAPI_E_WAIT, "; ".join(temporary))

    def _deliver_all(
        self, targets: Mapping[str, tuple[Path, list[Recipient]]], content: bytes
    ) -> list[DeliveryError | None]:
        outcomes: list[DeliveryError | None] = []
        for path, _recipients in targets.values():
            try:
                deliver(path, content, self.support.logger.warning)
            except DeliveryError as error:
                outcomes.append(error)
            else:
                outcomes.append(None)
        return outcomes

    # -- inbound ----------------------------------------------------------------------

    async def poll(self) -> int:
        """The number of files in the receiving Maildir not yet stored (0 without
        ``path``). Raises ``MAPI_E_DISK_ERROR`` when the Maildir cannot be read."""
        if self.inbox is None:
            return 0
        listed = await self._list()
        self._queue = deque(listed)
        return sum(1 for item in listed if self._is_new(item))

    async def start_message(self, message: InboundMessage) -> None:
        """Store the next waiting file in ``message`` (dedupe key
        ``maildir:<source>/<unique>``, see ``_names.dedupe_key``),
        then move it to ``cur/`` or delete it. Files already stored are only finished
        (moved or deleted), which recovers from a crash between commit and move. Returns
        without saving when nothing is left. Raises ``MAPI_E_DISK_ERROR`` when the Maildir
        cannot be read."""
        if self.inbox is None:
            return
        listed_again = False
        while True:
            if not self._queue:
                if listed_again:
                    return
                self._queue = deque(await self._list())
                listed_again = True
                continue
            item = self._queue.popleft()
            pending = needs_finishing(item, self.settings.action)
            if item.key in self._finished and not pending:
                continue
            if not self._stored(item):
                try:
                    content = await asyncio.to_thread(item.path.read_bytes)
                except FileNotFoundError:
                    continue  # another reader took it after we listed
                except OSError as exc:
                    if item.key not in self._unreadable:
                        self._unreadable.add(item.key)
                        self.support.logger.warning(
                            "cannot read %s: %s; leaving it in place", item.path, exc.strerror
                        )
                    continue
                self._unreadable.discard(item.key)
                self._fill(message, item, content)
                message.save_changes()
                await self._finish(item)
                return
            if pending:
                await self._finish(item)
            else:
                self._finished.add(item.key)

    def _is_new(self, item: Waiting) -> bool:
        if item.key in self._finished or item.key in self._unreadable:
            return False
        return not self._stored(item)

    def _load_legacy_cutoff(self) -> float:
        """The moment this source first ran with source-named keys (recorded now if it
        never did)."""
        value = self.support.get_state(LEGACY_CUTOFF_STATE)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        now = time.time()
        self.support.set_state(LEGACY_CUTOFF_STATE, now)
        return now

    def _stored(self, item: Waiting) -> bool:
        """True when the file is already in the store.

        Earlier versions keyed a file by its name alone (``legacy_dedupe_key``), which
        cannot tell two Maildirs apart. Such a key still counts, so that a store written
        by them does not download its files again, but only for files whose mtime is not
        after the moment this source first ran with source-named keys: a file that
        arrives later with a name some other Maildir used before is stored, not dropped.
        """
        if self.support.has_dedupe_key(item.key):
            return True
        return item.mtime <= self._legacy_cutoff and self.support.has_dedupe_key(
            legacy_dedupe_key(item.name)
        )

    def _fill(self, message: InboundMessage, item: Waiting, content: bytes) -> None:
        message.set_content(content)
        message.dedupe_key = item.key
        message.props[PR_MESSAGE_DELIVERY_TIME] = datetime.fromtimestamp(item.mtime, UTC)
        if is_seen(item.name):
            # Read already by a mail reader working on this Maildir: keep it read.
            message.props[PR_MESSAGE_FLAGS] = MessageFlags.MSGFLAG_READ

    async def _finish(self, item: Waiting) -> None:
        assert self.inbox is not None
        try:
            await asyncio.to_thread(finish, item, self.inbox, self.settings.action)
        except OSError as exc:
            # The message is committed: failing the call would not undo that. The file
            # stays; its key is stored, so it is never stored twice, and the next pass
            # tries again to move or delete it.
            if item.key not in self._warned:
                self._warned.add(item.key)
                self.support.logger.warning(
                    "stored %s but cannot %s it: %s",
                    item.path,
                    self.settings.action,
                    exc.strerror,
                )
            return
        self._finished.add(item.key)

    async def _list(self) -> list[Waiting]:
        assert self.inbox is not None
        try:
            assert self._source is not None
            listed = await asyncio.to_thread(
                list_waiting, self.inbox, self.settings.include_cur, self._source
            )
        except OSError as exc:
            reason = (
                f"cannot read the Maildir {self.inbox}: {exc.strerror}; "
                "check that it exists and is readable, or fix path in the profile"
            )
            self.update_status(set_bits=STATUS_FAILURE, clear_bits=STATUS_AVAILABLE, text=reason)
            raise MapiError(MAPI_E_DISK_ERROR, reason) from exc
        if self.status_code & STATUS_FAILURE:
            await self.validate_state(0)
        return listed

    # -- state ------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """What keeps this transport from working now (empty when all is well)."""
        found: list[str] = []
        if self.inbox is not None:
            problem = maildir_problem(self.inbox)
            if problem is None:
                folders = ("new", "cur") if self.settings.include_cur else ("new",)
                if self.settings.action == "move":
                    folders = ("new", "cur")
                for sub in folders:
                    if not os.access(self.inbox / sub, os.W_OK | os.X_OK):
                        problem = f"{self.inbox / sub} is not writable"
                        break
            if problem is not None:
                found.append(problem)
        root = self.settings.deliver_root
        if root is not None and not (root.is_dir() and os.access(root, os.W_OK | os.X_OK)):
            found.append(f"deliver_root {root} is not a writable directory")
        return found

    async def validate_state(self, flags: int) -> None:
        """``ValidateState``: ``STATUS_AVAILABLE`` when the receiving Maildir (and
        ``deliver_root``) are there and writable, else ``STATUS_FAILURE`` with the reason
        in ``PR_STATUS_STRING``."""
        problems = await asyncio.to_thread(self.problems)
        if problems:
            self.update_status(
                set_bits=STATUS_FAILURE, clear_bits=STATUS_AVAILABLE, text="; ".join(problems)
            )
        else:
            where = f"receiving from {self.inbox}" if self.inbox is not None else "send only"
            self.update_status(
                set_bits=STATUS_AVAILABLE, clear_bits=STATUS_FAILURE, text=f"ready, {where}"
            )


class MaildirProvider(_TransportProvider):
    """The ``maildir`` provider. Settings: ``path``, ``include_cur``, ``action``,
    ``create``, ``domains``, ``deliver_root`` (the README (Transports, maildir))."""

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Validate a profile section at load time; ``ValueError`` names the key and the
        fix (an unknown key, a wrong type, ``path`` not a Maildir, ``deliver_root``
        missing)."""
        MaildirSettings.parse(settings).check_file_system()

    async def transport_logon(self, support: Support, flags: int) -> TransportLogon:
        """Log on: create the receiving Maildir when ``create`` asks for it, then check it.
        Raises ``MAPI_E_UNCONFIGURED`` for invalid settings and ``MAPI_E_FAILONEPROVIDER``
        when the receiving Maildir is missing or cannot be created."""
        try:
            settings = MaildirSettings.parse(self.settings)
        except ValueError as exc:
            raise MapiError(MAPI_E_UNCONFIGURED, f"transports.{self.name}: {exc}") from exc
        # LOGON_NO_INBOUND only means "not yet": the spooler enables inbound afterwards
        # with NOTIFY_BEGIN_INBOUND and calls poll only from then on, so it changes nothing.
        if settings.path is not None:
            await asyncio.to_thread(_prepare_inbox, settings.path, settings.create)
        logon = MaildirLogon(support, settings)
        await logon.validate_state(0)
        return logon


def _prepare_inbox(path: Path, create: bool) -> None:
    if create:
        try:
            for sub in SUBDIRS:
                os.makedirs(path / sub, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise MapiError(
                MAPI_E_FAILONEPROVIDER,
                f"cannot create the Maildir {path}: {exc.strerror}; "
                "create it yourself or fix path in the profile",
            ) from exc
    problem = maildir_problem(path)
    if problem is not None:
        raise MapiError(
            MAPI_E_FAILONEPROVIDER,
            f"{problem}; point path at a Maildir (cur/, new/, tmp/) or set create = true",
        )

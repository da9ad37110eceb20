"""``ImapConnection``: the blocking half of the IMAP transport (imapclient).

Every method runs on the logon's worker thread, has a socket deadline, and raises only
``MapiError`` (the imapclient, imaplib, socket or TLS error chained as its cause).
"""

from __future__ import annotations

import imaplib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import imapclient  # type: ignore[import-untyped]
from imapclient.exceptions import (  # type: ignore[import-untyped]
    IMAPClientAbortError,
    IMAPClientError,
    LoginError,
)

from ...mapi import MAPI_E_NO_SUPPORT, MapiError
from .._inbound.errors import limit_error, translate_error
from .._inbound.limits import Budget, LimitExceeded
from .._inbound.secrets import Credentials
from .._inbound.tls import make_ssl_context
from .bounded import BoundedIMAPClient
from .settings import ImapSettings

T = TypeVar("T")

_AUTH_ERRORS = (LoginError,)
_ABORT_ERRORS = (IMAPClientAbortError, imaplib.IMAP4.abort)
_PROTOCOL_ERRORS = (IMAPClientError, imaplib.IMAP4.error)


@dataclass(frozen=True)
class FolderInfo:
    """What SELECT said about a folder."""

    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass(frozen=True)
class Fetched:
    """One message fetched with ``BODY.PEEK[]`` (so ``\\Seen`` is not set by reading)."""

    uid: int
    data: bytes
    size: int


class ImapConnection:
    """One authenticated IMAP connection with a selected folder (or none)."""

    def __init__(self, settings: ImapSettings, logger: logging.Logger) -> None:
        self.settings = settings
        self.common = settings.common
        self.logger = logger
        self._client: Any = None
        self._selected: str | None = None
        self._secrets: list[str] = []
        self.capabilities: frozenset[str] = frozenset()
        self.budget = Budget(settings.common.limits)

    @property
    def where(self) -> str:
        """``host:port`` for messages."""
        return f"{self.common.host}:{self.common.port}"

    @property
    def connected(self) -> bool:
        """True after a successful ``connect`` until ``close``."""
        return self._client is not None

    def _guard(self, doing: str, fn: Callable[[], T], *, extra_bytes: int | None = None) -> T:
        """Run ``fn`` under a fresh response budget (a download when ``extra_bytes`` is
        given: what a batch may add to one message); every failure becomes a
        ``MapiError``. A crossed bound drops the connection without LOGOUT: the rest of
        the response is still on the wire."""
        self.budget.arm(doing, body=extra_bytes is not None, extra_bytes=extra_bytes or 0)
        try:
            return fn()
        except MapiError:
            raise
        except LimitExceeded as exc:
            self.drop()
            raise limit_error(exc, where=self.where) from exc
        except Exception as exc:
            error = translate_error(
                exc,
                doing=doing,
                where=self.where,
                secrets=self._secrets,
                protocol_errors=_PROTOCOL_ERRORS,
                auth_errors=_AUTH_ERRORS,
                abort_errors=_ABORT_ERRORS,
            )
            if error.hresult != MAPI_E_NO_SUPPORT and isinstance(exc, (*_ABORT_ERRORS, OSError)):
                # The connection is unusable after a network failure: drop it, so that
                # the next call reconnects instead of failing on a dead socket.
                self.close(quiet=True)
            raise error from exc

    # -- connection ---------------------------------------------------------------------

    def connect(self) -> None:
        """Connect, negotiate TLS, authenticate. Fetches the secret anew every time."""
        self.close(quiet=True)
        c = self.common
        if not c.verify:
            self.logger.warning(
                "TLS certificate verification is off for %s (verify = false)", self.where
            )
        context = make_ssl_context(c) if c.tls != "none" else None
        timeout = imapclient.SocketTimeout(connect=c.connect_timeout, read=c.timeout)

        def open_() -> Any:
            return BoundedIMAPClient(
                c.host,
                port=c.port,
                ssl=c.tls == "implicit",
                ssl_context=context,
                timeout=timeout,
                budget=self.budget,
            )

        client = self._guard("connecting", open_)
        self._client = client
        try:
            if c.tls == "starttls":
                self._guard("starting TLS", lambda: client.starttls(context))
            secret = Credentials(c).secret()
            self._secrets = [secret]
            self._guard("logging in", lambda: self._login(client, secret))
            self.capabilities = frozenset(
                cap.decode("ascii", "replace").upper() if isinstance(cap, bytes) else str(cap)
                for cap in self._guard("asking for capabilities", client.capabilities)
            )
        except BaseException:
            self.close(quiet=True)
            raise
        self._selected = None

    def _login(self, client: Any, secret: str) -> None:
        c = self.common
        if c.auth == "xoauth2":
            client.oauth2_login(c.username, secret)
        elif c.auth == "oauthbearer":
            client.oauthbearer_login(c.username, secret)
        else:
            client.login(c.username, secret)

    def ensure(self) -> None:
        """Connect unless connected; a connection that no longer answers NOOP is replaced."""
        if self._client is not None:
            try:
                self.budget.arm("checking the connection (NOOP)")
                self._client.noop()
                return
            except Exception:  # any failure means: start over with a fresh connection
                self.close(quiet=True)
        self.connect()

    def drop(self) -> None:
        """Close the socket without a word to the server. Never raises."""
        client, self._client, self._selected = self._client, None, None
        if client is not None:
            try:
                client.shutdown()
            except Exception:  # already dead: nothing left to close
                self.logger.debug("dropping the IMAP socket failed", exc_info=True)

    def close(self, *, quiet: bool = False) -> None:
        """LOGOUT if possible, then drop the socket. Never raises."""
        client, self._client, self._selected = self._client, None, None
        if client is None:
            return
        try:
            self.budget.arm("logging out")
            client.logout()
        except Exception:
            try:
                client.shutdown()
            except Exception:
                if not quiet:
                    self.logger.debug("closing the IMAP socket failed", exc_info=True)

    # -- folders ------------------------------------------------------------------------

    def select(self, folder: str) -> FolderInfo:
        """SELECT ``folder`` (read-write: flags and expunges follow)."""
        client = self._require()
        info = self._guard(f"selecting {folder!r}", lambda: client.select_folder(folder))
        self._selected = folder
        uidnext = info.get(b"UIDNEXT")
        return FolderInfo(
            name=folder,
            uidvalidity=int(info[b"UIDVALIDITY"]),
            uidnext=int(uidnext) if uidnext is not None else None,
            exists=int(info.get(b"EXISTS", 0)),
        )

    def uids_above(self, floor: int) -> list[int]:
        """Every UID greater than ``floor`` in the selected folder, ascending."""
        client = self._require()
        criteria = ["UID", f"{floor + 1}:*"] if floor > 0 else ["ALL"]
        found = self._guard("searching", lambda: client.search(criteria))
        return sorted(int(u) for u in found if int(u) > floor)

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """RFC822.SIZE of each UID that still exists."""
        client = self._require()
        data = self._guard("fetching sizes", lambda: client.fetch(list(uids), [b"RFC822.SIZE"]))
        return {int(uid): int(item[b"RFC822.SIZE"]) for uid, item in data.items()}

    def sizes_above(self, floor: int) -> dict[int, int]:
        """RFC822.SIZE of every message whose UID is greater than ``floor``, with one
        ``UID FETCH floor+1:* (RFC822.SIZE)``: the listing and the sizes in one round
        trip. (``n:*`` always names the highest UID, even below ``n``: filtered out.)
        Call it only when the folder is not empty (``*`` needs a message)."""
        client = self._require()
        data = self._guard(
            "listing messages", lambda: client.fetch_range(floor + 1, [b"RFC822.SIZE"])
        )
        return {
            int(uid): int(item[b"RFC822.SIZE"]) for uid, item in data.items() if int(uid) > floor
        }

    def headers(self, uids: Sequence[int]) -> dict[int, tuple[bytes, int]]:
        """(header section, RFC822.SIZE) of each UID that still exists."""
        client = self._require()
        data = self._guard(
            "fetching headers",
            lambda: client.fetch(list(uids), [b"RFC822.SIZE", b"BODY.PEEK[HEADER]"]),
        )
        return {
            int(uid): (bytes(item.get(b"BODY[HEADER]") or b""), int(item[b"RFC822.SIZE"]))
            for uid, item in data.items()
        }

    def bodies(self, uids: Sequence[int], batch_bytes: int) -> list[Fetched]:
        """The full messages, ascending by UID; UIDs expunged meanwhile are left out.

        Each message may be up to ``max_message_size`` and all of them together up to
        that plus ``batch_bytes``, whatever RFC822.SIZE said; beyond, ``MAPI_E_TOO_BIG``
        and the connection is dropped."""
        client = self._require()
        data = self._guard(
            "downloading messages",
            lambda: client.fetch(list(uids), [b"RFC822.SIZE", b"BODY.PEEK[]"]),
            extra_bytes=batch_bytes,
        )
        out = [
            Fetched(int(uid), bytes(item[b"BODY[]"]), int(item[b"RFC822.SIZE"]))
            for uid, item in data.items()
            if item.get(b"BODY[]") is not None
        ]
        out.sort(key=lambda f: f.uid)
        return out

    # -- actions after the local commit --------------------------------------------------

    def mark_seen(self, uids: Sequence[int]) -> None:
        """Set ``\\Seen`` (action keep)."""
        client = self._require()
        self._guard(
            "flagging \\Seen", lambda: client.add_flags(list(uids), [imapclient.SEEN], silent=True)
        )

    def delete(self, uids: Sequence[int]) -> None:
        """Flag ``\\Deleted`` and expunge exactly these UIDs (UID EXPUNGE with UIDPLUS;
        without it a plain EXPUNGE, which also removes other messages flagged deleted)."""
        client = self._require()
        self._guard(
            "flagging \\Deleted",
            lambda: client.add_flags(list(uids), [imapclient.DELETED], silent=True),
        )
        if "UIDPLUS" in self.capabilities:
            self._guard("expunging", lambda: client.expunge(list(uids)))
        else:
            self._guard("expunging", client.expunge)

    def move(self, uids: Sequence[int], folder: str) -> None:
        """Move to ``folder`` (MOVE, or COPY + delete); create it if the server says
        TRYCREATE."""
        client = self._require()

        def do() -> None:
            if "MOVE" in self.capabilities:
                client.move(list(uids), folder)
            else:
                client.copy(list(uids), folder)
                self.delete(uids)

        try:
            self._guard(f"moving to {folder!r}", do)
        except MapiError as error:
            if "TRYCREATE" not in (error.reply or "").upper():
                raise
            self._guard(f"creating {folder!r}", lambda: client.create_folder(folder))
            self._guard(f"moving to {folder!r}", do)

    # -- waiting for mail ----------------------------------------------------------------

    def idle_for_news(self, seconds: float) -> bool:
        """IDLE on the selected folder for at most ``seconds``; True when the server
        reported new messages (EXISTS or RECENT). Without IDLE support: NOOP and look."""
        client = self._require()

        def wait() -> bool:
            if "IDLE" not in self.capabilities:
                return _has_news(client.noop()[1])
            client.idle()
            try:
                responses = client.idle_check(timeout=seconds)
            finally:
                client.idle_done()
            return _has_news(responses)

        return self._guard("waiting for new mail (IDLE)", wait)

    def _require(self) -> Any:
        if self._client is None:
            self.connect()
        return self._client


def _has_news(responses: Any) -> bool:
    for response in responses or ():
        if not (isinstance(response, tuple) and len(response) >= 2):
            continue
        count, kind = response[0], response[1]
        if kind == b"EXISTS" or (kind == b"RECENT" and isinstance(count, int) and count > 0):
            return True
    return False

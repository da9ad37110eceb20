"""imapclient's connection classes reading through a ``BoundedReader``.

imaplib reads lines with ``file.readline`` (1,000,000 bytes a line, but any number of
lines: an endless SELECT answer grew memory without end) and literals with
``file.read(size)`` for whatever size the server announces. ``BoundedIMAPClient`` makes
imapclient build imaplib objects whose ``readline`` and ``read`` go through the
connection's ``BoundedReader`` instead, from the greeting on, so every line and literal
is charged to the ``Budget`` of the operation in progress, and keeps imaplib from copying
each literal into a debug message.
"""

from __future__ import annotations

import ssl
from typing import Any

import imapclient  # type: ignore[import-untyped]
from imapclient import imap4, tls
from imapclient.response_parser import parse_fetch_response  # type: ignore[import-untyped]

from .._inbound.limits import BoundedReader, Budget


class _BoundedIO:
    """Mixin over an ``imaplib.IMAP4`` subclass: ``readline``/``read`` are bounded."""

    sock: Any
    reader: BoundedReader

    def _start_reader(self, budget: Budget) -> None:
        self.reader = BoundedReader(lambda: self.sock, budget)

    def readline(self) -> bytes:
        return self.reader.readline()

    def read(self, size: int) -> bytes:
        return self.reader.read(size)


class BoundedIMAP4(_BoundedIO, imap4.IMAP4WithTimeout):  # type: ignore[misc]
    """Plain (or STARTTLS) IMAP with bounded reads."""

    def __init__(self, host: str, port: int, timeout: float | None, budget: Budget) -> None:
        self._start_reader(budget)
        super().__init__(host, port, timeout)


class BoundedIMAP4_TLS(_BoundedIO, tls.IMAP4_TLS):  # type: ignore[misc]
    """Implicit-TLS IMAP with bounded reads."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext | None,
        timeout: float | None,
        budget: Budget,
    ) -> None:
        self._start_reader(budget)
        super().__init__(host, port, context, timeout)


class BoundedIMAPClient(imapclient.IMAPClient):  # type: ignore[misc]
    """``IMAPClient`` over ``BoundedIMAP4`` / ``BoundedIMAP4_TLS``."""

    def __init__(self, *args: Any, budget: Budget, **kwargs: Any) -> None:
        self._budget = budget
        super().__init__(*args, **kwargs)
        # imapclient sets imaplib's debug level to 5, at which imaplib formats the repr of
        # every untagged response, literals included, whether or not anything logs it:
        # two to three extra copies of each downloaded message. Level 4 still logs every
        # line and command, and only the size of literals.
        self._imap.debug = 4

    def _create_IMAP4(self) -> Any:
        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return BoundedIMAP4_TLS(
                self.host, self.port, self.ssl_context, connect_timeout, self._budget
            )
        return BoundedIMAP4(self.host, self.port, connect_timeout, self._budget)

    def fetch_range(self, first_uid: int, data: list[bytes]) -> dict[int, dict[bytes, Any]]:
        """``UID FETCH first_uid:* (data)``: ``fetch`` does the same command, but keeps
        only the answers for the UIDs it was given as integers, and ``first_uid:*`` names
        UIDs nobody knows yet. Same steps as imapclient's ``fetch``, without that filter."""
        items = b"(" + b" ".join(data) + b")"
        tag = self._imap._command("UID", "FETCH", f"{first_uid}:*".encode(), items)
        typ, lines = self._imap._command_complete("FETCH", tag)
        self._checkok("fetch", typ, lines)
        typ, lines = self._imap._untagged_response(typ, lines, "FETCH")
        parsed: dict[int, dict[bytes, Any]] = parse_fetch_response(
            lines, self.normalise_times, True
        )
        return parsed

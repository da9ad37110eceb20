"""``Pop3Connection``: the blocking half of the POP3 transport (stdlib poplib).

Every method runs on the logon's worker thread, with socket deadlines, and raises only
``MapiError`` (the poplib, socket or TLS error chained as its cause).
"""

from __future__ import annotations

import contextlib
import logging
import poplib
from collections.abc import Callable, Sequence
from typing import TypeVar

from ...mapi import MAPI_E_CALL_FAILED, MAPI_E_LOGON_FAILED, MAPI_E_NO_SUPPORT, MapiError
from .._inbound.errors import limit_error, translate_error
from .._inbound.limits import Budget, LimitExceeded
from .._inbound.secrets import Credentials, b64, sasl_oauthbearer, sasl_xoauth2
from .._inbound.tls import make_ssl_context
from .bounded import BoundedPOP3, BoundedPOP3_SSL
from .protocol import describe_headers, is_temporary, parse_listing, parse_sizes, reply_text
from .settings import Pop3Settings

T = TypeVar("T")

# poplib raises error_proto both for -ERR replies and for a connection closed mid-reply.
_PROTOCOL_ERRORS = (poplib.error_proto,)


class Pop3Connection:
    """One POP3 session in the TRANSACTION state (or none)."""

    def __init__(self, settings: Pop3Settings, logger: logging.Logger) -> None:
        self.settings = settings
        self.common = settings.common
        self.logger = logger
        self._pop: BoundedPOP3 | BoundedPOP3_SSL | None = None
        self._pipelining: bool | None = None
        self._secrets: list[str] = []
        self.budget = Budget(settings.common.limits)

    @property
    def where(self) -> str:
        """``host:port`` for messages."""
        return f"{self.common.host}:{self.common.port}"

    @property
    def connected(self) -> bool:
        """True between ``connect`` and ``quit``/``close``."""
        return self._pop is not None

    def _guard(
        self, doing: str, fn: Callable[[], T], *, login: bool = False, body: bool = False
    ) -> T:
        """Run ``fn`` under a fresh response budget; every failure becomes a
        ``MapiError``. A crossed bound (``LimitExceeded``) drops the connection: the rest
        of the response is still on the wire."""
        self.budget.arm(doing, body=body)
        try:
            return fn()
        except MapiError:
            raise
        except LimitExceeded as exc:
            self.close()
            raise limit_error(exc, where=self.where) from exc
        except Exception as exc:
            seen: BaseException = exc
            if isinstance(exc, poplib.error_proto) and is_temporary(
                exc.args[0] if exc.args else exc
            ):
                # The server is going away or busy ("-ERR EOF" is poplib's way to say the
                # connection closed): a network failure to retry, not a refusal.
                seen = ConnectionResetError(reply_text(exc.args[0] if exc.args else exc))
            error = translate_error(
                seen,
                doing=doing,
                where=self.where,
                secrets=self._secrets,
                protocol_errors=_PROTOCOL_ERRORS,
                auth_errors=_PROTOCOL_ERRORS if login else (),
            )
            if isinstance(seen, OSError | EOFError):
                self.close()
            raise error from exc

    def connect(self) -> None:
        """Connect, negotiate TLS, authenticate (fetching the secret anew)."""
        self.close()
        c = self.common
        if not c.verify:
            self.logger.warning(
                "TLS certificate verification is off for %s (verify = false)", self.where
            )
        context = make_ssl_context(c) if c.tls != "none" else None

        def open_() -> BoundedPOP3 | BoundedPOP3_SSL:
            if c.tls == "implicit":
                return BoundedPOP3_SSL(c.host, c.port, c.connect_timeout, self.budget, context)
            return BoundedPOP3(c.host, c.port, c.connect_timeout, self.budget)

        pop = self._guard("connecting", open_)
        self._pop = pop
        self._pipelining = None
        try:
            pop.sock.settimeout(c.timeout)
            if c.tls == "stls":
                self._guard("starting TLS (STLS)", lambda: pop.stls(context))
                # Anything received in clear text after the STLS reply must not be read
                # as part of the protected session.
                pop.reader.reset()
                pop.sock.settimeout(c.timeout)
            secret = Credentials(c).secret()
            self._secrets = [secret]
            self._guard("logging in", lambda: self._login(pop, secret), login=True)
        except BaseException:
            self.close()
            raise

    def _login(self, pop: poplib.POP3, secret: str) -> None:
        c = self.common
        if c.auth == "apop":
            pop.apop(c.username, secret)
        elif c.auth in ("xoauth2", "oauthbearer"):
            if c.auth == "xoauth2":
                initial = sasl_xoauth2(c.username, secret)
            else:
                initial = sasl_oauthbearer(c.username, secret, c.host, c.port)
            # poplib has no AUTH command; RFC 5034 allows the initial response inline.
            shortcmd: Callable[[str], bytes] = getattr(pop, "_shortcmd")  # noqa: B009
            reply = shortcmd(f"AUTH {c.auth.upper()} {b64(initial)}")
            if not reply.startswith(b"+OK"):
                # A "+ <challenge>" carries the server's error details; cancel the exchange.
                shortcmd("*")
                raise MapiError(MAPI_E_LOGON_FAILED, f"the server refused AUTH {c.auth.upper()}")
        else:
            pop.user(c.username)
            pop.pass_(secret)

    def _require(self) -> BoundedPOP3 | BoundedPOP3_SSL:
        if self._pop is None:
            self.connect()
        assert self._pop is not None
        return self._pop

    def listing(self) -> tuple[dict[int, str], dict[int, int]]:
        """(UIDL map, size map) of the maildrop as this session sees it."""
        pop = self._require()
        try:
            uidl_lines = self._guard("listing messages (UIDL)", lambda: pop.uidl()[1])
        except MapiError as error:
            if error.hresult == MAPI_E_CALL_FAILED and (error.reply or "").startswith("-ERR"):
                raise MapiError(
                    MAPI_E_NO_SUPPORT,
                    f"{self.where} does not support UIDL, which the pop3 transport needs to "
                    "download each message once",
                    reply=error.reply,
                ) from error
            raise
        uidls = parse_listing(uidl_lines)
        if not uidls:
            return {}, {}  # an empty maildrop: LIST would say nothing more
        list_lines = self._guard("listing messages (LIST)", lambda: pop.list()[1])
        return uidls, parse_sizes(list_lines)

    def retrieve(self, number: int) -> bytes:
        """RETR one message: its lines with CRLF line ends, dot-stuffing undone. A body
        over ``max_message_size`` (whatever LIST said) is ``MAPI_E_TOO_BIG`` and drops
        the connection; nothing of it is kept."""
        pop = self._require()
        return self._guard(
            f"downloading message {number} (RETR)", lambda: pop.retrieve(number), body=True
        )

    def pipelining(self) -> bool:
        """True when the server's ``CAPA`` lists ``PIPELINING`` (RFC 2449); asked once
        per session. A server without CAPA does not pipeline."""
        pop = self._require()
        if self._pipelining is None:
            try:
                caps = self._guard("asking for capabilities (CAPA)", pop.capa)
            except MapiError:
                caps = {}
            self._pipelining = "PIPELINING" in caps
        return self._pipelining

    def retrieve_window(self, numbers: Sequence[int], out: list[bytes]) -> None:
        """RETR ``numbers`` pipelined (one write, answers read in order) into ``out``;
        on an error ``out`` holds the messages read before it. The whole window shares
        one message's budget (``max_message_size``): a caller keeps the sizes LIST gave
        for the window well under it, so that only a lie about a size crosses it."""
        pop = self._require()

        def run() -> None:
            pop.send_retrieves(list(numbers))
            for number in numbers:
                out.append(pop.read_retrieved(number))

        first, last = numbers[0], numbers[-1]
        self._guard(f"downloading messages {first} to {last} (RETR)", run, body=True)

    def describe(self, number: int) -> str:
        """``TOP n 0``: the headers of one message, summarised for a status message."""
        pop = self._require()
        return describe_headers(self._guard("reading headers (TOP)", lambda: pop.top(number, 0)[1]))

    def delete(self, numbers: Sequence[int]) -> None:
        """DELE each message; the server removes them at QUIT (RFC 1939 UPDATE state)."""
        pop = self._require()

        def dele() -> None:
            for n in numbers:
                pop.dele(n)

        self._guard("deleting messages (DELE)", dele)

    def quit(self) -> None:
        """QUIT: commits the deletions of this session; the connection is gone after."""
        pop = self._pop
        if pop is None:
            return
        try:
            self._guard("ending the session (QUIT)", pop.quit)
        finally:
            self.close()

    def close(self) -> None:
        """Drop the connection without QUIT (deletions of this session are undone)."""
        pop, self._pop = self._pop, None
        if pop is None:
            return
        with contextlib.suppress(OSError):  # already dead
            pop.close()

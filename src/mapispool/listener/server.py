"""Running the SMTP listener on the daemon's event loop (aiosmtpd's protocol class on an
``asyncio`` server, so submissions use the daemon's own session without threads)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
import warnings
from collections.abc import Sequence
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from ..mapi import MAPI_E_INVALID_PARAMETER, MAPI_E_NETWORK_ERROR, MapiError
from ..session import AsyncSession
from ..spi import Recipient
from ..spooler.bounce_to_sender import SUBMITTED_VIA_LISTENER, origin_props
from ..transports import _secrets
from .handler import ListenerHandler
from .settings import ListenSettings

log = logging.getLogger("mapispool.listener")


def tls_context(settings: ListenSettings) -> ssl.SSLContext | None:
    """The server-side TLS context for STARTTLS, or None without a certificate."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise MapiError(
            MAPI_E_INVALID_PARAMETER,
            f"listen.tls_cert/tls_key: cannot load {settings.tls_cert} and "
            f"{settings.tls_key} ({exc}); give PEM files of a certificate and its key",
        ) from exc
    return context


class _Authenticator:
    """Checks AUTH PLAIN/LOGIN against the one configured user, in constant time."""

    def __init__(self, username: str, password: str) -> None:
        self._username = username.encode()
        self._password = password.encode()

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = hmac.compare_digest(auth_data.login, self._username) & hmac.compare_digest(
            auth_data.password, self._password
        )
        if ok:
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535


class SmtpListener:
    """One SMTP listener bound to ``settings.address``, queueing into ``session``."""

    def __init__(self, session: AsyncSession, settings: ListenSettings) -> None:
        self.session = session
        self.settings = settings
        self._server: asyncio.Server | None = None
        self._authenticator: _Authenticator | None = None
        self._tls = tls_context(settings)

    @property
    def port(self) -> int:
        """The port bound (the settings' port, or the one chosen for port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _submit(self, content: bytes, rows: Sequence[Recipient], sender: str) -> bytes:
        return await self.session.submit(
            content, recipients=list(rows), sender=sender,
            props=origin_props(SUBMITTED_VIA_LISTENER),
        )  # fmt: skip

    def _protocol(self) -> SMTP:
        s = self.settings
        options: dict[str, Any] = {
            "data_size_limit": s.max_size,
            "enable_SMTPUTF8": True,
            "hostname": s.hostname,
            "ident": "mapispool",
            "tls_context": self._tls,
            "require_starttls": s.require_tls,
        }
        if self._authenticator is not None:
            options.update(
                auth_required=True,
                authenticator=self._authenticator,
                # AUTH only inside TLS when there is TLS; in clear only on loopback or
                # when the profile allowed it (checked when the settings were read).
                auth_require_tls=self._tls is not None,
                auth_exclude_mechanism=["CRAM-MD5"],
            )
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without TLS; the settings only allow it on
            # loopback or when the profile says so explicitly.
            warnings.simplefilter("ignore")
            return SMTP(ListenerHandler(self._submit), **options)

    async def start(self) -> None:
        """Resolve the password (by reference) and bind; ``MapiError`` names what failed."""
        s = self.settings
        if s.username is not None:
            secret = await asyncio.to_thread(_secrets.password, s)
            self._authenticator = _Authenticator(s.username, secret)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._protocol, s.host, s.port)
        except OSError as exc:
            raise MapiError(
                MAPI_E_NETWORK_ERROR,
                f"cannot listen for SMTP on {s.address}: {exc.strerror or exc}; "
                "choose another address with --smtp or [listen] smtp",
            ) from exc
        log.info("listening for SMTP on %s", s.address)

    async def stop(self) -> None:
        """Stop accepting connections and close the open ones; a transaction whose final
        dot was answered 250 is already in the store."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        await server.wait_closed()

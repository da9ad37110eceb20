"""Where the smtp transport's password or OAuth token comes from, looked up again at every
(re)connect, and how it is kept out of every text a server sends back. The lookup is done
by the shared ``transports._secrets`` module, in a worker thread so that a slow helper
command never blocks the event loop."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterable

from ...mapi import MAPI_E_LOGON_FAILED, MapiError
from .. import _secrets
from .._secrets import COMMAND_TIMEOUT
from .auth import (
    login_responses,
    oauthbearer_response,
    plain_response,
    xoauth2_response,
)
from .settings import SmtpSettings

__all__ = [
    "COMMAND_TIMEOUT",
    "REDACTED",
    "Redactor",
    "call_token_callable",
    "resolve_password",
    "resolve_token",
    "run_secret_command",
]


async def run_secret_command(command: str, key: str, limit: float = COMMAND_TIMEOUT) -> str:
    """The first line a shell command prints (see ``_secrets.run_command``)."""
    return await asyncio.to_thread(_secrets.run_command, command, key, limit)


async def call_token_callable(spec: str) -> str:
    """The token a ``package.module:function`` returns (awaited if it is a coroutine)."""
    return await asyncio.to_thread(_secrets.call_callable, spec)


async def resolve_password(settings: SmtpSettings) -> str:
    """The password from whichever source the settings name (an inline ``password``, which
    the settings accept with a warning, first)."""
    if settings.password is not None:
        return settings.password
    if not settings.has_password_source:
        raise MapiError(MAPI_E_LOGON_FAILED, "no password source is configured")
    return await asyncio.to_thread(_secrets.password, settings)


async def resolve_token(settings: SmtpSettings) -> str:
    """A fresh OAuth access token from ``token_command`` or ``token_callable``."""
    return await asyncio.to_thread(_secrets.token, settings)


#: What a secret is replaced with in a server's text (as the inbound transports do).
REDACTED = "***"
#: Shorter strings are not redacted: they would mangle ordinary words of a reply.
MIN_SECRET = 3
#: A secret shorter than this is redacted only where it stands apart (no letter or digit
#: next to it): a short password is likely to occur inside ordinary words ("tok" in
#: "token"); a long one is redacted wherever it occurs.
MIN_ANYWHERE = 8


class Redactor:
    """Removes a secret from server replies and errors, in every form the AUTH exchange
    put on the wire: the secret itself, its base64, and the base64 of each SASL initial
    response that embeds it (PLAIN's ``\\0user\\0password``, XOAUTH2, OAUTHBEARER), with
    and without padding. A server that echoes what it was sent (``535 5.7.8 bad
    password hunter2``) must not get it into a report, the store, a log or the status row.
    """

    def __init__(self, forms: Iterable[str] = ()) -> None:
        unique = {form for form in forms if len(form) >= MIN_SECRET}
        # Longest first, so a form is never left half-replaced by a shorter one inside it.
        patterns = [_pattern(form) for form in sorted(unique, key=len, reverse=True)]
        self._pattern = re.compile("|".join(patterns)) if patterns else None

    @classmethod
    def for_secret(cls, settings: SmtpSettings, username: str, secret: str) -> Redactor:
        """A redactor for ``secret``, sent as ``username`` to ``settings``' server."""
        sent = [
            base64.b64encode(secret.encode()),
            plain_response(username, secret),
            login_responses(username, secret)[1],
            xoauth2_response(username, secret),
            oauthbearer_response(username, secret, settings.host, settings.port),
        ]
        forms = [secret]
        for encoded in sent:
            text = encoded.decode("ascii")
            forms += [text, text.rstrip("=")]
        return cls(forms)

    @property
    def active(self) -> bool:
        """True once there is a secret to redact."""
        return self._pattern is not None

    def text(self, text: str) -> str:
        """``text`` with every form of the secret replaced by ``REDACTED``."""
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def scrub(self, exc: BaseException) -> BaseException:
        """Redact, in place, the texts of ``exc`` and of every exception in its cause
        chain (a traceback prints them all); returns ``exc``."""
        if self._pattern is None:
            return exc
        seen: list[BaseException] = []
        current: BaseException | None = exc
        while current is not None and current not in seen:
            seen.append(current)
            current.args = tuple(self.text(a) if isinstance(a, str) else a for a in current.args)
            for name in ("message", "reply"):
                value = getattr(current, name, None)
                if isinstance(value, str):
                    setattr(current, name, self.text(value))
            current = current.__cause__ or current.__context__
        return exc


def _pattern(form: str) -> str:
    if len(form) >= MIN_ANYWHERE:
        return re.escape(form)
    return rf"(?<![^\W_]){re.escape(form)}(?![^\W_])"  # no letter or digit either side

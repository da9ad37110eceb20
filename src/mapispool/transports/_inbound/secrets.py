"""Passwords and OAuth 2.0 tokens for the inbound transports, fetched by reference at every
(re)connect on the worker thread (the shared ``transports._secrets`` does the work)."""

from __future__ import annotations

import base64

from .._secrets import oauthbearer as sasl_oauthbearer
from .._secrets import password, token
from .._secrets import xoauth2 as sasl_xoauth2
from .settings import CommonSettings

__all__ = ["Credentials", "b64", "sasl_oauthbearer", "sasl_xoauth2"]


class Credentials:
    """Resolves the secret of one transport section (password or bearer token)."""

    def __init__(self, settings: CommonSettings) -> None:
        self._settings = settings

    def secret(self) -> str:
        """The password (``auth = "login"`` / ``"apop"``) or a fresh bearer token.

        Called on the worker thread at every (re)connect, so an expired token is replaced.
        Raises ``MapiError(MAPI_E_LOGON_FAILED)`` naming the setting when it cannot.
        """
        s = self._settings
        if s.uses_token:
            return token(s, s.connect_timeout)
        return password(s, s.connect_timeout)


def b64(data: bytes) -> str:
    """Base64 without line breaks, as SASL wants it."""
    return base64.b64encode(data).decode("ascii")

"""Where the smtp transport's password or OAuth token comes from, looked up again at every
(re)connect. The work is done by the shared ``transports._secrets`` module, in a worker
thread so that a slow helper command never blocks the event loop."""

from __future__ import annotations

import asyncio

from ...mapi import MAPI_E_LOGON_FAILED, MapiError
from .. import _secrets
from .._secrets import COMMAND_TIMEOUT
from .settings import SmtpSettings

__all__ = [
    "COMMAND_TIMEOUT",
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

"""Where passwords and OAuth tokens come from: an environment variable, a file, a shell
command, or a Python callable, looked up again at every (re)connect so that a rotated
password or a refreshed token is picked up without restarting anything.

Failures raise ``MapiError(MAPI_E_LOGON_FAILED)`` whose text names the setting and never
contains the secret, the command's output or its error stream (which may echo it).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import signal
from pathlib import Path

from ...mapi import MAPI_E_LOGON_FAILED, MapiError
from .settings import SmtpSettings

#: How long a password or token command may run. An OAuth helper may have to refresh
#: a token over the network, so this is generous, but it is a deadline (peers.md §4.8).
COMMAND_TIMEOUT = 60.0


def _first_line(data: bytes, key: str) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise MapiError(MAPI_E_LOGON_FAILED, f"{key}: the secret is not valid UTF-8") from exc
    # Helpers print a trailing newline; the secret is the first line, whitespace kept inside.
    line = text.splitlines()[0] if text else ""
    if not line.strip():
        raise MapiError(MAPI_E_LOGON_FAILED, f"{key}: produced an empty secret")
    return line.strip("\r\n")


async def run_secret_command(command: str, key: str, limit: float = COMMAND_TIMEOUT) -> str:
    """Run ``command`` through the shell; its first line of standard output is the secret.

    Raises ``MapiError(MAPI_E_LOGON_FAILED)`` on a non-zero exit, a timeout (the command
    is killed) or empty output. The command's standard error is passed through to ours,
    so the helper's own diagnostics stay visible without us ever holding them.
    """
    try:
        process = await asyncio.create_subprocess_shell(
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            # Its own process group, so a timeout kills the helper's children too (a
            # surviving child would hold the pipe open and hang us anyway).
            start_new_session=True,
        )
    except OSError as exc:
        raise MapiError(MAPI_E_LOGON_FAILED, f"{key}: cannot start the command") from exc
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise MapiError(
            MAPI_E_LOGON_FAILED, f"{key}: the command did not finish within {limit:g} s"
        ) from exc
    if process.returncode != 0:
        raise MapiError(
            MAPI_E_LOGON_FAILED, f"{key}: the command exited with status {process.returncode}"
        )
    return _first_line(stdout, key)


def read_secret_file(path: str, key: str) -> str:
    """The first line of the file at ``path`` (``~`` expanded)."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise MapiError(
            MAPI_E_LOGON_FAILED, f"{key}: cannot read {path!r} ({exc.strerror})"
        ) from exc
    return _first_line(data, key)


def read_secret_env(name: str, key: str) -> str:
    """The value of the environment variable ``name``."""
    value = os.environ.get(name)
    if not value:
        raise MapiError(
            MAPI_E_LOGON_FAILED,
            f"{key}: the environment variable {name!r} is not set or empty",
        )
    return value


async def call_token_callable(spec: str) -> str:
    """Import ``package.module:function``, call it with no arguments (awaiting the result
    if it is awaitable) and return the token string."""
    module_name, _, attr_path = spec.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            target = getattr(target, attr)
    except (ImportError, AttributeError) as exc:
        raise MapiError(
            MAPI_E_LOGON_FAILED, f"token_callable: cannot import {spec!r}: {exc}"
        ) from exc
    if not callable(target):
        raise MapiError(MAPI_E_LOGON_FAILED, f"token_callable: {spec!r} is not callable")
    try:
        result = target()
        if inspect.isawaitable(result):
            result = await result
    except MapiError:
        raise
    except Exception as exc:
        # The exception text is dropped on purpose: a token helper may put the token in it.
        raise MapiError(
            MAPI_E_LOGON_FAILED, f"token_callable: {spec!r} raised {type(exc).__name__}"
        ) from None
    if isinstance(result, bytes):
        result = result.decode()
    if not isinstance(result, str) or not result.strip():
        raise MapiError(MAPI_E_LOGON_FAILED, f"token_callable: {spec!r} returned no token")
    return result.strip()


async def resolve_password(settings: SmtpSettings) -> str:
    """The password from whichever source the settings name. Raises ``MapiError``
    (``MAPI_E_LOGON_FAILED``) when there is none or it cannot be read."""
    if settings.password is not None:
        return settings.password
    if settings.password_env is not None:
        return read_secret_env(settings.password_env, "password_env")
    if settings.password_file is not None:
        return read_secret_file(settings.password_file, "password_file")
    if settings.password_command is not None:
        return await run_secret_command(settings.password_command, "password_command")
    raise MapiError(MAPI_E_LOGON_FAILED, "no password source is configured")


async def resolve_token(settings: SmtpSettings) -> str:
    """A fresh OAuth access token from ``token_command`` or ``token_callable``."""
    if settings.token_command is not None:
        return await run_secret_command(settings.token_command, "token_command")
    if settings.token_callable is not None:
        return await call_token_callable(settings.token_callable)
    raise MapiError(MAPI_E_LOGON_FAILED, "no token source is configured")

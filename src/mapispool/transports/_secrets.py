"""Passwords and OAuth 2.0 tokens for every transport: fetched by reference (an environment
variable, a file, a shell command or a Python callable) at every (re)connect, so a rotated
password or a refreshed token is picked up without restarting anything; and the SASL
initial responses that carry a token (XOAUTH2, OAUTHBEARER).

Functions here block (files, subprocesses): call them from a worker thread. Failures raise
``MapiError(MAPI_E_LOGON_FAILED)`` whose text names the setting and never contains the
secret, the command's output or an exception text that might quote it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import signal
import subprocess
from pathlib import Path
from typing import Protocol

from ..mapi import MAPI_E_LOGON_FAILED, MapiError

#: How long a password or token command may run. An OAuth helper may have to refresh a
#: token over the network, so this is generous, but it is a deadline (peers.md §4.8).
COMMAND_TIMEOUT = 60.0


class SecretSources(Protocol):
    """The settings that say where a transport's secret comes from (at most one is set)."""

    @property
    def password_env(self) -> str | None: ...
    @property
    def password_file(self) -> str | None: ...
    @property
    def password_command(self) -> str | None: ...
    @property
    def token_command(self) -> str | None: ...
    @property
    def token_callable(self) -> str | None: ...


def _fail(message: str) -> MapiError:
    return MapiError(MAPI_E_LOGON_FAILED, message)


def first_line(data: bytes, key: str) -> str:
    """The secret in a helper's output or a file: its first line, whitespace kept inside."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise _fail(f"{key}: the secret is not valid UTF-8") from None
    line = text.splitlines()[0] if text else ""
    if not line.strip():
        raise _fail(f"{key}: produced an empty secret")
    return line.strip("\r\n")


def read_env(name: str, key: str = "password_env") -> str:
    """The value of the environment variable ``name``."""
    value = os.environ.get(name)
    if not value:
        raise _fail(
            f"{key}: the environment variable {name!r} is not set or empty; "
            "export it before starting the spooler"
        )
    return value


def read_file(path: str, key: str = "password_file") -> str:
    """The first line of the file at ``path`` (``~`` expanded)."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise _fail(f"{key}: cannot read {path!r} ({exc.strerror})") from None
    return first_line(data, key)


def run_command(command: str, key: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run ``command`` through the shell; the first line of its standard output is the
    secret. A non-zero exit, a timeout (the command and its children are killed) or an
    empty output is ``MAPI_E_LOGON_FAILED``. Its standard error goes to ours, so the
    helper's own diagnostics stay visible without this process ever holding them."""
    try:
        # Its own session, so that a timeout kills the helper's children too (a surviving
        # child would hold the pipe open and hang us anyway).
        process = subprocess.Popen(
            command,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError:
        raise _fail(f"{key}: cannot start the command") from None
    try:
        stdout, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise _fail(f"{key}: the command did not finish within {timeout:g} s") from None
    if process.returncode != 0:
        raise _fail(f"{key}: the command exited with status {process.returncode}")
    return first_line(stdout, key)


def call_callable(spec: str, key: str = "token_callable") -> str:
    """Import ``package.module:function``, call it with no arguments (running it to the end
    if it returns an awaitable) and return the token string."""
    module_name, _, attr_path = spec.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            target = getattr(target, attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise _fail(f"{key}: cannot import {spec!r}: {type(exc).__name__}") from None
    if not callable(target):
        raise _fail(f"{key}: {spec!r} is not callable")
    try:
        result = target()
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
    except MapiError:
        raise
    except Exception as exc:
        # The exception text is dropped on purpose: a token helper may put the token in it.
        raise _fail(f"{key}: {spec!r} raised {type(exc).__name__}") from None
    if isinstance(result, bytes):
        result = result.decode()
    if not isinstance(result, str) or not result.strip():
        raise _fail(f"{key}: {spec!r} returned no token string")
    return result.strip()


async def _await(awaitable: object) -> object:
    return await awaitable  # type: ignore[misc]


def password(sources: SecretSources, timeout: float = COMMAND_TIMEOUT) -> str:
    """The password from whichever source the settings name."""
    if sources.password_env:
        return read_env(sources.password_env)
    if sources.password_file:
        return read_file(sources.password_file)
    if sources.password_command:
        return run_command(sources.password_command, "password_command", timeout)
    raise _fail(
        "no password source is configured; set password_env, password_file or password_command"
    )


def token(sources: SecretSources, timeout: float = COMMAND_TIMEOUT) -> str:
    """A fresh OAuth access token from ``token_command`` or ``token_callable``."""
    if sources.token_command:
        return run_command(sources.token_command, "token_command", timeout)
    if sources.token_callable:
        return call_callable(sources.token_callable)
    raise _fail("no token source is configured; set token_command or token_callable")


def _gs2_name(username: str) -> str:
    # RFC 5801 §4: "," and "=" in the authzid are written =2C and =3D.
    return username.replace("=", "=3D").replace(",", "=2C")


def xoauth2(username: str, token: str) -> bytes:
    """The XOAUTH2 initial client response (Google, Microsoft), not base64-encoded."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(username: str, token: str, host: str, port: int) -> bytes:
    """The OAUTHBEARER initial client response (RFC 7628 §3.1), not base64-encoded."""
    gs2 = f"n,a={_gs2_name(username)},"
    return f"{gs2}\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()

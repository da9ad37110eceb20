"""Passwords and OAuth 2.0 tokens, fetched by reference at every (re)connect.

Secrets are never stored on the logon longer than one login and never appear in an
exception, a log line or a status string: errors name the setting, not its value.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import os
import signal
import subprocess
from pathlib import Path

from ...mapi import MAPI_E_LOGON_FAILED, MapiError
from .settings import CommonSettings


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
            if s.token_command:
                return _run_command(s.token_command, "token_command", s.connect_timeout)
            assert s.token_callable is not None
            return _call(s.token_callable)
        if s.password_env:
            value = os.environ.get(s.password_env)
            if not value:
                raise MapiError(
                    MAPI_E_LOGON_FAILED,
                    f"password_env: the environment variable {s.password_env!r} is not set "
                    "or is empty; export it before starting the spooler",
                )
            return value
        if s.password_file:
            try:
                text = Path(s.password_file).expanduser().read_text(encoding="utf-8")
            except OSError as exc:
                raise MapiError(
                    MAPI_E_LOGON_FAILED,
                    f"password_file: cannot read {s.password_file!r} ({exc.strerror})",
                ) from None
            value = text.rstrip("\r\n")
            if not value:
                raise MapiError(MAPI_E_LOGON_FAILED, f"password_file {s.password_file!r} is empty")
            return value
        assert s.password_command is not None
        return _run_command(s.password_command, "password_command", s.connect_timeout)


def _run_command(command: str, key: str, timeout: float) -> str:
    # Run by the shell, as the smtp transport does, so that the same command line works
    # in every section; in its own session so that a timeout kills its children too.
    try:
        process = subprocess.Popen(
            command,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        raise MapiError(MAPI_E_LOGON_FAILED, f"{key}: cannot start the command") from None
    try:
        stdout, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise MapiError(
            MAPI_E_LOGON_FAILED, f"{key}: the command did not finish within {timeout:g} s"
        ) from None
    if process.returncode != 0:
        raise MapiError(MAPI_E_LOGON_FAILED, f"{key} exited with status {process.returncode}")
    # Only the first line counts: helpers such as `pass` print metadata after it.
    lines = stdout.decode("utf-8", "replace").splitlines()
    value = lines[0].strip() if lines else ""
    if not value:
        raise MapiError(MAPI_E_LOGON_FAILED, f"{key} printed nothing")
    return value


def _call(spec: str) -> str:
    module_name, _, attr = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attr)
        value = function()
    except Exception as exc:
        # The callable's own message might quote a token; keep only the type.
        raise MapiError(
            MAPI_E_LOGON_FAILED, f"token_callable {spec!r} failed ({type(exc).__name__})"
        ) from None
    if not isinstance(value, str) or not value:
        raise MapiError(MAPI_E_LOGON_FAILED, f"token_callable {spec!r} returned no token string")
    return value


def sasl_xoauth2(username: str, token: str) -> bytes:
    """The XOAUTH2 initial client response (Google/Microsoft), not base64-encoded."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01".encode()


def sasl_oauthbearer(username: str, token: str, host: str, port: int) -> bytes:
    """The OAUTHBEARER initial client response (RFC 7628 §3.1), not base64-encoded."""
    return f"n,a={username},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()


def b64(data: bytes) -> str:
    """Base64 without line breaks, as SASL wants it."""
    return base64.b64encode(data).decode("ascii")

"""Translation of socket, TLS and protocol-library errors into ``MapiError``.

Called where the foreign error arises (in the logon, around each worker call). The caller
chains the result (``raise translate_error(...) from exc``). Every text goes through
``redact`` so that a secret echoed by a library or a server never leaves this module.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable

from ...mapi import (
    MAPI_E_CALL_FAILED,
    MAPI_E_LOGON_FAILED,
    MAPI_E_NETWORK_ERROR,
    MAPI_E_TIMEOUT,
    MAPI_E_TOO_BIG,
    MapiError,
)
from .limits import LimitExceeded

#: Seconds the spooler is asked to wait before retrying after a network failure.
RETRY_AFTER_NETWORK = 60.0


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-trivial secret replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def _reply_of(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text.strip()


def translate_error(
    exc: BaseException,
    *,
    doing: str,
    where: str,
    secrets: Iterable[str] = (),
    protocol_errors: tuple[type[BaseException], ...] = (),
    auth_errors: tuple[type[BaseException], ...] = (),
    abort_errors: tuple[type[BaseException], ...] = (),
) -> MapiError:
    """The ``MapiError`` for ``exc``, raised while ``doing`` (e.g. ``"logging in"``) with
    the server at ``where`` (``host:port``).

    - timeouts → ``MAPI_E_TIMEOUT``;
    - certificate failures → ``MAPI_E_NETWORK_ERROR`` with the fix in the text;
    - ``auth_errors`` (a refused login) → ``MAPI_E_LOGON_FAILED`` with the reply;
    - ``abort_errors``, other TLS and OS errors → ``MAPI_E_NETWORK_ERROR`` (retry later);
    - ``protocol_errors`` (a ``NO``/``BAD``/``-ERR`` reply) → ``MAPI_E_CALL_FAILED``;
    - an existing ``MapiError`` is returned unchanged.
    """
    secrets = list(secrets)
    if isinstance(exc, MapiError):
        return exc
    reply = redact(_reply_of(exc), secrets) or None
    if isinstance(exc, TimeoutError | socket.timeout):
        return MapiError(
            MAPI_E_TIMEOUT,
            f"timed out {doing} ({where}); raise timeout/connect_timeout if the server is slow",
            retry_after=RETRY_AFTER_NETWORK,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = getattr(exc, "verify_message", None) or reply or "verification failed"
        return MapiError(
            MAPI_E_NETWORK_ERROR,
            f"the TLS certificate of {where} is not trusted ({reason}); set ca_file to the "
            "CA that signed it, or fix the host name",
            retry_after=RETRY_AFTER_NETWORK,
        )
    if auth_errors and isinstance(exc, auth_errors):
        return MapiError(
            MAPI_E_LOGON_FAILED,
            f"the server refused the login {doing} ({where}); check username and the secret",
            reply=reply,
        )
    if abort_errors and isinstance(exc, abort_errors):
        return MapiError(
            MAPI_E_NETWORK_ERROR,
            f"connection lost {doing} ({where})",
            reply=reply,
            retry_after=RETRY_AFTER_NETWORK,
        )
    if protocol_errors and isinstance(exc, protocol_errors):
        return MapiError(MAPI_E_CALL_FAILED, f"the server refused {doing} ({where})", reply=reply)
    if isinstance(exc, ssl.SSLError):
        return MapiError(
            MAPI_E_NETWORK_ERROR,
            f"TLS failed {doing} ({where}): {reply}; check tls and port",
            retry_after=RETRY_AFTER_NETWORK,
        )
    if isinstance(exc, OSError | EOFError):
        detail = getattr(exc, "strerror", None) or reply or type(exc).__name__
        return MapiError(
            MAPI_E_NETWORK_ERROR,
            f"network error {doing} ({where}): {detail}",
            retry_after=RETRY_AFTER_NETWORK,
        )
    return MapiError(
        MAPI_E_CALL_FAILED, f"unexpected {type(exc).__name__} {doing} ({where})", reply=reply
    )


def limit_error(exc: LimitExceeded, *, where: str) -> MapiError:
    """The ``MapiError`` for a crossed response bound (the caller has dropped the
    connection): ``MAPI_E_TIMEOUT`` for the deadline, ``MAPI_E_TOO_BIG`` for a size or
    count; the text names the setting that bounds it."""
    hresult = MAPI_E_TIMEOUT if exc.timed_out else MAPI_E_TOO_BIG
    return MapiError(
        hresult,
        f"{exc.text} ({where}); the connection was dropped. If the server is right, "
        f"raise {exc.setting}",
        retry_after=RETRY_AFTER_NETWORK,
    )

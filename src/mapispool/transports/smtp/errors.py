"""Translating socket, TLS and aiosmtplib errors into ``MapiError`` at the transport's
boundary, with the status-row state each one implies."""

from __future__ import annotations

import ssl

from ...mapi import (
    MAPI_E_LOGON_FAILED,
    MAPI_E_NETWORK_ERROR,
    MAPI_E_WAIT,
    STATUS_FAILURE,
    STATUS_OFFLINE,
    MapiError,
)


class SmtpError(MapiError):
    """A ``MapiError`` raised by the smtp transport.

    ``status_bit`` is the state the transport's status row should show after it:
    ``STATUS_OFFLINE`` (the server is unreachable or busy; it will likely come back) or
    ``STATUS_FAILURE`` (configuration or credentials must change). ``uncertain`` is true
    when the connection died after the end of data went out and before any reply.
    """

    def __init__(
        self,
        hresult: int,
        message: str = "",
        *,
        retry_after: float | None = None,
        reply: str | None = None,
        status_bit: int = STATUS_OFFLINE,
        uncertain: bool = False,
    ) -> None:
        super().__init__(hresult, message, retry_after=retry_after, reply=reply)
        self.status_bit = status_bit
        self.uncertain = uncertain


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` in ``exc``'s cause chain, if any."""
    for item in _chain(exc):
        if isinstance(item, ssl.SSLError):
            return item
    return None


def network_error(exc: BaseException, where: str) -> SmtpError:
    """An ``SmtpError`` for a failure of the connection itself (refused, reset, timed out,
    TLS): ``MAPI_E_NETWORK_ERROR``, retried later. Certificate and TLS protocol errors
    are configuration problems (``STATUS_FAILURE``) and say which setting to change."""
    tls = tls_failure(exc)
    if isinstance(tls, ssl.SSLCertVerificationError):
        detail = tls.verify_message or tls.reason or "verification failed"
        return SmtpError(
            MAPI_E_NETWORK_ERROR,
            f"{where}: the server's TLS certificate did not verify ({detail}); "
            "set ca_file to the CA that issued it, or verify = false to skip the check "
            "(insecure)",
            status_bit=STATUS_FAILURE,
        )
    if tls is not None:
        return SmtpError(
            MAPI_E_NETWORK_ERROR,
            f"{where}: TLS setup failed ({tls.reason or type(tls).__name__}); check that "
            'tls matches the port ("implicit" for 465, "starttls" for 587)',
            status_bit=STATUS_FAILURE,
        )
    if isinstance(exc, TimeoutError):
        return SmtpError(MAPI_E_NETWORK_ERROR, f"{where}: timed out")
    return SmtpError(MAPI_E_NETWORK_ERROR, f"{where}: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    for item in _chain(exc):
        if isinstance(item, OSError) and item.strerror:
            return item.strerror
    return str(exc) or type(exc).__name__


def server_busy(reply: str, where: str) -> SmtpError:
    """The server answered 4xx (421 included) to a whole-message command: retry later."""
    return SmtpError(MAPI_E_WAIT, f"{where}: the server asked to try again later", reply=reply)


def auth_failed(reply: str) -> SmtpError:
    """The server refused the credentials (535 and other 5xx to AUTH)."""
    return SmtpError(
        MAPI_E_LOGON_FAILED,
        "authentication failed; check username and the password or token source",
        reply=reply,
        status_bit=STATUS_FAILURE,
    )


def misconfigured(message: str, *, hresult: int = MAPI_E_NETWORK_ERROR) -> SmtpError:
    """A problem only a change of settings fixes; the message says which."""
    return SmtpError(hresult, message, status_bit=STATUS_FAILURE)

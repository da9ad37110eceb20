"""Exit codes and the one-line error messages of the command line.

The codes are sendmail's (BSD ``sysexits.h``), so that cron, mutt and git send-email tell
a temporary failure (75: try again later) from a configuration error (78) from bad input.
"""

from __future__ import annotations

from ..mapi import (
    MAPI_E_BUSY,
    MAPI_E_CORRUPT_DATA,
    MAPI_E_INVALID_PARAMETER,
    MAPI_E_LOGON_FAILED,
    MAPI_E_NETWORK_ERROR,
    MAPI_E_NO_RECIPIENTS,
    MAPI_E_NOT_FOUND,
    MAPI_E_TIMEOUT,
    MAPI_E_UNCONFIGURED,
    MAPI_E_WAIT,
    MapiError,
)

EX_OK = 0
EX_FAILURES = 1  # the command ran, but some message failed (flush)
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_CONFIG = 78

_CODES: dict[int, int] = {
    MAPI_E_UNCONFIGURED: EX_CONFIG,
    MAPI_E_BUSY: EX_TEMPFAIL,
    MAPI_E_NETWORK_ERROR: EX_TEMPFAIL,
    MAPI_E_WAIT: EX_TEMPFAIL,
    MAPI_E_TIMEOUT: EX_TEMPFAIL,
    MAPI_E_INVALID_PARAMETER: EX_DATAERR,
    MAPI_E_NO_RECIPIENTS: EX_USAGE,
    MAPI_E_CORRUPT_DATA: EX_DATAERR,
    MAPI_E_NOT_FOUND: EX_NOINPUT,
    MAPI_E_LOGON_FAILED: EX_UNAVAILABLE,
}


def exit_code(exc: MapiError) -> int:
    """The sysexits code that best tells a caller what to do about ``exc``."""
    return _CODES.get(exc.hresult, EX_SOFTWARE)


def describe(exc: MapiError, *, verbose: bool = False) -> str:
    """One line for a person: the message, with the HRESULT's name when asked for."""
    text = exc.message or exc.name
    if exc.reply and exc.reply not in text:
        text += f" (server said: {exc.reply})"
    return f"{text} [{exc.name}]" if verbose else text

"""Exit codes and the one-line error messages of the command line.

The codes are sendmail's (BSD ``sysexits.h``), so that cron, mutt and git send-email tell
a temporary failure (75: try again later) from a configuration error (78) from bad input.

Everything that keeps the store from taking a message for now but that a person or time
fixes (a full disk, a read-only or damaged store, a daemon that went away mid-request, a
busy store) is 75: the caller keeps the message and tries again. A damaged store is 75
rather than 78 for the same reason: the message must not be thrown away meanwhile.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable

from ..mapi import (
    MAPI_E_BUSY,
    MAPI_E_CORRUPT_DATA,
    MAPI_E_CORRUPT_STORE,
    MAPI_E_DISK_ERROR,
    MAPI_E_INVALID_PARAMETER,
    MAPI_E_LOGON_FAILED,
    MAPI_E_NETWORK_ERROR,
    MAPI_E_NO_ACCESS,
    MAPI_E_NO_RECIPIENTS,
    MAPI_E_NOT_ENOUGH_DISK,
    MAPI_E_NOT_FOUND,
    MAPI_E_TIMEOUT,
    MAPI_E_UNCONFIGURED,
    MAPI_E_WAIT,
    MapiError,
)
from ..mapi.errors import HResult

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
    MAPI_E_NOT_ENOUGH_DISK: EX_TEMPFAIL,  # disk full
    MAPI_E_DISK_ERROR: EX_TEMPFAIL,  # an I/O error from the store
    MAPI_E_NO_ACCESS: EX_TEMPFAIL,  # a read-only store or file system
    MAPI_E_CORRUPT_STORE: EX_TEMPFAIL,  # a damaged store: restore it, keep the message
    HResult.MAPI_E_END_OF_SESSION: EX_TEMPFAIL,  # the daemon went away mid-request
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


class OneLineLogHandler(logging.Handler):
    """The library's warnings and errors during a command, one line each on stderr
    (``mapispool: warning: ...: <the error>``); the traceback only with ``-v``, whose
    value is read when a record comes (``-v`` may follow the subcommand)."""

    def __init__(self, verbose: Callable[[], bool]) -> None:
        super().__init__(logging.DEBUG)
        self._verbose = verbose

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno < logging.WARNING and not self._verbose():
                return
            text = record.getMessage()
            error = record.exc_info[1] if record.exc_info else None
            if error is not None:
                shown = describe(error) if isinstance(error, MapiError) else repr(error)
                if shown not in text:
                    text += f": {shown}"
            line = f"mapispool: {record.levelname.lower()}: {' '.join(text.split())}\n"
            if error is not None and self._verbose():
                line += "".join(traceback.format_exception(error))
            sys.stderr.write(line)
            sys.stderr.flush()
        except Exception:  # logging must never end a command
            self.handleError(record)


def install_log_handler(verbose: Callable[[], bool]) -> None:
    """Route the ``mapispool`` loggers through ``OneLineLogHandler`` for this command
    (``serve`` replaces it with its structured log)."""
    logger = logging.getLogger("mapispool")
    logger.handlers[:] = [OneLineLogHandler(verbose)]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

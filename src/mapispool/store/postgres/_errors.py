"""psycopg's errors translated into one-line ``MapiError``s that name the store, the cause
and what to do (DESIGN §8): never a driver traceback.

The database gone (restarted, unreachable, a connection cut) is ``MAPI_E_NETWORK_ERROR``,
which the command line maps to exit 75 ("try again later"): ``submit`` and the sendmail
drop-in then leave the message with their caller, and a worker retries with backoff.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from ...mapi import (
    MAPI_E_BUSY,
    MAPI_E_CORRUPT_STORE,
    MAPI_E_DISK_ERROR,
    MAPI_E_LOGON_FAILED,
    MAPI_E_NETWORK_ERROR,
    MAPI_E_NO_ACCESS,
    MAPI_E_NOT_ENOUGH_DISK,
    MapiError,
)


def public_url(url: str) -> str:
    """``url`` without a password, for messages and ``mapispool status``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc}" if user else netloc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def translate(exc: BaseException, what: str, where: str) -> MapiError:
    """The ``MapiError`` for a database error met while doing ``what`` on the store
    ``where`` (a URL without password, plus the schema)."""
    reason = _first_line(exc)
    if isinstance(exc, pg_errors.InvalidPassword | pg_errors.InvalidAuthorizationSpecification):
        return MapiError(
            MAPI_E_LOGON_FAILED,
            f"{what}: PostgreSQL refused the login to {where} ({reason}); check the user in "
            "the URL and store_password_env / _file / _command, PGPASSWORD or ~/.pgpass",
        )
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return MapiError(
            MAPI_E_NO_ACCESS,
            f"{what}: the PostgreSQL user may not use {where} ({reason}); grant it the "
            "rights on the database and schema (CREATE, USAGE) or use another store_schema",
        )
    if isinstance(exc, pg_errors.DiskFull):
        return MapiError(
            MAPI_E_NOT_ENOUGH_DISK, f"{what}: the PostgreSQL server of {where} is out of disk"
        )
    if isinstance(exc, pg_errors.LockNotAvailable | pg_errors.DeadlockDetected):
        return MapiError(MAPI_E_BUSY, f"{what}: {where} is busy ({reason}); try again")
    if isinstance(exc, pg_errors.DataCorrupted | pg_errors.IndexCorrupted):
        return MapiError(MAPI_E_CORRUPT_STORE, f"{what}: {where} is damaged ({reason})")
    if isinstance(exc, PoolTimeout | psycopg.OperationalError | psycopg.InterfaceError):
        return MapiError(
            MAPI_E_NETWORK_ERROR,
            f"{what}: cannot reach the PostgreSQL store {where} ({reason}); check that the "
            "server runs and the URL is right, then try again",
        )
    return MapiError(MAPI_E_DISK_ERROR, f"{what}: the PostgreSQL store {where}: {reason}")

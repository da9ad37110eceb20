"""The profile settings of a PostgreSQL store, checked without psycopg (an optional extra):
the URL (``postgres_url_problem``) and the lease of a worker's claims (``parse_lease``)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

#: The shortest and the longest lease a profile may set. Workers beat three times per
#: lease, so a lease under a second would mostly measure scheduling noise; a lease over
#: an hour would leave a dead worker's messages stuck for that long.
MIN_LEASE = 1.0
MAX_LEASE = 3600.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m)?\s*$")


def is_postgres_url(store: str) -> bool:
    """True for a libpq URL (``postgresql://`` or ``postgres://``)."""
    return store.startswith(("postgresql://", "postgres://"))


def postgres_url_problem(url: str) -> str | None:
    """What is wrong with a PostgreSQL store URL, in words, or None. A password written
    into the URL is refused: secrets come by reference (``store_password_env``, ...)."""
    try:
        parts = urlsplit(url)
        _port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc}); write postgresql://USER@HOST:PORT/DBNAME"
    if parts.password is not None:
        return (
            "holds a password; remove it from the URL and use store_password_env,"
            " store_password_file, store_password_command or libpq's PGPASSWORD / ~/.pgpass"
        )
    if "password=" in parts.query:
        return (
            "holds a password in its query; use store_password_env, store_password_file,"
            " store_password_command or libpq's PGPASSWORD / ~/.pgpass"
        )
    return None


def parse_lease(value: object) -> float | None:
    """``store_lease`` in seconds: a number of seconds, or a string ``"30s"`` / ``"2m"``
    (a bare number in a string is seconds); None when not set. ``ValueError`` with the
    fix for anything else, or for a lease outside 1 s .. 1 hour."""
    if value is None:
        return None
    found = _DURATION.match(value) if isinstance(value, str) else None
    if found:
        seconds = float(found[1]) * (60.0 if found[2] == "m" else 1.0)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValueError(f'must be a duration like "30s" or "2m", not {value!r}')
    if not MIN_LEASE <= seconds <= MAX_LEASE:
        raise ValueError(f'must be between "1s" and "60m" (default "30s"), not {value!r}')
    return seconds

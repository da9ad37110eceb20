"""The warning about secrets written inline in a profile that other users may read (a
warning, not an error: the profile still works)."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from typing import Any

#: Setting names that hold a secret itself (not a reference to one such as password_env).
_SECRET_NAME = re.compile(
    r"(^|_)(password|passwd|passphrase|secret|token|api_?key|private_key|credentials?)$",
    re.IGNORECASE,
)


def inline_secrets(data: Any, prefix: str = "") -> list[str]:
    """The dotted keys of ``data`` whose name says they hold a secret with a value."""
    found: list[str] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, Mapping):
                found += inline_secrets(value, f"{dotted}.")
            elif _SECRET_NAME.search(str(key)) and value not in (None, ""):
                found.append(dotted)
    return found


def warn_if_exposed(path: str, data: Mapping[str, Any]) -> bool:
    """Log a warning when a profile that others may read holds secrets inline; True if
    it did. (A warning, not an error: the profile still works.)"""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    secrets = inline_secrets(data)
    if not secrets or not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return False
    import logging  # only when there is something to say: a sendmail process seldom has

    logging.getLogger("mapispool.profile").warning(
        "%s holds secrets (%s) and other users may read it (mode %s); run 'chmod 600 %s', "
        "or keep the secrets outside the profile (password_env, password_file, "
        "password_command)",
        path,
        ", ".join(secrets),
        stat.filemode(mode),
        path,
    )
    return True

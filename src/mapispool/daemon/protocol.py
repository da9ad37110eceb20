"""The control socket's wire format: one JSON object per line, both ways.

A request is ``{"op": NAME, "params": {...}}``. The daemon answers with any number of
``{"event": "progress", ...}`` lines, then exactly one ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"hresult": N, "message": TEXT}}``; then the connection may carry
the next request.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..mapi import MAPI_E_CALL_FAILED, MapiError

if TYPE_CHECKING:
    from ..profile import Profile

#: Seconds a client waits for the daemon to take the news of a message it stored itself
#: (the ``submitted`` request, answered at once by a running daemon). A daemon that is
#: stopped (SIGSTOP) or wedged must not hang sendmail, git or cron: the message is in the
#: store already, so the client warns and succeeds, and the daemon finds it later.
WAKE_TIMEOUT = 10.0

#: Seconds a client waits for the daemon's answer to a request that only reads (status,
#: queue and folder listings). A stopped or wedged daemon must not hang them: past the
#: deadline the client reads the store itself (the daemon keeps it current).
READ_TIMEOUT = 10.0

#: Requests that only read, answered from the store when the daemon does not answer.
READ_ONLY_OPS = frozenset({"status", "queue_list", "queue_show", "folder_list",
                           "folder_show", "ping"})  # fmt: skip

#: The longest request line the daemon reads (asyncio's default is 64 KiB). Messages do not
#: travel on the socket (clients write them to the store), so requests stay small; a
#: ``submit`` request from an older client carries its message base64-encoded.
MAX_REQUEST = 4 * 1024 * 1024

#: AF_UNIX paths are limited to about 108 bytes on Linux; longer ones cannot be bound.
MAX_SOCKET_PATH = 100


def socket_path(store_path: Path) -> Path:
    """Where the daemon of the store at ``store_path`` listens: next to the store's real
    file (symlinks and ``..`` resolved), so a client that names the store through a
    symlink finds the daemon that named it directly, and the other way round."""
    real = Path(os.path.realpath(store_path))
    return real.with_name(real.name + ".sock")


def control_socket(profile: Profile, worker: str = "") -> Path:
    """Where the daemon of ``profile``'s store listens. A SQLite store: next to its file
    (``socket_path``). A PostgreSQL store has no file and may have many workers, on many
    machines: each ``mapispool serve`` listens in the user's runtime directory
    (``$XDG_RUNTIME_DIR/mapispool``, else ``mapispool-UID`` in the temporary directory),
    under a name keyed by the store's URL (which holds no password), its schema and the
    worker's name. Commands do not use it: they work on the database (submissions wake
    the workers through it)."""
    if not profile.store_is_postgres:
        return socket_path(profile.store_path())
    key = f"{profile.store}\n{profile.store_schema or ''}\n{worker}".encode()
    return runtime_dir() / f"pg-{hashlib.sha256(key).hexdigest()[:20]}.sock"


def runtime_dir() -> Path:
    """The user's private directory for sockets, created (mode 0700) when missing."""
    import tempfile  # here: the sendmail process that imports this module never needs it

    base = os.environ.get("XDG_RUNTIME_DIR")
    path = (
        Path(base) / "mapispool"
        if base
        else Path(tempfile.gettempdir()) / (f"mapispool-{os.geteuid()}")
    )
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def encode(message: dict[str, Any]) -> bytes:
    """One message as a line of compact JSON."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line; a line that is not a JSON object is a protocol error."""
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise MapiError(MAPI_E_CALL_FAILED, f"the control socket sent bad JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise MapiError(MAPI_E_CALL_FAILED, "the control socket sent something not an object")
    return value


def error_message(exc: MapiError) -> dict[str, Any]:
    """The failure answer carrying a ``MapiError`` across the socket."""
    return {"ok": False, "error": {"hresult": int(exc.hresult), "message": exc.message}}


def raise_error(error: dict[str, Any]) -> None:
    """Re-raise a failure answer as the ``MapiError`` it was in the daemon."""
    hresult = int(error.get("hresult", MAPI_E_CALL_FAILED))
    raise MapiError(hresult, str(error.get("message", "")))

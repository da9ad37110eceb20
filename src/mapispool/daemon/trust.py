"""Whether the socket at ``<store>.sock`` belongs to our own daemon.

A store may sit in a directory other users can write to; anyone there can put a socket at
the path a client looks for. Before a client sends a byte it checks the socket file's
owner, and after connecting (on Linux) the listening process's uid (``SO_PEERCRED``):
both must be this process's effective uid or root. A socket that fails is never spoken
to; the caller goes on without a daemon (mail is written to the store, never handed over).
"""

from __future__ import annotations

# The C socket module: ``socket.py`` builds its enums and imports ``selectors`` at import,
# about half of what mapispool-sendmail's client imports; these checks need neither.
import _socket
import os
import stat
import struct

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: mapispool-sendmail's
if TYPE_CHECKING:  # client imports this module, and each import costs it
    from pathlib import Path

#: ``struct ucred`` as ``SO_PEERCRED`` returns it on Linux: pid, uid, gid.
_UCRED = struct.Struct("3i")


def trusted_uids() -> frozenset[int]:
    """The uids whose daemon a client talks to: its own and root's."""
    return frozenset({os.geteuid(), 0})


def socket_file_problem(path: str | Path) -> str | None:
    """Why the file at ``path`` is not our daemon's socket, or None when it may be.

    Does not follow a symlink at ``path`` itself (a daemon never makes one there)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"cannot look at {path}: {exc.strerror}"
    if not stat.S_ISSOCK(info.st_mode):
        return f"{path} is not a socket"
    if info.st_uid not in trusted_uids():
        return f"{path} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()})"
    return None


def peer_problem(sock: _socket.socket) -> str | None:
    """Why the process listening at the other end of ``sock`` is not ours, or None.

    Where the kernel cannot tell (no ``SO_PEERCRED``), the file owner check stands alone."""
    option = getattr(_socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        raw = sock.getsockopt(_socket.SOL_SOCKET, option, _UCRED.size)
    except OSError as exc:
        return f"cannot ask who listens on the control socket: {exc.strerror}"
    pid, uid, _gid = _UCRED.unpack(raw)
    if uid not in trusted_uids():
        return f"the process listening on it (pid {pid}) runs as uid {uid}, not as you"
    return None

"""The cheap half of the control socket's client: connect to our own daemon (``trust``)
and tell it that a message was written to the store (the ``submitted`` request).

``mapispool-sendmail`` uses this after it has committed a message itself, so it imports
only sockets, JSON and the wire format, not the operations of ``mapispool.app``;
``client.DaemonBackend`` connects through ``connect_socket`` as well."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from ..mapi import MapiError
from ..mapi.errors import HResult
from . import trust
from .protocol import WAKE_TIMEOUT, decode, encode, raise_error, socket_path

#: Where a client reports a socket it refused to use, or a daemon that did not answer.
Warn = Callable[[str], None]

CONNECT_TIMEOUT = 5.0

#: The daemon went away in the middle of a request.
LOST = HResult.MAPI_E_END_OF_SESSION


def _warn(warn: Warn | None, text: str) -> None:
    if warn is not None:
        warn(text)


def connect_socket(path: Path, warn: Warn | None = None) -> socket.socket | None:
    """A connected socket to the daemon listening at ``path`` (blocking, no timeout), or
    None when none answers (no socket file, or a stale one left by a daemon that was
    killed) or when the socket is not our own daemon's (``trust``): then ``warn`` hears
    why and nothing is sent."""
    if not os.path.lexists(path):
        return None
    problem = trust.socket_file_problem(path)
    if problem is not None:
        _warn(warn, f"not using the control socket: {problem}")
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    problem = trust.peer_problem(sock)
    if problem is not None:
        sock.close()
        _warn(warn, f"not using the control socket {path}: {problem}")
        return None
    # A flush may take as long as it takes; only connecting has a deadline.
    sock.settimeout(None)
    return sock


def tell_submitted(store_path: Path, entry_id: str, warn: Warn | None = None) -> bool:
    """Tell the daemon of the SQLite store at ``store_path``, if one of ours answers,
    that ``entry_id`` (hex) was queued. True when it took the news. A daemon that does
    not answer within ``WAKE_TIMEOUT`` is only a warning: the message is in the store
    already, and the daemon finds it at its next look at the queue."""
    sock = connect_socket(socket_path(store_path), warn)
    if sock is None:
        return False
    try:
        sock.settimeout(WAKE_TIMEOUT)
        sock.sendall(encode({"op": "submitted", "params": {"entry_id": entry_id}}))
        with sock.makefile("rb") as reader:
            while True:
                line = reader.readline()
                if not line:
                    raise MapiError(
                        HResult.MAPI_E_END_OF_SESSION, "the daemon closed the control socket"
                    )
                answer = decode(line)
                if "event" in answer:
                    continue
                if not answer.get("ok"):
                    raise_error(dict(answer.get("error") or {}))
                return True
    except (OSError, MapiError) as exc:
        why = (
            exc.message
            if isinstance(exc, MapiError)
            else f"lost the daemon's control socket: {exc}"
        )
        _warn(warn, f"the message is queued, but the daemon did not take the news: {why}")
        return False
    finally:
        sock.close()

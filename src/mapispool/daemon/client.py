"""How a ``mapispool`` command reaches the spooler: through the daemon's control socket
when a daemon runs on the store, else in this process for the length of the command.

``connect(profile)`` returns an ``app.Backend``: a ``DaemonBackend`` (here) or an
``app.LocalBackend``; both answer ``call(op, params, progress)`` with the same
JSON-friendly values (the operations of ``mapispool.app``)."""

from __future__ import annotations

import base64
import socket
from pathlib import Path
from typing import Any

from ..app import Backend, LocalBackend, Progress
from ..mapi import MapiError
from ..mapi.errors import HResult
from ..profile import Profile
from .attached import install as install_client_mode
from .notify import CONNECT_TIMEOUT as CONNECT_TIMEOUT
from .notify import Warn, connect_socket, tell_submitted
from .protocol import READ_ONLY_OPS, READ_TIMEOUT, decode, encode, raise_error, socket_path

# A command that runs an operation in process (``LocalBackend``) logs on beside a daemon
# that started meanwhile as its client. The ``mapispool`` package imports its names
# lazily, so the client mode is plugged in here too, not only on ``mapispool.Session``.
install_client_mode()

#: The daemon went away in the middle of a request: the session ended (exit 75, try again).
LOST = HResult.MAPI_E_END_OF_SESSION


class DaemonBackend:
    """Talks to a running ``mapispool serve`` over its AF_UNIX control socket."""

    kind = "daemon"

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = sock.makefile("rb")
        #: Answers read-only requests when the daemon does not (``READ_TIMEOUT``).
        self.fallback: LocalBackend | None = None
        self.warn: Warn | None = None

    @classmethod
    def connect(cls, path: Path, warn: Warn | None = None) -> DaemonBackend | None:
        """A client for the daemon listening at ``path``, or None when none answers (no
        socket file, or a stale one left by a daemon that was killed) or when the socket
        is not our own daemon's (``trust``): then ``warn`` hears why and nothing is sent."""
        sock = connect_socket(path, warn)
        return None if sock is None else cls(sock)

    def call(
        self, op: str, params: dict[str, Any] | None = None, progress: Progress | None = None
    ) -> Any:
        if op not in READ_ONLY_OPS or self.fallback is None:
            return self._call(op, params, progress)
        self.set_timeout(READ_TIMEOUT)
        try:
            return self._call(op, params, progress)
        except MapiError as exc:
            if exc.hresult != LOST:
                raise
            # Stopped (SIGSTOP), wedged or gone: the store answers a read as well.
            why = exc.message.removesuffix("; try again")
            _warn(self.warn, f"the daemon did not answer ({why}); reading the store instead")
            self.close()
            if op == "status":  # the daemon holds the spooler: show the rows it saved
                return self.fallback.saved_status()
            return self.fallback.call(op, params, progress)

    def _call(self, op: str, params: dict[str, Any] | None, progress: Progress | None) -> Any:
        try:
            self._sock.sendall(encode({"op": op, "params": params or {}}))
            while True:
                line = self._reader.readline()
                if not line:
                    raise MapiError(LOST, "the daemon closed the control socket; try again")
                message = decode(line)
                if "event" in message:
                    if progress is not None and message["event"] == "progress":
                        progress(message)
                    continue
                if message.get("ok"):
                    return message.get("result")
                raise_error(dict(message.get("error") or {}))
        except OSError as exc:
            raise MapiError(LOST, f"lost the daemon's control socket: {exc}; try again") from exc

    def set_timeout(self, seconds: float | None) -> None:
        """A deadline for each wait on the socket from now on (None: wait as long as it
        takes); a wait that passes it fails like a lost daemon."""
        self._sock.settimeout(seconds)

    def close(self) -> None:
        self._reader.close()
        self._sock.close()


def _warn(warn: Warn | None, text: str) -> None:
    if warn is not None:
        warn(text)


def connect(profile: Profile, warn: Warn | None = None) -> Backend:
    """The daemon of the profile's store if one of ours answers, else an in-process
    backend (``warn`` hears about a socket that was refused). A PostgreSQL store is
    worked on directly, from any machine: the database is what its workers share."""
    if profile.store_is_postgres:
        return LocalBackend(profile)
    daemon = DaemonBackend.connect(socket_path(profile.store_path()), warn)
    if daemon is not None:
        daemon.fallback, daemon.warn = LocalBackend(profile), warn
        return daemon
    return LocalBackend(profile)


def submit(profile: Profile, params: dict[str, Any], warn: Warn | None = None) -> tuple[str, bool]:
    """Queue a message: this process writes it to the store (one durable transaction, as
    the daemon would), then wakes the daemon if one of ours answers. The message never
    crosses the control socket, so its size is not bounded by it, and a socket that is
    not ours never sees it. ``params`` are those of the ``submit`` operation, ``content`` as bytes.

    Returns the entry id in hex and whether a daemon was told (else the message waits
    for the next ``mapispool flush`` or ``mapispool serve``)."""
    entry_id = str(LocalBackend(profile).call("submit", params))
    return entry_id, wake(profile, entry_id, warn)


def wake(profile: Profile, entry_id: str, warn: Warn | None = None) -> bool:
    """Tell the daemon of the profile's store, if one of ours answers, that ``entry_id``
    was queued. True when it was told; a daemon that fails to answer is only a warning,
    because the message is in the store already. A PostgreSQL store told its workers
    itself (NOTIFY in the submission's transaction): True."""
    if profile.store_is_postgres:
        return True
    return tell_submitted(profile.store_path(), entry_id, warn)


def encode_content(content: bytes) -> str:
    """Message bytes as they travel in a ``submit`` request over the socket."""
    return base64.b64encode(content).decode("ascii")

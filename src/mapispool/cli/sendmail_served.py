"""The daemon's half of ``mapispool-sendmail``'s hand-off (``sendmail_client``).

``mapispool serve`` runs ``sendmail_handoff`` beside the daemon: it listens on the socket
the client finds from the profile's path alone (``sendmail_client.handoff_socket``),
mode 0600 in a directory of mode 0700, and answers each request by running
``sendmail_run.run`` on a worker thread, with the caller's arguments, message, working
directory and environment and the client's submission id, against the daemon's own store
only. So a handed-off invocation is checked, refused, canonicalised and stored by the
same code as one run by the client itself. The answer is the exit code and the text for
the caller's stderr; an invocation the daemon does not run (``sendmail_fast.NotHere``,
or a bug here) is answered "not run", and the client runs it itself with the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..app import dispatch
from ..daemon.logs import EventLog
from ..profile import Profile
from ..session import AsyncSession
from .sendmail_client import MAX_HANDOFF, VERSION, handoff_socket, netstring
from .sendmail_fast import DaemonStore, NotHere
from .sendmail_run import run
from .sendmail_say import STDERR

#: The longest field but the message (arguments, environment entries, paths).
MAX_FIELD = 64 * 1024
#: At most this many arguments or environment entries.
MAX_ITEMS = 4096
#: sysexits' EX_SOFTWARE: the daemon failed to run an invocation (never after a commit).
EX_SOFTWARE = 70


@dataclass(frozen=True)
class HandedOff:
    """One request of ``sendmail_client.request``."""

    key: str
    profile: str
    cwd: str
    env: dict[str, str]
    args: list[str]
    content: bytes


@dataclass(frozen=True)
class Outcome:
    """The answer: ``handled`` False when the client must run the invocation itself."""

    code: int
    handled: bool
    stderr: str = ""

    def encode(self) -> bytes:
        fields = [VERSION, b"%d" % self.code, b"1" if self.handled else b"0"]
        return b"".join(map(netstring, [*fields, self.stderr.encode("utf-8")]))


@dataclass
class Served:
    """The profile (real path) whose hand-offs a daemon takes, and its store, which they
    write one at a time (``lock``) through one connection."""

    profile: str
    store: DaemonStore
    lock: threading.Lock


_Running = contextlib.AbstractAsyncContextManager[None]
Companion = Callable[[AsyncSession, EventLog], _Running]


def sendmail_handoff(profile: Profile) -> Companion:
    """The companion of ``mapispool serve`` that takes ``mapispool-sendmail``'s hand-offs
    for ``profile`` (a SQLite store, loaded from a file; otherwise it does nothing)."""
    served = None
    if not profile.store_is_postgres and profile.source:
        real_store = Path(os.path.realpath(profile.store_path()))
        served = Served(os.path.realpath(profile.source), DaemonStore(real_store), threading.Lock())

    def start(session: AsyncSession, events: EventLog) -> _Running:
        return _serving(served, session, events)

    return start


@contextlib.asynccontextmanager
async def _serving(
    served: Served | None, session: AsyncSession, events: EventLog
) -> AsyncIterator[None]:
    if served is None:
        yield
        return
    path = handoff_socket(served.profile, os.environ)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError) as exc:  # fmt: skip
            events("sendmail-refused", "warning", error=str(exc) or "request cut short")
            writer.close()
            return
        outcome = await asyncio.to_thread(run_handed_off, request, served, events)
        if outcome.handled and outcome.code == 0:
            await dispatch(session, "submitted", {"entry_id": ""}, lambda _event: None)
        events("sendmail", exit=outcome.code, handled=outcome.handled)
        with contextlib.suppress(ConnectionError):
            writer.write(outcome.encode())
            await writer.drain()
        writer.close()

    try:
        server = await _listen(path, answer)
    except OSError as exc:
        events("sendmail-handoff-off", "warning", socket=path, error=exc.strerror)
        yield
        return
    events("sendmail-handoff", socket=path)
    try:
        yield
    finally:
        server.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        await asyncio.to_thread(_close, served)


def _close(served: Served) -> None:
    with served.lock:  # after a hand-off still running on its thread
        served.store.close()


async def _listen(path: str, handler: Any) -> asyncio.AbstractServer:
    """Bind ``path`` in a directory only this user may enter, readable by this user only."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by a killed daemon (our store's lock says no daemon owns it)
    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(handler, path=path)
    finally:
        os.umask(old)
    return server


def run_handed_off(request: HandedOff, served: Served, events: EventLog) -> Outcome:
    """Run the invocation as ``sendmail_run.run`` in the caller's place (on a worker
    thread, one at a time); its lines for stderr are collected for the answer."""
    if os.path.realpath(request.profile) != served.profile:
        return Outcome(0, handled=False)  # another profile whose name has the same CRC
    stderr = io.StringIO()
    token = STDERR.set(stderr)
    with served.lock:
        try:
            code = run(
                request.args, io.BytesIO(request.content), Path(request.profile),
                env=request.env, cwd=request.cwd, submission_key=request.key,
                daemon_store=served.store,
            )  # fmt: skip
            return Outcome(code, handled=True, stderr=stderr.getvalue())
        except NotHere:
            return Outcome(0, handled=False)
        except Exception as exc:  # a bug here must not lose the message: the client runs it
            events("sendmail-failed", "error", error=repr(exc))
            served.store.close()  # the next hand-off opens the store afresh
            return Outcome(EX_SOFTWARE, handled=False)
        finally:
            STDERR.reset(token)


async def read_request(reader: asyncio.StreamReader) -> HandedOff:
    """One request as ``sendmail_client.request`` writes it; ``ValueError`` when it is
    not one."""
    if await _field(reader, MAX_FIELD) != VERSION:
        raise ValueError("not a mapispool-sendmail request of this version")
    key, profile, cwd = [os.fsdecode(await _field(reader, MAX_FIELD)) for _ in range(3)]
    if not key.startswith("sendmail:"):
        raise ValueError("the submission id is not one of mapispool-sendmail's")
    env = {}
    for item in await _items(reader):
        name, _eq, value = item.partition("=")
        env[name] = value
    args = await _items(reader)
    content = await _field(reader, MAX_HANDOFF)
    return HandedOff(key, profile, cwd, env, args, content)


async def _items(reader: asyncio.StreamReader) -> list[str]:
    count = int(await _field(reader, 10))
    if not 0 <= count <= MAX_ITEMS:
        raise ValueError(f"{count} items in one field list")
    return [os.fsdecode(await _field(reader, MAX_FIELD)) for _ in range(count)]


async def _field(reader: asyncio.StreamReader, limit: int) -> bytes:
    """One netstring (``LENGTH:VALUE,``) of at most ``limit`` bytes."""
    length = (await reader.readuntil(b":"))[:-1]
    if not length.isdigit() or len(length) > 12 or int(length) > limit:
        raise ValueError("a field of a bad length")
    value = await reader.readexactly(int(length) + 1)
    if value[-1:] != b",":
        raise ValueError("a field without its end")
    return value[:-1]

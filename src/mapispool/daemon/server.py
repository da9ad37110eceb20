"""``mapispool serve``: the spooler as a long-running process with a control socket.

It logs on (``AsyncSession.logon``), lets the spooler send as messages arrive and poll,
runs a scheduled Send/Receive every ``flush_every`` seconds when the profile sets it,
flushes on SIGUSR1, and shuts down on SIGTERM or SIGINT with ``AsyncSession.logoff`` (a
flush in progress ends cleanly, nothing in flight is lost). Other ``mapispool`` commands
on the same store talk to it through an AF_UNIX socket next to the store file (mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from ..app import dispatch
from ..listener.run import smtp_listener
from ..mapi import (
    FLUSH_ASYNC_OK,
    FLUSH_DOWNLOAD,
    FLUSH_NO_UI,
    FLUSH_UPLOAD,
    MAPI_E_BUSY,
    MAPI_E_CALL_FAILED,
    MAPI_E_INVALID_PARAMETER,
    MAPI_E_NO_ACCESS,
    MapiError,
)
from ..profile import Profile
from ..session import AsyncFlushHandle, AsyncSession
from ..spi import InboundMessage
from .logs import EventLog
from .protocol import MAX_REQUEST, MAX_SOCKET_PATH, control_socket, encode, error_message

#: Something that runs beside the daemon while it serves, given its session and event log.
Companion = Callable[[AsyncSession, EventLog], AbstractAsyncContextManager[Any]]


class Daemon:
    """One running daemon: the session, the control socket and the background flushes."""

    def __init__(
        self, session: AsyncSession, events: EventLog, companions: Sequence[Companion] = ()
    ) -> None:
        self.session = session
        self.events = events
        self.companions = companions
        self.stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._clients: set[asyncio.Task[Any]] = set()

    # -- background Send/Receive ------------------------------------------------------

    def start_flush(self, reason: str) -> None:
        """Start a Send/Receive in the background; one already running makes it a no-op."""
        self._spawn(self._flush(reason))

    async def _flush(self, reason: str) -> None:
        status = self.session.spooler_status()
        flags = FLUSH_UPLOAD | FLUSH_DOWNLOAD | FLUSH_NO_UI | FLUSH_ASYNC_OK
        try:
            handle = await status.flush_queues(flags)
        except MapiError as exc:
            level = "info" if exc.hresult == MAPI_E_BUSY else "error"
            self.events("flush-skipped", level, reason=reason, error=exc.message)
            return
        assert isinstance(handle, AsyncFlushHandle)
        self.events("flush-started", reason=reason)
        result = await handle.wait()
        self.events(
            "flush-done",
            reason=reason,
            ok=result.ok,
            interrupted=result.interrupted,
            sent=result.total("sent"),
            received=result.total("received"),
            failed=result.total("failed"),
            deferred=result.total("deferred"),
            uncertain=result.total("uncertain"),
        )

    async def _schedule(self, every: float) -> None:
        # The first run is at start: mail queued while no daemon ran goes out now, not
        # one period later (issue #13).
        self.start_flush("start")
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every)
            if not self.stopping.is_set():
                self.start_flush("schedule")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the control socket -------------------------------------------------------------

    async def handle_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer the requests of one connection until it closes."""
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            while True:
                line = await _read_line(reader)
                if line is None:
                    self.events("request-refused", "warning", error="request line too long")
                    writer.write(encode(error_message(_too_long())))
                    await writer.drain()
                    continue
                if not line:
                    break
                if not line.strip():
                    continue
                writer.write(encode(await self._answer(line, writer)))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing of the spooler's depends on it
        finally:
            if task is not None:
                self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes, writer: asyncio.StreamWriter) -> dict[str, Any]:
        def emit(event: dict[str, Any]) -> None:
            if not writer.is_closing():
                writer.write(encode(event))

        op: object = None
        try:
            request = _parse(line)
            op = request.get("op")
            params = request.get("params") or {}
            if not isinstance(op, str) or not isinstance(params, dict):
                raise MapiError(MAPI_E_INVALID_PARAMETER, "a request needs op and params")
            self.events("request", op=op)
            result = await dispatch(self.session, op, params, emit)
            if op == "flush" and isinstance(result, dict) and "ok" in result:
                self.events("flush-done", reason="client", ok=result["ok"])
            return {"ok": True, "result": result}
        except MapiError as exc:
            return error_message(exc)
        except (KeyError, TypeError, ValueError) as exc:
            # Mostly a parameter missing or of the wrong type: said plainly, not as a bug.
            self.events("request-refused", "warning", op=str(op), error=repr(exc))
            return error_message(
                MapiError(
                    MAPI_E_INVALID_PARAMETER,
                    f"could not run {op!r} with the parameters given: {exc!r}",
                )
            )
        except Exception as exc:  # a bug answering one client must not stop the daemon
            self.events("request-failed", "error", error=repr(exc))
            return error_message(MapiError(MAPI_E_CALL_FAILED, f"internal error: {exc!r}"))

    # -- lifetime -------------------------------------------------------------------------

    async def run(self, path: Path) -> None:
        loop = asyncio.get_running_loop()
        server = await _listen(path, self.handle_client)
        loop.add_signal_handler(signal.SIGUSR1, self.start_flush, "SIGUSR1")
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop, signum)
        self.session.on_newmail(self._newmail)
        every = self.session.profile.flush_every
        if every:
            self._spawn(self._schedule(every))
        self.events(
            "started",
            pid=os.getpid(),
            store=self.session.store.location,
            socket=path,
            transports=",".join(t.name for t in self.session.profile.transports),
            flush_every=every,
        )
        try:
            async with contextlib.AsyncExitStack() as stack:
                for companion in self.companions:  # the web page (serve --web), for one
                    await stack.enter_async_context(companion(self.session, self.events))
                await self.stopping.wait()
        finally:
            server.close()
            for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            # Logoff first: a flush in progress (ours or a client's) ends cleanly and its
            # caller gets the interrupted result before the connections are dropped.
            await self.session.logoff()
            for task in list(self._tasks | self._clients):
                task.cancel()
            for task in list(self._tasks | self._clients):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            _unlink(path)
            self.events("stopped")

    def _stop(self, signum: int) -> None:
        self.events("stopping", signal=signal.Signals(signum).name)
        self.stopping.set()

    def _newmail(self, message: InboundMessage) -> None:
        self.events("newmail", entry_id=message.entry_id.hex() if message.entry_id else None)


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next request line (``b""`` at the end of input), or None when it was longer
    than the stream's limit: then it has been read to its end and thrown away, so the
    client, still sending it, gets the answer rather than a broken pipe."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial  # a last line without its newline, or nothing
    except asyncio.LimitOverrunError as exc:
        await reader.readexactly(exc.consumed)
        await _skip_line(reader)
        return None


async def _skip_line(reader: asyncio.StreamReader) -> None:
    """Discard input up to and including the next newline (or the end of input)."""
    while True:
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.LimitOverrunError as exc:
            await reader.readexactly(exc.consumed)
        except asyncio.IncompleteReadError:
            return


def _too_long() -> MapiError:
    return MapiError(
        MAPI_E_INVALID_PARAMETER,
        f"a request line is longer than {MAX_REQUEST} bytes and was skipped "
        "(mapispool's own clients write messages to the store and send only their id)",
    )


def _parse(line: bytes) -> dict[str, Any]:
    """A request line as an object; anything else is ``MAPI_E_INVALID_PARAMETER``."""
    try:
        request = json.loads(line)
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise MapiError(
            MAPI_E_INVALID_PARAMETER, f"a request must be one line of JSON: {exc}"
        ) from exc
    if not isinstance(request, dict):
        raise MapiError(MAPI_E_INVALID_PARAMETER, "a request must be a JSON object")
    return request


def _unlink(path: Path) -> None:
    """Remove the socket file (a syscall on a local directory: no need to leave the loop)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def _listen(path: Path, handler: Any) -> asyncio.AbstractServer:
    """Bind the control socket, readable and writable by this user only."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise MapiError(
            MAPI_E_INVALID_PARAMETER,
            f"the control socket path {path} is too long for AF_UNIX; "
            "put the store in a directory with a shorter path",
        )
    # A socket file left by a killed daemon: we hold the store lock, so no daemon owns it.
    try:
        _unlink(path)
    except PermissionError as exc:
        raise MapiError(
            MAPI_E_NO_ACCESS,
            f"cannot replace {path}: it belongs to someone else ({exc.strerror}); "
            "remove it, or keep the store in a directory only you can write",
        ) from exc
    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(handler, path=str(path), limit=MAX_REQUEST)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return server


async def serve(
    profile: Profile,
    events: EventLog,
    smtp: str | None = None,
    companions: Sequence[Companion] = (),
    worker: str = "",
) -> None:
    """Run the daemon until SIGTERM or SIGINT; with ``smtp`` (``HOST:PORT``, else the
    profile's ``[listen] smtp``) also the SMTP listener; each companion runs beside it from
    logon to shutdown (before logoff); on a store that many workers share, as the worker
    ``worker`` (default ``host:pid``)."""
    listener = smtp_listener(profile, smtp)
    if profile.store_is_postgres:
        worker = worker or f"{socket.gethostname()}:{os.getpid()}"
    session = await AsyncSession.logon(profile, attach=False, worker=worker)
    try:
        async with listener.running(session, events):
            await Daemon(session, events, companions).run(control_socket(profile, worker))
    finally:
        await session.logoff()

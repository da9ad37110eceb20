"""The web server inside ``mapispool serve``: uvicorn on the daemon's own event loop, so
the routes call the daemon's session directly (one process, one spooler, no locking).

The daemon keeps its signal handling: uvicorn's is switched off, and the daemon stops the
web server before it logs off.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

import uvicorn

from ..mapi import MAPI_E_NETWORK_ERROR, MapiError
from ..session import AsyncSession
from .api import WebApi
from .config import WebConfig
from .guard import Guard, Keys
from .hub import EventHub
from .metrics import SpoolerMetrics

EventSink = Callable[..., None]
STOP_TIMEOUT = 5.0


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: SIGTERM and SIGINT stay the daemon's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(config: WebConfig) -> socket.socket:
    """The listening socket, or a one-line error naming the address and the reason."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.host, config.port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise MapiError(
            MAPI_E_NETWORK_ERROR,
            f"cannot serve the web page on {config.host}:{config.port}: {exc.strerror}; "
            "choose another address with --web HOST:PORT or [web] listen",
        ) from exc
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def web_server(
    session: AsyncSession, config: WebConfig, events: EventSink
) -> AsyncIterator[EventHub]:
    """Serve the page and the API for ``session`` while the block runs."""
    sock = bind(config)
    hub = EventHub(session)
    metrics = SpoolerMetrics(session)
    hub.on_flush_done(metrics.record_flush)
    keys = Keys(config.token)
    app: Any = Guard(WebApi(session, hub, metrics, keys).app(), config, keys)
    server = _EmbeddedServer(
        uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    )
    hub.start()
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    events("web-listening", url=config.url, token=config.token is not None)
    try:
        yield hub
    finally:
        hub.close()  # every event stream ends, so the server's shutdown does not wait on them
        server.should_exit = True
        try:
            await asyncio.wait_for(task, STOP_TIMEOUT)
        except (TimeoutError, Exception):
            task.cancel()
        sock.close()
        events("web-stopped")

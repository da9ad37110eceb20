"""The routes: the page, its fragments, the JSON API, server-sent events and metrics.

The JSON answers are the CLI's (``mapispool status --json``, ``queue list --json``): the
routes call the same operations (``mapispool.app``). Errors are ``{"error", "message"}``
with the status a client can act on; ``MAPI_E_BUSY`` on a flush is exactly
``409 {"error": "busy"}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from prometheus_client import CONTENT_TYPE_LATEST
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..app.flush import flush as run_flush
from ..app.status import status as status_rows
from ..mapi import (
    MAPI_E_BUSY,
    MAPI_E_INVALID_PARAMETER,
    MAPI_E_NO_SUPPORT,
    MAPI_E_NOT_FOUND,
    MAPI_E_UNABLE_TO_ABORT,
    MapiError,
)
from ..session import AsyncSession
from ..store.types import QueueAction
from . import page
from .guard import AUTH_COOKIE, Keys
from .hub import EventHub
from .metrics import SpoolerMetrics
from .queue_pages import parse_limit, parse_state, queue_page

STATIC = Path(__file__).parent / "static"
#: The queue actions the web page offers: the store's table (``store.types.QueueAction``)
#: but purge, which deletes for good and stays on the command line.
QUEUE_ACTIONS = tuple(a.value for a in QueueAction if a is not QueueAction.PURGE)
_STATUS_OF: dict[int, int] = {
    MAPI_E_INVALID_PARAMETER: 400,
    MAPI_E_NO_SUPPORT: 400,
    MAPI_E_NOT_FOUND: 404,
    MAPI_E_BUSY: 409,
    MAPI_E_UNABLE_TO_ABORT: 409,
}
_FLUSH_KEYS: dict[str, tuple[type, ...]] = {
    "upload": (bool,),
    "download": (bool,),
    "force": (bool,),
    "transport": (str, type(None)),
}


def _noop(_event: dict[str, Any]) -> None:
    """Operations report progress through an emitter; these routes need none."""


def error_response(exc: MapiError) -> JSONResponse:
    status = _STATUS_OF.get(exc.hresult, 500)
    if exc.hresult == MAPI_E_BUSY:
        return JSONResponse({"error": "busy"}, status_code=409)
    return JSONResponse({"error": exc.name, "message": exc.message}, status_code=status)


class WebApi:
    """The routes of one daemon's web server, over its session."""

    def __init__(self, session: AsyncSession, hub: EventHub, metrics: SpoolerMetrics, keys: Keys):
        self.session = session
        self.hub = hub
        self.metrics = metrics
        self.keys = keys

    def app(self) -> Starlette:
        routes = [
            Route("/", self.index),
            Route("/login", self.sign_in_form, methods=["GET"]),
            Route("/login", self.sign_in, methods=["POST"]),
            Route("/api/token", self.token),
            Route("/api/status", self.status),
            Route("/api/queue", self.queue),
            Route("/api/queue/{entry_id}/{action}", self.queue_action, methods=["POST"]),
            Route("/api/flush", self.flush, methods=["POST"]),
            Route("/api/flushes", self.flushes),
            Route("/api/events", self.events),
            Route("/ui/queue", self.queue_ui),
            Route("/ui/flushes", self.flushes_ui),
            Route("/metrics", self.metrics_text),
            Route("/favicon.ico", self.no_icon),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        return Starlette(routes=routes, exception_handlers={MapiError: self._mapi_error})

    async def _mapi_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MapiError)
        return error_response(exc)

    # -- the page -------------------------------------------------------------------------

    async def index(self, request: Request) -> HTMLResponse:
        rows = await status_rows(self.session, {}, _noop)
        names = [t.name for t in self.session.profile.transports]
        html = page.page(self.keys.page_token(), rows, names)
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    async def sign_in_form(self, request: Request) -> HTMLResponse:
        return HTMLResponse(page.SIGN_IN)

    async def sign_in(self, request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        if not self.keys.valid_bearer(given):
            return HTMLResponse(page.SIGN_IN, status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(AUTH_COOKIE, self.keys.auth_cookie(), httponly=True, samesite="strict")
        return response

    async def queue_ui(self, request: Request) -> HTMLResponse:
        state = parse_state(request.query_params.get("state"))
        cursor = request.query_params.get("cursor")
        found = await queue_page(self.session, state, cursor, parse_limit(None))
        return HTMLResponse(page.queue_fragment(state, found, cursor))

    async def flushes_ui(self, request: Request) -> HTMLResponse:
        return HTMLResponse(page.flushes_fragment(self.hub.recent))

    # -- JSON -------------------------------------------------------------------------------

    async def token(self, request: Request) -> JSONResponse:
        """A page token for a client without the page (a script): send it as
        ``X-Mapispool-Token`` with each POST."""
        return JSONResponse({"token": self.keys.page_token()})

    async def status(self, request: Request) -> JSONResponse:
        return JSONResponse(await status_rows(self.session, {}, _noop))

    async def queue(self, request: Request) -> JSONResponse:
        """One page of the queue; the next page's address is in the ``Link`` header
        (``rel="next"``) and its cursor in ``X-Next-Cursor``."""
        params = request.query_params
        state = parse_state(params.get("state"))
        limit = parse_limit(params.get("limit"))
        found = await queue_page(self.session, state, params.get("cursor"), limit)
        headers = {}
        if found.next_cursor:
            query = urlencode({"state": state, "cursor": found.next_cursor, "limit": limit})
            headers = {
                "link": f'</api/queue?{query}>; rel="next"',
                "x-next-cursor": found.next_cursor,
            }
        return JSONResponse(found.as_json(), headers=headers)

    async def queue_action(self, request: Request) -> JSONResponse:
        action, text = request.path_params["action"], request.path_params["entry_id"]
        if action not in QUEUE_ACTIONS:
            raise MapiError(
                MAPI_E_NOT_FOUND, f"no queue action {action!r}; use {', '.join(QUEUE_ACTIONS)}"
            )
        entry_id = _entry_id(text)
        # The session's method directly, not app.queue.queue_action: that one resolves prefixes
        # by reading the whole queue, and the page always sends the full id.
        await getattr(self.session, action)(entry_id)
        self.hub.queue_changed(entry_id.hex(), action)
        return JSONResponse({"entry_id": entry_id.hex(), "action": action})

    async def flush(self, request: Request) -> JSONResponse:
        params = await _json_object(request)
        for key, value in params.items():
            wanted = _FLUSH_KEYS.get(key)
            if wanted is None or not isinstance(value, wanted):
                raise MapiError(
                    MAPI_E_INVALID_PARAMETER,
                    f"{key!r}: expected upload, download, force (true/false) and transport "
                    "(a name or null)",
                )
        record = self.hub.expect_flush()

        def emit(event: dict[str, Any]) -> None:
            if event.get("event") == "progress":
                self.hub.progress(record, event)

        try:
            await run_flush(self.session, {**params, "async": True}, emit)
        except BaseException:
            self.hub.forget_flush(record)
            raise
        return JSONResponse(
            {"id": record.id}, status_code=202, headers={"location": "/api/flushes"}
        )

    async def flushes(self, request: Request) -> JSONResponse:
        return JSONResponse([record.as_dict() for record in self.hub.recent])

    async def events(self, request: Request) -> EventSourceResponse:
        async def stream() -> AsyncIterator[dict[str, str]]:
            yield {
                "event": "hello",
                "data": json.dumps({"queue": await self.hub.read_queue_counts()}),
            }
            async for kind, data in self.hub.events():
                yield {"event": kind, "data": json.dumps(data)}

        return EventSourceResponse(stream(), ping=15, send_timeout=30)

    async def no_icon(self, request: Request) -> Response:
        return Response(status_code=204)  # browsers ask; a 404 would be an error in their log

    async def metrics_text(self, request: Request) -> Response:
        return Response(await self.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _entry_id(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise MapiError(MAPI_E_INVALID_PARAMETER, f"{text!r} is not an entry id in hex") from None


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise MapiError(
            MAPI_E_INVALID_PARAMETER, f"the body must be a JSON object: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise MapiError(MAPI_E_INVALID_PARAMETER, "the body must be a JSON object")
    return data

"""Who may use the page and the API: the checks every request passes before a route.

- ``Host`` must be one of the daemon's own names (``WebConfig.hosts``): a page on another
  site that rebinds its DNS name to 127.0.0.1 reaches us with its own name, and is refused.
- With a token (``[web] token_env``), every request carries it as ``Authorization:
  Bearer``, or the cookie the sign-in form sets (a browser cannot add the header to a
  page load).
- Every POST, even on loopback, carries a page token (``X-Mapispool-Token``, minted per
  page and by ``GET /api/token``) and, when the browser sends one, an ``Origin`` of ours:
  another site's page can make a browser POST to us, but cannot read a token to send.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .config import WebConfig

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_HEADER = "x-mapispool-token"
AUTH_COOKIE = "mapispool_auth"
#: Reachable without the bearer token (still behind the Host and Origin checks).
SIGN_IN_PATHS = frozenset({"/login", "/static/page.css"})
_SAFE_METHODS = frozenset({"GET", "HEAD"})
#: On every answer: no other site may frame the page (a framed Cancel button could be
#: clicked through a decoy), and the page runs only the scripts we serve.
HARDENING = [
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
        b"form-action 'self'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class Keys:
    """The daemon's secrets for this run: page tokens and the sign-in cookie are MACs
    under a key made at start, so they stop working when the daemon restarts."""

    def __init__(self, bearer: str | None) -> None:
        self._key = secrets.token_bytes(32)
        self.bearer = bearer

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:32]

    def page_token(self) -> str:
        """A fresh token for one page (or one API client)."""
        nonce = secrets.token_urlsafe(12)
        return f"{nonce}.{self._mac('page:' + nonce)}"

    def valid_page_token(self, token: str) -> bool:
        nonce, _, mac = token.partition(".")
        return bool(nonce) and hmac.compare_digest(mac, self._mac("page:" + nonce))

    def auth_cookie(self) -> str:
        return self._mac("signed-in")

    def valid_bearer(self, given: str) -> bool:
        return self.bearer is not None and hmac.compare_digest(given.encode(), self.bearer.encode())


class Guard:
    """ASGI middleware applying the checks above; refusals are JSON with a one-line
    ``message`` saying what is wrong."""

    def __init__(self, app: App, config: WebConfig, keys: Keys) -> None:
        self.app = app
        self.config = config
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.check(scope, headers)
        if refusal is None:
            await self.app(scope, receive, _hardened(send))
        elif refusal[0] == 401 and scope.get("path") == "/" and scope.get("method") == "GET":
            await _redirect(send, "/login")  # a person at a browser: the sign-in form
        else:
            await _refuse(send, *refusal)

    def check(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, str] | None:
        """None when the request may go on, else (status, error, message)."""
        host = headers.get("host", "")
        if host not in self.config.hosts:
            return 403, "forbidden", (
                f"Host {host!r} is not one of this daemon's names; "
                "add it to [web] hosts if the page is reached by it"
            )  # fmt: skip
        path, method = str(scope.get("path", "")), str(scope.get("method", "GET"))
        private = self.keys.bearer is not None and path not in SIGN_IN_PATHS
        if private and not self._signed_in(headers):
            return 401, "unauthorized", "send the token as Authorization: Bearer <token>"
        if method in _SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and origin not in self.config.origins:
            return 403, "forbidden", f"a request from {origin} may not change anything here"
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return 403, "forbidden", "a request from another site may not change anything here"
        if path == "/login":
            return None  # the sign-in form: the token it carries is the proof
        if not self.keys.valid_page_token(headers.get(TOKEN_HEADER, "")):
            return 403, "forbidden", (
                "missing or stale page token: reload the page, or send the token from "
                "GET /api/token as X-Mapispool-Token"
            )  # fmt: skip
        return None

    def _signed_in(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.keys.valid_bearer(given.strip()):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == AUTH_COOKIE and hmac.compare_digest(value, self.keys.auth_cookie()):
                return True
        return False


def _hardened(send: Send) -> Send:
    async def with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *HARDENING]
        await send(message)

    return with_headers


async def _refuse(send: Send, status: int, error: str, message: str) -> None:
    body = json.dumps({"error": error, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="mapispool"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str) -> None:
    headers = [(b"location", location.encode()), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})

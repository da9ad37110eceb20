"""The ``[web]`` settings: where the page listens and who may use it.

Pure validation, no web library imported: a bad setting is a one-line ``ProfileError``
before anything binds a port.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..profile import ProfileError

WEB_KEYS = {
    "listen": '"HOST:PORT" to serve the page and the API on, e.g. "127.0.0.1:8025"',
    "token_env": "the name of an environment variable holding the bearer token",
    "hosts": 'extra host names the page is reached by, e.g. ["mail.example.net"]',
}

_LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class WebConfig:
    """Where to listen and how requests are authorised.

    ``token`` is the bearer token read from ``token_env`` (None: no token asked for,
    allowed on loopback only). ``hosts`` are the ``Host`` header values (with the port)
    that requests may carry: DNS rebinding is refused by this list."""

    host: str
    port: int
    token: str | None
    hosts: frozenset[str]

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def origins(self) -> frozenset[str]:
        """The ``Origin`` values a state-changing request may come from."""
        return frozenset(f"{scheme}://{host}" for host in self.hosts for scheme in ("http",))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(text: str, *, where: str = "[web] listen") -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:8025"`` for IPv6) as ``(host, port)``."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ProfileError(f'must be "HOST:PORT", e.g. "127.0.0.1:8025", not {text!r}', key=where)
    return host, int(port_text)


def load_web_config(
    table: Mapping[str, Any],
    listen: str | None = None,
    *,
    source: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> WebConfig | None:
    """The web settings from the profile's ``[web]`` table, ``listen`` (``--web``) taking
    precedence over ``[web] listen``; None when neither asks for the page (the default)."""
    environ = os.environ if environ is None else environ
    for key in table:
        if key not in WEB_KEYS:
            known = ", ".join(WEB_KEYS)
            raise ProfileError(f"unknown setting; the known ones are: {known}", source=source,
                               key=f"web.{key}")  # fmt: skip
    wanted = listen if listen is not None else table.get("listen")
    if wanted is None:
        return None
    if not isinstance(wanted, str):
        raise ProfileError(f'must be "HOST:PORT", not {wanted!r}', source=source, key="web.listen")
    host, port = parse_listen(wanted, where="--web" if listen is not None else "web.listen")
    token = _token(table, environ, source)
    if token is None and not is_loopback(host):
        raise ProfileError(
            f"serving the page on {host}, which is not a loopback address, needs a token: "
            'set [web] token_env = "MAPISPOOL_WEB_TOKEN" and put a long random value in it',
            source=source,
            key="web.token_env",
        )
    return WebConfig(host, port, token, _hosts(table, host, port, source))


def _token(table: Mapping[str, Any], environ: Mapping[str, str], source: str | None) -> str | None:
    name = table.get("token_env")
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise ProfileError(
            f"must name an environment variable, not {name!r}", source=source, key="web.token_env"
        )
    value = environ.get(name, "")
    if len(value) < 16:
        raise ProfileError(
            f"the environment variable {name} must hold the token (16 characters or more); "
            "it is unset or too short",
            source=source,
            key="web.token_env",
        )
    return value


def _hosts(table: Mapping[str, Any], host: str, port: int, source: str | None) -> frozenset[str]:
    extra = table.get("hosts", [])
    if not isinstance(extra, list) or not all(isinstance(h, str) and h for h in extra):
        raise ProfileError(
            f'must be a list of host names, e.g. ["mail.example.net"], not {extra!r}',
            source=source,
            key="web.hosts",
        )
    names = {host, *extra}
    if is_loopback(host):
        names |= {"localhost", "127.0.0.1", "::1"}
    hosts: set[str] = set()
    for name in names:
        shown = f"[{name}]" if ":" in name else name
        hosts.add(f"{shown}:{port}")
        if port == 80:
            hosts.add(shown)
    return frozenset(hosts)

"""The ``[listen]`` profile table and ``serve --smtp HOST:PORT``: parsing and validation,
with no I/O. Errors are ``ValueError`` naming the key and the fix.

The rules a user relies on:

* AUTH is required whenever ``username`` is set, and ``username`` must be set when the
  listener is bound to anything but a loopback address (``127.0.0.0/8``, ``::1``,
  ``localhost``): an open relay on the network is refused at load time.
* The password is given by reference (``password_env``, ``password_file`` or
  ``password_command``), like every other secret of a profile; it is read when the
  listener starts.
* With ``tls_cert`` and ``tls_key`` the listener offers STARTTLS, and AUTH is accepted
  only after it. Off loopback, AUTH without a certificate would send the password in
  clear: refused unless ``allow_plaintext_auth = true``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Postfix's default ``message_size_limit``.
DEFAULT_MAX_SIZE = 10_240_000
PASSWORD_SOURCES = ("password_env", "password_file", "password_command")
KNOWN_KEYS = frozenset(
    {
        "smtp",
        "max_size",
        "username",
        *PASSWORD_SOURCES,
        "tls_cert",
        "tls_key",
        "require_tls",
        "allow_plaintext_auth",
        "hostname",
    }
)


@dataclass(frozen=True)
class ListenSettings:
    """A validated SMTP listener configuration. Only references to the password are kept."""

    host: str
    port: int
    max_size: int = DEFAULT_MAX_SIZE
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    password_command: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    require_tls: bool = False
    allow_plaintext_auth: bool = False
    hostname: str | None = None

    # The secret-source protocol of ``transports._secrets`` also asks for these.
    token_command: None = None
    token_callable: None = None

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect."""
        return is_loopback(self.host)

    @property
    def auth_required(self) -> bool:
        """True when clients must AUTH before MAIL (a username is configured)."""
        return self.username is not None

    @property
    def has_tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fail(key: str, problem: str, fix: str) -> ValueError:
    return ValueError(f"listen.{key}: {problem}; {fix}")


def parse_address(text: str, key: str = "smtp") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:2525`` for IPv6) as (host, port)."""
    example = 'e.g. "127.0.0.1:2525"'
    if not isinstance(text, str) or ":" not in text:
        raise _fail(key, f"expected HOST:PORT, got {text!r}", example)
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(ch.isspace() for ch in host):
        raise _fail(key, f"no host in {text!r}", example)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _fail(key, f"{port_text!r} is not a TCP port 1-65535", example)
    return host, int(port_text)


def _str(table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, f"expected a non-empty string, got {value!r}", "quote the value")
    return value


def _bool(table: Mapping[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise _fail(key, f"expected true or false, got {value!r}", "write true or false")
    return value


def parse_listen(table: Mapping[str, Any], *, smtp: str | None = None) -> ListenSettings | None:
    """The listener described by a ``[listen]`` table, or None when it has no ``smtp``
    address. ``smtp`` (from ``serve --smtp``) overrides the table's address."""
    if not isinstance(table, Mapping):
        raise ValueError('listen: must be a table, e.g. [listen] smtp = "127.0.0.1:2525"')
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        known = ", ".join(sorted(KNOWN_KEYS))
        raise _fail(unknown[0], "is not a listener setting", f"use one of: {known}")
    address = smtp if smtp is not None else table.get("smtp")
    if address is None:
        if len(table):
            raise _fail("smtp", "is missing", 'set smtp = "127.0.0.1:2525"')
        return None
    host, port = parse_address(address)
    max_size = table.get("max_size", DEFAULT_MAX_SIZE)
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1024:
        raise _fail("max_size", f"expected a number of bytes >= 1024, got {max_size!r}",
                    "e.g. max_size = 10240000")  # fmt: skip
    present = [k for k in PASSWORD_SOURCES if table.get(k) is not None]
    if len(present) > 1:
        raise _fail(present[1], f"conflicts with {present[0]!r}", "keep only one of them")
    if table.get("password") is not None:
        raise _fail("password", "secrets are not written into the profile",
                    "use password_env, password_file or password_command")  # fmt: skip
    parsed = ListenSettings(
        host=host,
        port=port,
        max_size=max_size,
        username=_str(table, "username"),
        password_env=_str(table, "password_env"),
        password_file=_str(table, "password_file"),
        password_command=_str(table, "password_command"),
        tls_cert=_str(table, "tls_cert"),
        tls_key=_str(table, "tls_key"),
        require_tls=_bool(table, "require_tls", False),
        allow_plaintext_auth=_bool(table, "allow_plaintext_auth", False),
        hostname=_str(table, "hostname"),
    )
    _check(parsed)
    return parsed


def _check(s: ListenSettings) -> None:
    """Cross-key rules: no open relay off loopback, credentials complete, TLS files paired."""
    if (s.tls_cert is None) != (s.tls_key is None):
        missing = "tls_key" if s.tls_key is None else "tls_cert"
        raise _fail(missing, "is missing", "set both tls_cert and tls_key (PEM files)")
    if s.require_tls and not s.has_tls:
        raise _fail("require_tls", "needs a certificate", "set tls_cert and tls_key")
    has_password = any(getattr(s, k) is not None for k in PASSWORD_SOURCES)
    if s.username is None and has_password:
        raise _fail("username", "is missing but a password source is set", "set username")
    if s.username is not None and not has_password:
        raise _fail("username", "is set but no password source is",
                    "set password_env, password_file or password_command")  # fmt: skip
    if s.loopback:
        return
    if s.username is None:
        raise _fail(
            "username",
            f"the listener is bound to {s.host}, which other machines can reach, so it needs AUTH",
            "set username and password_env (or bind to 127.0.0.1)",
        )
    if not s.has_tls and not s.allow_plaintext_auth:
        raise _fail(
            "tls_cert",
            f"AUTH on {s.host} without TLS would send the password in clear",
            "set tls_cert and tls_key, or allow_plaintext_auth = true",
        )

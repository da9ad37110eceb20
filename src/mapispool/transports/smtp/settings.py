"""The ``smtp`` profile section: parsing and validation, with no I/O.

``parse_settings`` turns a profile section into an immutable ``SmtpSettings`` or raises
``ValueError`` whose text names the key and says how to fix it. Unknown keys are errors,
so a typo (``pasword_env``) never silently disables something.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TLS_MODES = ("starttls", "implicit", "none")
AUTH_CHOICES = ("auto", "plain", "login", "xoauth2", "oauthbearer")
DEFAULT_PORTS = {"starttls": 587, "implicit": 465, "none": 25}
PASSWORD_SOURCES = ("password", "password_env", "password_file", "password_command")
TOKEN_SOURCES = ("token_command", "token_callable")
MAX_CONNECTIONS = 64

_CALLABLE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

#: Every key the section may hold (``provider`` is the registry's, passed through).
KNOWN_KEYS = frozenset(
    {
        "provider",
        "host",
        "port",
        "tls",
        "ca_file",
        "verify",
        "username",
        *PASSWORD_SOURCES,
        "auth",
        *TOKEN_SOURCES,
        "allow_plaintext_auth",
        "connect_timeout",
        "timeout",
        "connections",
        "helo_name",
        "address_types",
        "pipelining",
        "senders",
    }
)


@dataclass(frozen=True)
class SmtpSettings:
    """A validated ``smtp`` section. Secrets are held only as references (an environment
    variable name, a file, a command), except an inline ``password`` the user chose to
    write into the profile; ``repr`` never shows it."""

    host: str
    port: int
    tls: str = "starttls"
    ca_file: str | None = None
    verify: bool = True
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    password_command: str | None = None
    auth: str = "auto"
    token_command: str | None = None
    token_callable: str | None = None
    allow_plaintext_auth: bool = False
    connect_timeout: float = 30.0
    timeout: float = 60.0
    connections: int = 1
    helo_name: str | None = None
    address_types: tuple[str, ...] = ("SMTP",)
    #: RFC 2920 command pipelining when the server offers it; false only for a broken
    #: middlebox that advertises it but loses pipelined commands.
    pipelining: bool = True
    #: Envelope senders this account is for (addresses or ``*@domain``); the spooler
    #: routes a message to the transport whose list matches its sender (DESIGN §11).
    senders: tuple[str, ...] = ()

    def __repr__(self) -> str:
        secret = "<inline>" if self.password is not None else None
        return (
            f"SmtpSettings(host={self.host!r}, port={self.port}, tls={self.tls!r}, "
            f"username={self.username!r}, password={secret}, auth={self.auth!r})"
        )

    @property
    def wants_auth(self) -> bool:
        """True when a user name is configured: the transport authenticates."""
        return self.username is not None

    @property
    def has_token_source(self) -> bool:
        """True when ``token_command`` or ``token_callable`` is set."""
        return self.token_command is not None or self.token_callable is not None

    @property
    def has_password_source(self) -> bool:
        """True when one of the password keys is set."""
        return any(getattr(self, key) is not None for key in PASSWORD_SOURCES)


def _fail(key: str, problem: str, fix: str) -> ValueError:
    return ValueError(f"smtp setting {key!r}: {problem}; {fix}")


def _str(settings: Mapping[str, Any], key: str, *, blank_ok: bool = False) -> str | None:
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(key, f"expected a string, got {type(value).__name__}", "quote the value")
    if not blank_ok and not value.strip():
        raise _fail(key, "is empty", "remove the key or give it a value")
    return value


def _bool(settings: Mapping[str, Any], key: str, default: bool) -> bool:
    value = settings.get(key, default)
    if not isinstance(value, bool):
        raise _fail(key, f"expected true or false, got {value!r}", "write true or false")
    return value


def _seconds(settings: Mapping[str, Any], key: str, default: float) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _fail(key, f"expected a positive number of seconds, got {value!r}", "e.g. 30")
    return float(value)


def _port(settings: Mapping[str, Any], tls: str) -> int:
    value = settings.get("port", DEFAULT_PORTS[tls])
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _fail("port", f"expected a TCP port 1-65535, got {value!r}", "e.g. port = 587")
    return value


def _choice(settings: Mapping[str, Any], key: str, choices: Sequence[str], default: str) -> str:
    value = settings.get(key, default)
    if value not in choices:
        allowed = ", ".join(f'"{c}"' for c in choices)
        raise _fail(key, f"unknown value {value!r}", f"use one of {allowed}")
    assert isinstance(value, str)
    return value


def _address_types(settings: Mapping[str, Any]) -> tuple[str, ...]:
    value = settings.get("address_types", ["SMTP"])
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _fail("address_types", f"expected a list, got {value!r}", 'e.g. ["SMTP"]')
    types = tuple(value)
    if not all(isinstance(t, str) and t.strip() for t in types):
        raise _fail("address_types", "every entry must be a non-empty string", 'e.g. ["SMTP"]')
    return types


_SENDER_PATTERN = re.compile(r"^(\*|[^\s@*]+)@[^\s@*]+$")


def _senders(settings: Mapping[str, Any]) -> tuple[str, ...]:
    value = settings.get("senders", [])
    example = 'e.g. senders = ["me@example.org", "*@example.com"]'
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _fail("senders", f"expected a list, got {value!r}", example)
    for entry in value:
        if not isinstance(entry, str) or not _SENDER_PATTERN.match(entry.strip()):
            raise _fail("senders", f"{entry!r} is not an address or *@domain", example)
    return tuple(entry.strip() for entry in value)


def _check_unknown(settings: Mapping[str, Any]) -> None:
    unknown = sorted(set(settings) - KNOWN_KEYS)
    if unknown:
        known = ", ".join(sorted(KNOWN_KEYS - {"provider"}))
        raise _fail(unknown[0], "is not an smtp setting", f"remove it or use one of: {known}")


def _only_one(settings: Mapping[str, Any], keys: Sequence[str]) -> None:
    present = [key for key in keys if settings.get(key) is not None]
    if len(present) > 1:
        raise _fail(present[1], f"conflicts with {present[0]!r}", "keep only one of them")


def parse_settings(settings: Mapping[str, Any]) -> SmtpSettings:
    """Validate an ``smtp`` profile section and return it as ``SmtpSettings``.

    Raises ``ValueError`` naming the first bad key and the fix. Checks only the section
    itself: files and commands it refers to are looked at when connecting.
    """
    _check_unknown(settings)
    host = _str(settings, "host")
    if host is None:
        raise _fail("host", "is missing", 'set host = "smtp.example.com"')
    tls = _choice(settings, "tls", TLS_MODES, "starttls")
    _only_one(settings, PASSWORD_SOURCES)
    _only_one(settings, TOKEN_SOURCES)
    token_callable = _str(settings, "token_callable")
    if token_callable is not None and not _CALLABLE_SPEC.match(token_callable):
        raise _fail(
            "token_callable",
            f"{token_callable!r} is not of the form 'package.module:function'",
            'e.g. token_callable = "mycorp.oauth:smtp_token"',
        )
    helo_name = _str(settings, "helo_name")
    if helo_name is not None and re.search(r"[\s\x00-\x1f\x7f]", helo_name):
        raise _fail("helo_name", "contains spaces or control characters", "use a host name")
    connections = settings.get("connections", 1)
    if (
        isinstance(connections, bool)
        or not isinstance(connections, int)
        or not 1 <= connections <= MAX_CONNECTIONS
    ):
        raise _fail(
            "connections",
            f"expected a whole number 1-{MAX_CONNECTIONS}, got {connections!r}",
            "e.g. connections = 4",
        )
    parsed = SmtpSettings(
        host=host,
        port=_port(settings, tls),
        tls=tls,
        ca_file=_str(settings, "ca_file"),
        verify=_bool(settings, "verify", True),
        username=_str(settings, "username"),
        password=_str(settings, "password", blank_ok=True),
        password_env=_str(settings, "password_env"),
        password_file=_str(settings, "password_file"),
        password_command=_str(settings, "password_command"),
        auth=_choice(settings, "auth", AUTH_CHOICES, "auto"),
        token_command=_str(settings, "token_command"),
        token_callable=token_callable,
        allow_plaintext_auth=_bool(settings, "allow_plaintext_auth", False),
        connect_timeout=_seconds(settings, "connect_timeout", 30.0),
        timeout=_seconds(settings, "timeout", 60.0),
        connections=connections,
        helo_name=helo_name,
        address_types=_address_types(settings),
        pipelining=_bool(settings, "pipelining", True),
        senders=_senders(settings),
    )
    _check_auth(parsed)
    return parsed


def _check_auth(s: SmtpSettings) -> None:
    """Cross-key rules: credentials need a user name, mechanisms need their secret, and
    AUTH never goes over an unencrypted connection unless the profile says so."""
    if not s.wants_auth:
        for key in (*PASSWORD_SOURCES, *TOKEN_SOURCES):
            if getattr(s, key) is not None:
                raise _fail(key, "is set but 'username' is not", "set username as well")
        if s.auth != "auto":
            raise _fail("auth", f'is "{s.auth}" but no username is set', "set username")
        return
    if s.auth in ("xoauth2", "oauthbearer") and not s.has_token_source:
        raise _fail("auth", f'"{s.auth}" needs an OAuth token', "set token_command")
    if s.auth in ("plain", "login") and not s.has_password_source:
        raise _fail("auth", f'"{s.auth}" needs a password', "set password_env")
    if not s.has_password_source and not s.has_token_source:
        raise _fail(
            "username",
            "is set but no password or token source is",
            "set password_env, password_file, password_command or token_command",
        )
    if s.tls == "none" and not s.allow_plaintext_auth:
        raise _fail(
            "tls",
            '"none" with a username would send credentials unencrypted',
            'use tls = "starttls" or "implicit", or set allow_plaintext_auth = true',
        )

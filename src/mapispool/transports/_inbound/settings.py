"""Validation of inbound transport settings: every key checked, every error names the key
and the fix, unknown keys rejected (a typo must not silently fall back to a default)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .limits import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_RESPONSE_LINES,
    Limits,
)

_CALLABLE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class SettingsReader:
    """Reads typed values out of a profile section and remembers which keys it read.

    ``finish()`` raises ``ValueError`` for every key nobody read, listing the valid ones.
    """

    def __init__(self, provider: str, settings: Mapping[str, Any]) -> None:
        self.provider = provider
        self.settings = settings
        self._read: set[str] = set()

    def error(self, key: str, fix: str) -> ValueError:
        """A ``ValueError`` naming this provider's ``key`` and how to fix it."""
        return ValueError(f"{self.provider} setting {key!r}: {fix}")

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self.settings.get(key)

    def has(self, key: str) -> bool:
        """True when the section sets ``key``."""
        return key in self.settings

    def string(self, key: str, default: str | None = None) -> str | None:
        """A non-empty string, or ``default`` when the key is absent."""
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.error(key, f'must be a non-empty string, for example {key} = "..."')
        return value

    def required_string(self, key: str, example: str) -> str:
        """A non-empty string that must be present."""
        value = self.string(key)
        if value is None:
            raise self.error(key, f"missing; set {key} = {example}")
        return value

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        """One of ``choices``."""
        value = self._get(key)
        if value is None:
            return default
        if value not in choices:
            allowed = " | ".join(f'"{c}"' for c in choices)
            raise self.error(key, f"must be {allowed}, not {value!r}")
        assert isinstance(value, str)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """``true`` or ``false`` (a TOML boolean, not a string)."""
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false (without quotes), not {value!r}")
        return value

    def positive_int(self, key: str, default: int | None) -> int | None:
        """An integer greater than 0."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.error(key, f"must be a whole number greater than 0, not {value!r}")
        return value

    def port(self, key: str, default: int) -> int:
        """A TCP port number."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise self.error(key, f"must be a port number from 1 to 65535, not {value!r}")
        return value

    def seconds(self, key: str, default: float) -> float:
        """A number of seconds greater than 0."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.error(key, f"must be a number of seconds greater than 0, not {value!r}")
        return float(value)

    def string_list(self, key: str, default: Sequence[str]) -> tuple[str, ...]:
        """A non-empty list of non-empty strings, without repeats."""
        value = self._get(key)
        if value is None:
            return tuple(default)
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            example = f'{key} = ["INBOX"]'
            raise self.error(key, f"must be a non-empty list of names, for example {example}")
        if len(set(value)) != len(value):
            raise self.error(key, "lists a name twice; list each one once")
        return tuple(value)

    def finish(self) -> None:
        """Raise ``ValueError`` naming every key that was never read."""
        unknown = sorted(set(self.settings) - self._read)
        if unknown:
            valid = ", ".join(sorted(self._read))
            raise ValueError(
                f"{self.provider}: unknown setting(s) {', '.join(map(repr, unknown))}; "
                f"check the spelling (valid settings: {valid})"
            )


@dataclass(frozen=True)
class CommonSettings:
    """The settings every inbound transport shares (see the README (Transports)).

    ``tls`` is ``"implicit"``, ``"starttls"`` (IMAP) / ``"stls"`` (POP3) or ``"none"``;
    ``auth`` is ``"login"``, ``"xoauth2"``, ``"oauthbearer"`` or (POP3) ``"apop"``.
    Exactly one of the three password sources is set for password mechanisms, exactly one
    of ``token_command`` / ``token_callable`` for the OAuth ones.
    """

    provider: str
    host: str
    port: int
    tls: str
    ca_file: str | None
    verify: bool
    username: str
    password_env: str | None
    password_file: str | None
    password_command: str | None
    auth: str
    token_command: str | None
    token_callable: str | None
    allow_plaintext_auth: bool
    action: str
    batch_size: int
    connect_timeout: float
    timeout: float
    account_id: str
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_response_lines: int = DEFAULT_MAX_RESPONSE_LINES

    @property
    def limits(self) -> Limits:
        """The bounds on what the server may send (see ``limits.Limits``)."""
        return Limits(
            max_message_size=self.max_message_size,
            max_response_bytes=self.max_response_bytes,
            max_response_lines=self.max_response_lines,
            timeout=self.timeout,
        )

    @property
    def uses_token(self) -> bool:
        """True for the OAuth 2.0 mechanisms (a bearer token instead of a password)."""
        return self.auth in ("xoauth2", "oauthbearer")

    @property
    def secrets_hint(self) -> str:
        """Where the secret comes from, for messages (never the secret itself)."""
        for key in ("password_env", "password_file", "password_command"):
            value = getattr(self, key)
            if value:
                return f"{key} = {value!r}"
        if self.token_command:
            return "token_command"
        if self.token_callable:
            return f"token_callable = {self.token_callable!r}"
        return "no secret"


def read_common(
    reader: SettingsReader,
    *,
    tls_modes: Mapping[str, int],
    auth_modes: Sequence[str],
    actions: Sequence[str],
) -> CommonSettings:
    """Read and cross-check the shared settings. ``tls_modes`` maps each TLS mode to its
    default port; the first one is the default mode."""
    host = reader.required_string("host", '"mail.example.com"')
    tls = reader.choice("tls", list(tls_modes), next(iter(tls_modes)))
    port = reader.port("port", tls_modes[tls])
    ca_file = reader.string("ca_file")
    verify = reader.boolean("verify", True)
    username = reader.required_string("username", '"me@example.com"')
    sources = {k: reader.string(k) for k in ("password_env", "password_file", "password_command")}
    auth = reader.choice("auth", auth_modes, "login")
    token_command = reader.string("token_command")
    token_callable = reader.string("token_callable")
    allow_plaintext_auth = reader.boolean("allow_plaintext_auth", False)
    action = reader.choice("action", actions, "keep")
    batch_size = reader.positive_int("batch_size", 200)
    connect_timeout = reader.seconds("connect_timeout", 15.0)
    timeout = reader.seconds("timeout", 60.0)
    account_id = reader.string("account_id", f"{username}@{host}")
    max_message_size = reader.positive_int("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
    max_response_bytes = reader.positive_int("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)
    max_response_lines = reader.positive_int("max_response_lines", DEFAULT_MAX_RESPONSE_LINES)
    assert batch_size is not None
    assert account_id is not None
    assert max_message_size is not None
    assert max_response_bytes is not None
    assert max_response_lines is not None

    if reader.has("password"):
        raise reader.error(
            "password",
            "inline passwords are not accepted; use password_env, password_file or "
            "password_command",
        )
    given = [k for k, v in sources.items() if v is not None]
    if auth in ("xoauth2", "oauthbearer"):
        if (token_command is None) == (token_callable is None):
            raise reader.error(
                "token_command",
                f'auth = "{auth}" needs exactly one of token_command or token_callable',
            )
        if given:
            raise reader.error(given[0], f'is not used with auth = "{auth}"; remove it')
    else:
        if len(given) != 1:
            raise reader.error(
                "password_env",
                "set exactly one of password_env, password_file or password_command"
                + (f" (found {', '.join(given)})" if given else ""),
            )
        for key in ("token_command", "token_callable"):
            if reader.settings.get(key) is not None:
                raise reader.error(key, 'is only used with auth = "xoauth2" or "oauthbearer"')
    if token_callable is not None and not _CALLABLE_SPEC.match(token_callable):
        raise reader.error("token_callable", 'must look like "package.module:function"')
    if ca_file is not None and not verify:
        raise reader.error("ca_file", "is ignored with verify = false; remove one of them")
    if tls == "none" and not allow_plaintext_auth:
        raise reader.error(
            "tls",
            'is "none", which sends the password in clear text; use TLS, or set '
            "allow_plaintext_auth = true if this server is on a trusted network",
        )
    if batch_size > 5000:
        raise reader.error("batch_size", "must be at most 5000")
    if max_response_bytes < 64 * 1024:
        raise reader.error("max_response_bytes", "must be at least 65536 (64 KiB)")
    if max_response_lines < 100:
        raise reader.error("max_response_lines", "must be at least 100")
    return CommonSettings(
        provider=reader.provider,
        host=host,
        port=port,
        tls=tls,
        ca_file=ca_file,
        verify=verify,
        username=username,
        password_env=sources["password_env"],
        password_file=sources["password_file"],
        password_command=sources["password_command"],
        auth=auth,
        token_command=token_command,
        token_callable=token_callable,
        allow_plaintext_auth=allow_plaintext_auth,
        action=action,
        batch_size=batch_size,
        connect_timeout=connect_timeout,
        timeout=timeout,
        account_id=account_id,
        max_message_size=max_message_size,
        max_response_bytes=max_response_bytes,
        max_response_lines=max_response_lines,
    )

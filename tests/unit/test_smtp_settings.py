"""The smtp transport's settings validation and its secret lookups (env, file, command,
callable), which must never put a secret into an error text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mapispool.mapi import MAPI_E_LOGON_FAILED, MapiError
from mapispool.transports.smtp import SmtpProvider, parse_settings
from mapispool.transports.smtp.secrets import (
    call_token_callable,
    resolve_password,
    resolve_token,
    run_secret_command,
)

SECRET = "s3cr3t-Value"


def test_defaults() -> None:
    """Only host is required; STARTTLS on 587 with verification is the default."""
    s = parse_settings({"host": "smtp.x.test"})
    assert (s.port, s.tls, s.verify, s.auth, s.connections) == (587, "starttls", True, "auto", 1)
    assert (s.connect_timeout, s.timeout, s.address_types) == (30.0, 60.0, ("SMTP",))
    assert parse_settings({"host": "h", "tls": "implicit"}).port == 465
    assert parse_settings({"host": "h", "tls": "none"}).port == 25


@pytest.mark.parametrize(
    ("section", "key", "fix"),
    [
        ({}, "host", "set host"),
        ({"host": "h", "pasword_env": "X"}, "pasword_env", "remove it"),
        ({"host": "h", "tls": "ssl"}, "tls", '"starttls"'),
        ({"host": "h", "port": 0}, "port", "port = 587"),
        ({"host": "h", "port": "25"}, "port", "port = 587"),
        ({"host": "h", "verify": "no"}, "verify", "true or false"),
        ({"host": "h", "timeout": 0}, "timeout", "seconds"),
        ({"host": "h", "connections": 0}, "connections", "connections = 4"),
        ({"host": "h", "auth": "cram-md5"}, "auth", "one of"),
        ({"host": "h", "password_env": "X"}, "password_env", "set username"),
        ({"host": "h", "username": "u"}, "username", "password_env"),
        (
            {"host": "h", "username": "u", "password_env": "X", "password_file": "f"},
            "password_file",
            "only one",
        ),
        (
            {"host": "h", "username": "u", "auth": "xoauth2", "password_env": "X"},
            "auth",
            "token_command",
        ),
        (
            {"host": "h", "username": "u", "token_callable": "nocolon"},
            "token_callable",
            "package.module:function",
        ),
        (
            {"host": "h", "tls": "none", "username": "u", "password_env": "X"},
            "tls",
            "allow_plaintext_auth = true",
        ),
        ({"host": "h", "helo_name": "two words"}, "helo_name", "host name"),
        ({"host": "h", "address_types": "SMTP"}, "address_types", '["SMTP"]'),
    ],
)
def test_invalid_settings_name_the_key_and_the_fix(
    section: dict[str, Any], key: str, fix: str
) -> None:
    """Every invalid section raises ValueError naming the key and how to fix it."""
    with pytest.raises(ValueError, match=key) as info:
        SmtpProvider.check_settings(section)
    assert fix in str(info.value)


def test_plaintext_auth_only_when_allowed() -> None:
    """AUTH without TLS is accepted only with allow_plaintext_auth = true."""
    s = parse_settings(
        {
            "host": "h",
            "tls": "none",
            "username": "u",
            "password_env": "X",
            "allow_plaintext_auth": True,
        }
    )
    assert s.wants_auth


def test_repr_hides_an_inline_password() -> None:
    """An inline password is accepted but never shown by repr."""
    s = parse_settings({"host": "h", "username": "u", "password": SECRET})
    assert SECRET not in repr(s)


async def test_password_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """password_env reads the variable at each lookup, so a rotated value is picked up."""
    settings = parse_settings({"host": "h", "username": "u", "password_env": "SMTP_PW"})
    monkeypatch.setenv("SMTP_PW", "one")
    assert await resolve_password(settings) == "one"
    monkeypatch.setenv("SMTP_PW", "two")
    assert await resolve_password(settings) == "two"
    monkeypatch.delenv("SMTP_PW")
    with pytest.raises(MapiError, match="SMTP_PW") as info:
        await resolve_password(settings)
    assert info.value.hresult == MAPI_E_LOGON_FAILED


async def test_password_from_file(tmp_path: Path) -> None:
    """password_file takes the first line without its line end; a missing file is named."""
    secret_file = tmp_path / "pw"
    secret_file.write_text(f"{SECRET}\nignored\n")
    settings = parse_settings({"host": "h", "username": "u", "password_file": str(secret_file)})
    assert await resolve_password(settings) == SECRET
    secret_file.unlink()
    with pytest.raises(MapiError, match="password_file"):
        await resolve_password(settings)


async def test_password_and_token_from_commands() -> None:
    """Commands give their first stdout line; a failing one reports only its exit status."""
    settings = parse_settings({"host": "h", "username": "u", "password_command": f"echo {SECRET}"})
    assert await resolve_password(settings) == SECRET
    token_settings = parse_settings(
        {"host": "h", "username": "u", "token_command": "printf 'tok-1\\n'"}
    )
    assert await resolve_token(token_settings) == "tok-1"
    with pytest.raises(MapiError) as info:
        await run_secret_command(f"echo {SECRET}; exit 3", "password_command")
    assert "status 3" in str(info.value)
    assert SECRET not in str(info.value)


async def test_secret_command_has_a_deadline() -> None:
    """A hanging helper is killed after its deadline instead of hanging the transport."""
    with pytest.raises(MapiError, match="did not finish"):
        await run_secret_command("sleep 10", "token_command", limit=0.2)


def _token() -> str:
    return "tok-sync"


async def _async_token() -> str:
    return "tok-async"


def _leaky() -> str:
    raise RuntimeError(SECRET)


async def test_token_callable() -> None:
    """token_callable may be sync or async; its exception text (maybe a token) is dropped."""
    assert await call_token_callable(f"{__name__}:_token") == "tok-sync"
    assert await call_token_callable(f"{__name__}:_async_token") == "tok-async"
    with pytest.raises(MapiError) as info:
        await call_token_callable(f"{__name__}:_leaky")
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None
    with pytest.raises(MapiError, match="cannot import"):
        await call_token_callable("no_such_module_xyz:f")

"""[web] settings and serve --web: validated before anything binds, one line per mistake."""

from __future__ import annotations

import pytest

from mapispool.profile import Profile, ProfileError
from mapispool.web.config import load_web_config

TOKEN = "0123456789abcdef0123"


def test_off_by_default_and_loopback_without_token() -> None:
    """No listen anywhere: no page; a loopback listen needs no token and accepts the
    loopback names as Host and Origin."""
    assert load_web_config({}, None) is None
    config = load_web_config({"listen": "127.0.0.1:8025"}, None)
    assert config is not None
    assert (config.host, config.port, config.token) == ("127.0.0.1", 8025, None)
    assert {"127.0.0.1:8025", "localhost:8025", "[::1]:8025"} <= config.hosts
    assert config.origins >= {"http://127.0.0.1:8025", "http://localhost:8025"}


def test_the_command_line_wins_over_the_profile() -> None:
    """--web overrides [web] listen; an IPv6 address is written in brackets."""
    config = load_web_config({"listen": "127.0.0.1:8025"}, "[::1]:9000")
    assert config is not None
    assert (config.host, config.port, config.url) == ("::1", 9000, "http://[::1]:9000/")


@pytest.mark.parametrize("listen", ["8025", "127.0.0.1", "127.0.0.1:0", "host:99999", ":80"])
def test_a_bad_address_is_one_line(listen: str) -> None:
    """A listen that is not HOST:PORT is refused with the form it should have."""
    with pytest.raises(ProfileError, match="HOST:PORT") as caught:
        load_web_config({}, listen)
    assert "\n" not in str(caught.value)


def test_non_loopback_needs_a_token_from_the_environment() -> None:
    """Not loopback: token_env must name a variable holding 16 characters or more; the
    Host names are the bind address and [web] hosts."""
    with pytest.raises(ProfileError, match="token_env"):
        load_web_config({"listen": "0.0.0.0:8025"}, None, environ={})
    table = {"listen": "192.0.2.7:8025", "token_env": "T", "hosts": ["mail.example.net"]}
    with pytest.raises(ProfileError, match="T must hold the token"):
        load_web_config(table, None, environ={"T": "short"})
    config = load_web_config(table, None, environ={"T": TOKEN})
    assert config is not None
    assert config.token == TOKEN
    assert config.hosts == {"192.0.2.7:8025", "mail.example.net:8025"}


def test_unknown_keys_and_a_web_that_is_not_a_table_are_refused() -> None:
    """A misspelt [web] key and a [web] that is not a table are errors naming the key."""
    with pytest.raises(ProfileError, match=r"web\.lisen: unknown setting"):
        load_web_config({"lisen": "127.0.0.1:1"}, None)
    with pytest.raises(ProfileError, match="web: must be a table"):
        Profile.from_dict({"transports": {}, "web": "127.0.0.1:8025"})
    loaded = Profile.from_dict({"transports": {}, "web": {"listen": "127.0.0.1:8025"}})
    assert loaded.web == {"listen": "127.0.0.1:8025"}


def test_the_sendmail_path_does_not_import_the_web_libraries() -> None:
    """mapispool[web]'s libraries load only for serve --web."""
    import subprocess
    import sys

    code = (
        "import sys, mapispool.cli, mapispool.cli.sendmail, mapispool.web.config; "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'sse_starlette', 'prometheus_client')"
        " if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_without_the_web_extra_serve_web_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """serve --web where the web libraries are not installed: a one-line error naming the
    extra; without --web nothing is imported, so nothing is missing."""
    import sys

    from mapispool.mapi import MapiError
    from mapispool.web.companions import web_companions

    for name in [m for m in sys.modules if m.startswith(("mapispool.web.", "uvicorn"))]:
        if name != "mapispool.web.config":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what a missing package looks like
    profile = Profile.from_dict({"transports": {}})
    assert web_companions(profile, None) == []
    with pytest.raises(MapiError, match=r"pip install 'mapispool\[web\]'") as caught:
        web_companions(profile, "127.0.0.1:8025")
    assert "uvicorn is missing" in str(caught.value)

"""``[listen]`` and ``serve --smtp``: what is refused at load time (an open relay on the
network, AUTH in clear off loopback, half-configured TLS or credentials), and the
listener running inside a real ``mapispool serve`` process."""

from __future__ import annotations

import smtplib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mapispool.listener.settings import ListenSettings, parse_address, parse_listen
from mapispool.mapi import MapiError
from mapispool.profile import Profile
from tests.acceptance.test_cli_support import command, env
from tests.acceptance.test_daemon_support import wait_until, write_profile
from tests.servers._util import HOST, free_port


def test_loopback_without_auth_is_fine() -> None:
    settings = parse_listen({"smtp": "127.0.0.1:2525"})
    assert settings == ListenSettings(host="127.0.0.1", port=2525)
    assert not settings.auth_required


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"smtp": "0.0.0.0:25"}, "needs AUTH"),
        ({"smtp": "192.0.2.1:25", "username": "app", "password_env": "X"}, "in clear"),
        ({"smtp": "127.0.0.1:25", "username": "app"}, "no password source"),
        ({"smtp": "127.0.0.1:25", "password_env": "X"}, "set username"),
        ({"smtp": "127.0.0.1:25", "password": "hunter2"}, "password_env"),
        ({"smtp": "127.0.0.1:25", "tls_cert": "c.pem"}, "tls_key"),
        ({"smtp": "127.0.0.1:25", "require_tls": True}, "certificate"),
        ({"smtp": "127.0.0.1:25", "max_size": 10}, "max_size"),
        ({"smtp": "127.0.0.1:25", "bogus": 1}, "not a listener setting"),
        ({"smtp": "127.0.0.1"}, "HOST:PORT"),
        ({"smtp": "127.0.0.1:99999"}, "TCP port"),
        ({"username": "app"}, "smtp"),
    ],
)
def test_bad_listen_tables_are_refused(table: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_listen(table)


def test_off_loopback_with_auth_and_tls_is_accepted() -> None:
    settings = parse_listen(
        {"smtp": "[::]:587", "username": "app", "password_file": "/run/pw",
         "tls_cert": "c.pem", "tls_key": "k.pem"}
    )  # fmt: skip
    assert settings is not None
    assert (settings.host, settings.port, settings.auth_required) == ("::", 587, True)


def test_the_profile_checks_listen_at_load() -> None:
    with pytest.raises(MapiError, match="listen"):
        Profile.from_dict({"listen": {"smtp": "0.0.0.0:2525"}})
    assert parse_address("[::1]:2525") == ("::1", 2525)


def test_serve_smtp_relays_what_it_accepts(tmp_path: Path, smtp_server: Any) -> None:
    """``mapispool serve --smtp``: a message accepted over SMTP reaches the relay."""
    profile = write_profile(tmp_path, "store.db", smtp_server.port)
    port = free_port()
    log_path = tmp_path / "smtp-daemon.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        command(profile, "serve", "--smtp", f"{HOST}:{port}"),
        stdout=subprocess.DEVNULL, stderr=log, env=env(),
    )  # fmt: skip
    try:

        def text() -> str:
            return log_path.read_text(errors="replace")

        wait_until(lambda: "event=started" in text() or process.poll() is not None)
        assert process.poll() is None, text()
        assert "event=smtp-listening" in text()
        with smtplib.SMTP(HOST, port, timeout=30) as client:
            client.sendmail(
                "app@example.test", ["bob@example.test"],
                b"From: app@example.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nhi\r\n",
            )  # fmt: skip
        (txn,) = smtp_server.wait_for(1, timeout=30)
        assert txn.rcpt_tos == ("bob@example.test",)
    finally:
        process.terminate()
        process.wait(timeout=40)
        log.close()


def test_serve_with_a_bad_smtp_address_says_so(tmp_path: Path, smtp_server: Any) -> None:
    profile = write_profile(tmp_path, "store.db", smtp_server.port)
    result = subprocess.run(
        command(profile, "serve", "--smtp", "127.0.0.1:notaport"),
        capture_output=True, text=True, env=env(), timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "listen.smtp" in result.stderr
    assert "Traceback" not in result.stderr

"""Helpers for the CLI acceptance tests: run ``mapispool`` in a subprocess against a
profile in a temporary directory (no tests here)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

MESSAGE = b"From: me@example.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\r\nHello.\r\n"


def message(subject: str = "Hello", to: str = "bob@example.test") -> bytes:
    return (
        f"From: me@example.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nHello, {to}.\r\n"
    ).encode()


def smtp_profile(tmp: Path, port: int, *, send_immediately: bool = False) -> Path:
    """A profile with one ``smtp`` transport to 127.0.0.1:port and a store in ``tmp``."""
    path = tmp / "profile.toml"
    path.write_text(
        f'store = "store.db"\nsend_immediately = {str(send_immediately).lower()}\n\n'
        f'[transports.out]\nprovider = "smtp"\nhost = "127.0.0.1"\nport = {port}\n'
        'tls = "none"\ntimeout = 10\n',
        encoding="utf-8",
    )
    return path


def command(profile: Path | None, *args: str) -> list[str]:
    base = [sys.executable, "-m", "mapispool.cli"]
    return [*base, "--profile", str(profile), *args] if profile else [*base, *args]


def env() -> dict[str, str]:
    values = dict(os.environ)
    values.pop("MAPISPOOL_PROFILE", None)
    values["COLUMNS"] = "200"
    return values


def run(
    profile: Path | None, *args: str, stdin: bytes | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``mapispool --profile PROFILE ARGS...``; stdout and stderr captured as text."""
    return subprocess.run(
        command(profile, *args),
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
        check=False,
    )


def sendmail(
    args: Sequence[str], stdin: bytes, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    """The ``mapispool-sendmail`` entry point, run as a script."""
    code = "from mapispool.cli import sendmail_main; sendmail_main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=env(),
        check=False,
    )

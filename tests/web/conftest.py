"""A real ``mapispool serve --web`` on a free port, for the web tests: its profile sends to
the in-process aiosmtpd server (``smtp_server``) and waits for Send/Receive
(``send_immediately = false``), so a test decides when mail moves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mapispool import Session
from tests.servers._util import free_port
from tests.servers.smtp import SmtpServer


def command(profile: Path, *args: str) -> list[str]:
    """``mapispool --profile PROFILE ARGS...`` as this interpreter runs it."""
    return [sys.executable, "-m", "mapispool.cli", "--profile", str(profile), *args]


def env() -> dict[str, str]:
    """The environment for a ``mapispool`` subprocess: no profile from the caller's."""
    values = dict(os.environ)
    values.pop("MAPISPOOL_PROFILE", None)
    return values


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``predicate`` until it returns something true; ``TimeoutError`` otherwise."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)
    return value


class WebDaemon:
    """``mapispool serve --web 127.0.0.1:PORT`` in a subprocess, its log in a file."""

    def __init__(
        self, directory: Path, smtp_port: int, web: str = "", environ: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.profile = directory / "profile.toml"
        self.profile.write_text(
            'store = "store.db"\nsend_immediately = false\n\n'
            f'[transports.out]\nprovider = "smtp"\nhost = "127.0.0.1"\nport = {smtp_port}\n'
            'tls = "none"\ntimeout = 30\n\n'
            f'[web]\nlisten = "127.0.0.1:{self.port}"\n{web}',
            encoding="utf-8",
        )
        self.log = directory / "daemon.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            command(self.profile, "serve"),
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
            env={**env(), **(environ or {})},
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_listening(self) -> WebDaemon:
        wait_until(lambda: "event=web-listening" in self.text() or self.process.poll() is not None)
        assert self.process.poll() is None, self.text()
        return self

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)

    def submit(self, count: int, subject: str = "web test") -> list[str]:
        """Queue ``count`` messages through the Python API (the store alone)."""
        ids = []
        with Session.open(self.profile) as session:
            for n in range(count):
                message = (
                    f"From: me@example.org\r\nTo: you{n}@example.org\r\n"
                    f"Subject: {subject} {n}\r\n\r\nmessage {n}\r\n"
                ).encode()
                ids.append(session.submit(message).hex())
        return ids

    def cli_json(self, *args: str) -> Any:
        done = subprocess.run(
            command(self.profile, *args), capture_output=True, text=True, env=env(), timeout=60
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=40)
        finally:
            self._log_file.close()


def page_token(client: httpx.Client) -> str:
    token: str = client.get("/api/token").json()["token"]
    return token


def post(client: httpx.Client, path: str, body: Any = None, **headers: str) -> httpx.Response:
    """A POST as the page makes it: same Origin, page token."""
    base = {"Origin": str(client.base_url).rstrip("/"), "X-Mapispool-Token": page_token(client)}
    return client.post(path, json=body if body is not None else {}, headers={**base, **headers})


def wait_flush_done(client: httpx.Client, flush_id: str) -> dict[str, Any]:
    """The result of flush ``flush_id`` once it has ended."""

    def ended() -> dict[str, Any] | None:
        for record in client.get("/api/flushes").json():
            if record["id"] == flush_id and record["result"] is not None:
                result: dict[str, Any] = record["result"]
                return result
        return None

    result: dict[str, Any] = wait_until(ended)
    return result


@pytest.fixture
def web_daemon_factory(
    tmp_path: Path, smtp_server: SmtpServer
) -> Iterator[Callable[..., WebDaemon]]:
    started: list[WebDaemon] = []

    def make(web: str = "", environ: dict[str, str] | None = None) -> WebDaemon:
        directory = tmp_path / f"d{len(started)}"
        directory.mkdir()
        daemon = WebDaemon(directory, smtp_server.port, web, environ)
        started.append(daemon)
        return daemon.wait_listening()

    yield make
    for daemon in started:
        assert daemon.stop() == 0, daemon.text()


@pytest.fixture
def web_daemon(web_daemon_factory: Callable[..., WebDaemon]) -> WebDaemon:
    """A daemon serving the page on loopback without a token (the default setup)."""
    return web_daemon_factory()


@pytest.fixture
def artifacts() -> Path:
    """Where tests leave files for people to look at (screenshots):
    ``$MAPISPOOL_TEST_ARTIFACTS``, else ``build/test-artifacts`` in the checkout."""
    root = Path(__file__).resolve().parents[2]
    where = Path(os.environ.get("MAPISPOOL_TEST_ARTIFACTS", root / "build" / "test-artifacts"))
    where.mkdir(parents=True, exist_ok=True)
    return where

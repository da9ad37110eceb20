"""Helpers for the daemon acceptance tests: a ``mapispool serve`` subprocess on a profile
whose store may be named in any way (a symlink, a ``..`` path); no tests here."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.test_cli_support import command, env


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def write_profile(directory: Path, store: str, smtp_port: int, *, eager: bool = True) -> Path:
    """A profile in ``directory`` whose store is ``store`` (as written, relative to the
    profile) with one ``smtp`` transport named ``out`` to 127.0.0.1:smtp_port."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "profile.toml"
    path.write_text(
        f'store = "{store}"\nsend_immediately = {str(eager).lower()}\n\n'
        f'[transports.out]\nprovider = "smtp"\nhost = "127.0.0.1"\nport = {smtp_port}\n'
        'tls = "none"\ntimeout = 30\n',
        encoding="utf-8",
    )
    return path


class Serve:
    """A ``mapispool serve`` subprocess; its stderr (the event log) goes to a file."""

    def __init__(self, profile: Path, name: str = "daemon") -> None:
        self.log = profile.parent / f"{name}.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            command(profile, "serve"), stdout=subprocess.DEVNULL, stderr=self._log_file, env=env()
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_started(self) -> Serve:
        """Wait for the ``started`` event; fails with the log if the process ended."""
        wait_until(lambda: "event=started" in self.text() or self.process.poll() is not None)
        assert self.process.poll() is None, self.text()
        return self

    def wait_exit(self, timeout: float = 40) -> int:
        """The exit code; a process still running after ``timeout`` is killed first."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            self._log_file.close()
        return code

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit()

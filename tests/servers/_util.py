"""Helpers shared by the server fixtures: ports, binaries, processes, permissions."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

HOST = "127.0.0.1"
"""Every test server binds this address and nothing else."""

# Debian puts daemons in sbin, which a non-root PATH often lacks.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")

_PACKAGES = {
    "dovecot": "dovecot-imapd dovecot-pop3d",
    "doveconf": "dovecot-imapd dovecot-pop3d",
    "postfix": "postfix",
    "smtp-sink": "postfix",
    "postconf": "postfix",
}


def in_ci() -> bool:
    """True when the environment says CI, where a test that needs a server must run."""
    return os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: server tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def which(binary: str) -> str | None:
    """The full path of *binary*, looking in the sbin directories too; None when absent."""
    found = shutil.which(binary)
    if found:
        return found
    extra = os.pathsep.join(_EXTRA_BIN_DIRS)
    return shutil.which(binary, path=extra)


def need(binary: str) -> str:
    """Return the full path of *binary*, or skip the test (fail it when CI=true).

    *binary* is a program name such as ``dovecot``, ``postfix`` or ``smtp-sink``; the skip
    message names the Debian package that provides it.
    """
    path = which(binary)
    if path is None:
        package = _PACKAGES.get(binary, binary)
        _unavailable(f"install {package} (scripts/install-servers does it as root)")
        raise AssertionError("unreachable")  # pragma: no cover - skip/fail raised
    return path


def need_root(what: str) -> None:
    """Skip (fail under CI) unless running as root, which *what* needs."""
    if os.geteuid() != 0:
        _unavailable(f"{what} needs root to run its mail user and chown its files")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = HOST) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.01,
) -> None:
    """Poll *condition* until it is true; raise TimeoutError naming *what* after *timeout* s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def wait_for_ports(
    ports: list[int],
    timeout: float = 5.0,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Wait until every port accepts connections; fail early when *proc* dies."""

    def ready() -> bool:
        if proc is not None and proc.poll() is not None:
            detail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode} before listening\n{detail}")
        return all(port_open(p) for p in ports)

    wait_until(ready, timeout, f"ports {ports} on {HOST}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM *proc*, then SIGKILL it if it has not exited within *timeout* seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            stream.close()


def pid_alive(pid: int) -> bool:
    """True while a process with *pid* exists (zombies included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def chown_tree(path: Path, user: str, group: str) -> None:
    """Recursively give *path* to user:group (like ``chown -R``)."""
    shutil.chown(path, user, group)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            shutil.chown(os.path.join(root, name), user, group)

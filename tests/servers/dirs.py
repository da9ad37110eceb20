"""Directories for daemons that drop privileges (Dovecot, Postfix, smtp-sink).

pytest's own tmp dirs sit below ``pytest-of-USER``, which pytest makes 0700 at the start of
*every* session. A daemon running as ``nobody`` or ``postfix`` could reach files there only
if we loosened that directory, and the next pytest session on the machine (another
engineer's run, a second CI job) would tighten it again under our running servers. So
these directories live in a per-session directory of their own under the system tmp dir,
linked from pytest's basetemp as ``servers`` so logs are easy to find, and removed at the
end of the session (kept when MAPISPOOL_KEEP_SERVER_DIRS=1).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


class ServerDirs:
    """Hands out fresh directories that unprivileged daemon users can traverse (0711)."""

    def __init__(self, link_from: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mapispool-servers-"))
        self.root.chmod(0o711)
        if link_from is not None:
            with contextlib.suppress(OSError):
                (link_from / "servers").symlink_to(self.root)

    def make(self, name: str) -> Path:
        """A new empty directory ``<root>/<name>-XXXX``, mode 0711."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        path.chmod(0o711)
        return path

    def remove(self) -> None:
        """Delete everything, unless MAPISPOOL_KEEP_SERVER_DIRS=1 asks to keep it."""
        if os.environ.get("MAPISPOOL_KEEP_SERVER_DIRS") != "1":
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def server_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDirs]:
    """Session-wide :class:`ServerDirs`; its root is removed after the last server stopped."""
    dirs = ServerDirs(link_from=tmp_path_factory.getbasetemp())
    yield dirs
    dirs.remove()

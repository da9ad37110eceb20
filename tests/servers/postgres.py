"""A throwaway PostgreSQL cluster for the tests (the PostgreSQL store, DESIGN §9).

Once per test session: ``initdb`` (as the ``postgres`` user when we are root, since the
server refuses to run as root) into a fresh directory, then ``postgres`` in the foreground
on a free port on 127.0.0.1, its Unix socket in that directory, trust authentication (only
loopback and the private socket can reach it). When ``MAPISPOOL_TEST_PG`` names a libpq
URL, that server is used instead and nothing is started.

Each test gets a schema of its own (``pg_store``), dropped at teardown, so tests stay
independent without the cost of a database per test.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers._util import (
    HOST,
    _unavailable,
    free_port,
    port_open,
    stop_process,
    wait_for_ports,
    wait_until,
)
from tests.servers.dirs import ServerDirs

#: Debian keeps the server binaries out of PATH, in a directory per major version.
_DEBIAN_BIN = Path("/usr/lib/postgresql")
_SERVER_USER = "postgres"
URL_ENV = "MAPISPOOL_TEST_PG"


def server_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres`` (newest Debian version first,
    then PATH), or None."""
    if _DEBIAN_BIN.is_dir():
        versions = sorted(
            (p for p in _DEBIAN_BIN.iterdir() if (p / "bin" / "initdb").exists()),
            key=lambda p: int(p.name) if p.name.isdigit() else 0,
            reverse=True,
        )
        if versions:
            return versions[0] / "bin"
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_server_user() -> str | None:
    """The user to run the server as: ``postgres`` when we are root (PostgreSQL refuses
    root), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SERVER_USER)
    except KeyError:
        _unavailable("running as root needs a 'postgres' user to start PostgreSQL")
    return _SERVER_USER


class PostgresServer:
    """A PostgreSQL cluster in ``base``; ``url`` reaches its ``postgres`` database as the
    superuser ``postgres`` over TCP on 127.0.0.1."""

    def __init__(self, base: Path) -> None:
        bin_dir = server_bin_dir()
        if bin_dir is None:
            _unavailable("install postgresql-15 (scripts/install-servers does it as root)")
            raise AssertionError("unreachable")  # pragma: no cover - skip/fail raised
        self.bin_dir = bin_dir
        self.base = base
        self.data = base / "data"
        self.socket_dir = base / "run"
        self.log = base / "postgres.log"
        self.host = HOST
        self.port = free_port()
        self.user = _as_server_user()
        self._proc: subprocess.Popen[bytes] | None = None
        self.socket_dir.mkdir()
        if self.user is not None:
            shutil.chown(base, self.user)
            shutil.chown(self.socket_dir, self.user)
        self._initdb()

    @property
    def url(self) -> str:
        """The libpq URL of the ``postgres`` database (trust auth: no password)."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _initdb(self) -> None:
        result = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D", str(self.data),
                "-U", "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user=self.user,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> PostgresServer:
        """Start ``postgres`` in the foreground; returns once it accepts connections."""
        if self.running:
            raise RuntimeError("PostgreSQL is already running")
        log = self.log.open("ab")
        with log:
            self._proc = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    "-D", str(self.data),
                    "-p", str(self.port),
                    "-k", str(self.socket_dir),
                    "-c", f"listen_addresses={self.host}",
                    # The tests kill workers, never the machine: durability against power
                    # loss is PostgreSQL's business, and fsync would only slow the suite.
                    "-c", "fsync=off",
                    "-c", "full_page_writes=off",
                    "-c", "max_connections=200",
                ],
                user=self.user,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )  # fmt: skip
        try:
            wait_for_ports([self.port], timeout=30.0, proc=self._proc, log=self.log)
            wait_until(self._accepts_queries, 30.0, "PostgreSQL to accept queries", 0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def _accepts_queries(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self, mode: signal.Signals = signal.SIGINT) -> None:
        """Stop the server: SIGINT is PostgreSQL's fast shutdown (sessions are cut off,
        their advisory locks released); SIGKILL kills the postmaster (a crash)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(mode)
        stop_process(proc, timeout=30.0)
        wait_until(lambda: not port_open(self.port), 10.0, "PostgreSQL's port to close")

    def restart(self) -> None:
        """Stop and start again on the same port (the data is kept)."""
        self.stop()
        self.start()


@dataclass(frozen=True)
class PgStoreLocation:
    """Where one test's PostgreSQL store lives: a libpq URL and a schema of its own."""

    url: str
    schema: str


@pytest.fixture(scope="session")
def postgres_server(server_dirs: ServerDirs) -> Iterator[PostgresServer | None]:
    """The throwaway cluster of this test session, or None when ``MAPISPOOL_TEST_PG`` names
    an outside server. Skipped without the binaries or psycopg (failed under CI=true)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("install mapispool[postgres] (psycopg) to test the PostgreSQL store")
    if os.environ.get(URL_ENV):
        yield None
        return
    server = PostgresServer(server_dirs.make("postgres"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer | None) -> str:
    """The libpq URL of the session's PostgreSQL (``MAPISPOOL_TEST_PG`` if set)."""
    return postgres_server.url if postgres_server is not None else os.environ[URL_ENV]


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[PgStoreLocation]:
    """A fresh, empty schema for this test's store; dropped afterwards."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield PgStoreLocation(postgres_url, schema)
    with contextlib.suppress(psycopg.Error), psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
async def postgres_store(pg_store: PgStoreLocation) -> AsyncIterator[Any]:
    """An open, empty ``PostgresStore`` in this test's schema (the contract tests'
    ``N_store`` fixture for the backend "postgres")."""
    from mapispool.store.postgres import PostgresStore

    store = await PostgresStore.open(pg_store.url, schema=pg_store.schema)
    try:
        yield store
    finally:
        await store.close()

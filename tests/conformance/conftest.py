"""Helpers for the conformance suite: sessions over recording transports sharing a journal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mapispool.profile import Profile
from mapispool.session import AsyncSession
from mapispool.testing import Journal, TransportScript
from tests.conftest import StoreBackend


def message(subject: str, to: str = "bob@example.test", extra: str = "") -> bytes:
    """A small RFC 5322 message."""
    return (
        f"From: alice@example.test\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}"
        f"Message-ID: <{subject.replace(' ', '.')}@example.test>\r\n\r\nHello.\r\n"
    ).encode()


class Rig:
    """A journal, one script per transport, and a way to log a session on, with the
    store on ``backend`` (the ``rig`` fixture's runs on SQLite and on PostgreSQL; a rig
    made by hand without one keeps a SQLite file in ``tmp_path``)."""

    def __init__(self, tmp_path: Path, backend: StoreBackend | None = None) -> None:
        self.tmp_path = tmp_path
        self.backend = backend or StoreBackend("sqlite", tmp_path, None)
        self.journal = Journal()
        self.scripts: dict[str, TransportScript] = {}

    def script(self, name: str, **options: Any) -> TransportScript:
        script = TransportScript(journal=self.journal, **options)
        self.scripts[name] = script
        return script

    def profile(self, **options: Any) -> Profile:
        data: dict[str, Any] = {
            **self.backend.options(),
            "send_immediately": False,
            "transports": {
                name: {"provider": "recording", "script": script}
                for name, script in self.scripts.items()
            },
        }
        data.update(options)
        return Profile.from_dict(data)

    async def logon(self, **options: Any) -> AsyncSession:
        session = await AsyncSession.logon(self.profile(**options))
        self.journal.clear()  # tests look at what happens after logon
        return session

    def flush_trace(self, transport: str | None = None) -> list[str]:
        """The journal without poll/validate noise."""
        return [c for c in self.journal.trace(transport) if ".poll" not in c]


@pytest.fixture
def rig(tmp_path: Path, store_backend: StoreBackend) -> Rig:
    return Rig(tmp_path, store_backend)


@pytest.fixture(params=["mrxp", "on_success"])
def marking(request: pytest.FixtureRequest) -> str:
    """Both ways a transport may set PR_RESPONSIBILITY (``TransportScript.marking``): a
    test that takes this fixture runs once per style, e.g. ``rig.script("a",
    marking=marking)``."""
    return str(request.param)


@pytest.fixture
async def session_factory(rig: Rig) -> AsyncIterator[Callable[..., Any]]:
    sessions: list[AsyncSession] = []

    async def make(**options: Any) -> AsyncSession:
        session = await rig.logon(**options)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        await session.logoff()

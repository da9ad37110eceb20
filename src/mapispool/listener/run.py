"""The daemon's entry to the listener: read the configuration before logging on (so a
bad ``--smtp`` fails at once with one line), then run it for the daemon's lifetime."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..mapi import MAPI_E_INVALID_PARAMETER, MapiError
from ..profile import Profile
from ..session import AsyncSession
from .settings import ListenSettings, parse_listen

#: The daemon's event log: ``events(name, level="info", **fields)``.
Events = Callable[..., None]


class ListenerPlan:
    """A listener to run, or none (``settings`` is None)."""

    def __init__(self, settings: ListenSettings | None) -> None:
        self.settings = settings

    @contextlib.asynccontextmanager
    async def running(self, session: AsyncSession, events: Events) -> AsyncIterator[Any]:
        """Listen while the body runs; stop accepting before the session goes away."""
        if self.settings is None:
            yield None
            return
        from .server import SmtpListener  # aiosmtpd only when a listener is configured

        listener = SmtpListener(session, self.settings)
        await listener.start()
        events(
            "smtp-listening",
            address=self.settings.address,
            auth=self.settings.auth_required,
            starttls=self.settings.has_tls,
            max_size=self.settings.max_size,
        )
        try:
            yield listener
        finally:
            await listener.stop()


def smtp_listener(profile: Profile, smtp: str | None = None) -> ListenerPlan:
    """The listener ``serve`` runs: ``smtp`` (``--smtp HOST:PORT``) or ``[listen] smtp``."""
    try:
        return ListenerPlan(parse_listen(profile.listen, smtp=smtp))
    except ValueError as exc:
        raise MapiError(MAPI_E_INVALID_PARAMETER, str(exc)) from exc

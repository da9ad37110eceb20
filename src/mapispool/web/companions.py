"""What ``serve`` runs beside the daemon for the web page (``--web`` or ``[web] listen``).

Apart from ``config`` (pure validation) so that the web libraries are imported only when
the page is asked for, and so that nothing imports back from the server.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from ..mapi import MAPI_E_NO_SUPPORT, MapiError
from ..profile import Profile
from .config import load_web_config

Starter = Callable[[Any, Any], AbstractAsyncContextManager[Any]]


def web_companions(profile: Profile, listen: str | None) -> list[Starter]:
    """What ``serve`` runs beside the daemon for the page: nothing unless ``--web`` or
    ``[web] listen`` asks for it. The web libraries are imported only then, so a missing
    ``mapispool[web]`` extra is an error for ``serve --web`` alone."""
    config = load_web_config(profile.web, listen, source=profile.source)
    if config is None:
        return []
    try:
        from .server import web_server
    except ImportError as exc:
        raise MapiError(
            MAPI_E_NO_SUPPORT,
            f"the web page needs the optional libraries ({exc.name} is missing): "
            "pip install 'mapispool[web]'",
        ) from exc
    return [lambda session, events: web_server(session, config, events)]

"""``Pop3Settings``: the validated profile section of a ``pop3`` transport."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._inbound.settings import CommonSettings, SettingsReader, read_common

TLS_PORTS = {"implicit": 995, "stls": 110, "none": 110}
AUTH_MODES = ("login", "apop", "xoauth2", "oauthbearer")
ACTIONS = ("keep", "delete")


@dataclass(frozen=True)
class Pop3Settings:
    """Shared inbound settings plus ``max_size`` (bytes; None: no limit)."""

    common: CommonSettings
    max_size: int | None

    @classmethod
    def parse(cls, settings: Mapping[str, Any]) -> Pop3Settings:
        """Validate a profile section; ``ValueError`` names the key and the fix."""
        reader = SettingsReader("pop3", settings)
        common = read_common(reader, tls_modes=TLS_PORTS, auth_modes=AUTH_MODES, actions=ACTIONS)
        max_size = reader.positive_int("max_size", None)
        reader.finish()
        return cls(common=common, max_size=max_size)

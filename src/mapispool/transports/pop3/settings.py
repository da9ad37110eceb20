"""``Pop3Settings``: the validated profile section of a ``pop3`` transport."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .._inbound.settings import CommonSettings, SettingsReader, read_common

TLS_PORTS = {"implicit": 995, "stls": 110, "none": 110}
AUTH_MODES = ("login", "apop", "xoauth2", "oauthbearer")
ACTIONS = ("keep", "delete")


@dataclass(frozen=True)
class Pop3Settings:
    """Shared inbound settings; ``max_size`` is the older name of ``max_message_size``."""

    common: CommonSettings

    @property
    def max_size(self) -> int:
        """The largest message downloaded, in bytes (``max_message_size``)."""
        return self.common.max_message_size

    @classmethod
    def parse(cls, settings: Mapping[str, Any]) -> Pop3Settings:
        """Validate a profile section; ``ValueError`` names the key and the fix."""
        reader = SettingsReader("pop3", settings)
        common = read_common(reader, tls_modes=TLS_PORTS, auth_modes=AUTH_MODES, actions=ACTIONS)
        max_size = reader.positive_int("max_size", None)
        reader.finish()
        if max_size is not None:
            if "max_message_size" in settings:
                raise reader.error(
                    "max_size", "is the older name of max_message_size; keep only one of them"
                )
            common = replace(common, max_message_size=max_size)
        return cls(common=common)

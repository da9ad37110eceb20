"""``ImapSettings``: the validated profile section of an ``imap`` transport."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._inbound.settings import CommonSettings, SettingsReader, read_common

TLS_PORTS = {"implicit": 993, "starttls": 143, "none": 143}
AUTH_MODES = ("login", "xoauth2", "oauthbearer")
ACTIONS = ("keep", "delete", "move")


@dataclass(frozen=True)
class ImapSettings:
    """Shared inbound settings plus ``folders``, ``move_to`` and ``idle``."""

    common: CommonSettings
    folders: tuple[str, ...]
    move_to: str | None
    idle: bool

    @classmethod
    def parse(cls, settings: Mapping[str, Any]) -> ImapSettings:
        """Validate a profile section; ``ValueError`` names the key and the fix."""
        reader = SettingsReader("imap", settings)
        common = read_common(reader, tls_modes=TLS_PORTS, auth_modes=AUTH_MODES, actions=ACTIONS)
        folders = reader.string_list("folders", ["INBOX"])
        move_to = reader.string("move_to")
        idle = reader.boolean("idle", True)
        reader.finish()
        if common.action == "move":
            if move_to is None:
                raise reader.error("move_to", 'missing; action = "move" needs move_to = "Archive"')
            if move_to in folders:
                raise reader.error("move_to", "must not be one of the folders read from")
        elif move_to is not None:
            raise reader.error("move_to", 'is only used with action = "move"; remove it')
        return cls(common=common, folders=folders, move_to=move_to, idle=idle)

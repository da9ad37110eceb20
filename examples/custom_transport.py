"""A complete custom transport: every message goes to a JSON-lines file.

Load it from a profile with  provider = "custom_transport:JsonLinesProvider"
(with this folder on PYTHONPATH). See the README, "Writing a transport".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from mapispool.spi import OutboundMessage, TransportLogon, TransportProvider


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(text)


class JsonLinesLogon(TransportLogon):
    """Appends one JSON line per recipient to the file named by the `path` setting."""

    def address_types(self) -> Sequence[str]:
        return ["SMTP"]

    async def submit_message(self, message: OutboundMessage, flags: int) -> None:
        text = message.content.decode("utf-8", "replace")
        lines = ""
        for recipient in message.pending_recipients():
            lines += json.dumps({"to": recipient.address, "text": text}) + "\n"
            recipient.responsibility = True  # PR_RESPONSIBILITY: this one is done
        await asyncio.to_thread(append, Path(self.support.settings["path"]), lines)


class JsonLinesProvider(TransportProvider):
    logon_class = JsonLinesLogon

"""A complete custom transport: every message goes to a JSON-lines file.

Load it from a profile with  provider = "custom_transport:JsonLinesProvider"
(with this folder on PYTHONPATH). See the README, "Writing a transport".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mapispool.spi import OutboundMessage, TransportLogon, TransportProvider


class JsonLinesLogon(TransportLogon):
    """Appends one JSON line per recipient to the file named by the `path` setting."""

    def address_types(self) -> Sequence[str]:
        return ["SMTP"]

    async def submit_message(self, message: OutboundMessage, flags: int) -> None:
        path = Path(self.support.settings["path"])
        with path.open("a", encoding="utf-8") as out:
            for recipient in message.pending_recipients():
                line = {"to": recipient.address, "from": message.sender,
                        "bytes": message.content.decode("utf-8", "replace")}  # fmt: skip
                out.write(json.dumps(line) + "\n")
                recipient.responsibility = True  # PR_RESPONSIBILITY: this one is done


class JsonLinesProvider(TransportProvider):
    logon_class = JsonLinesLogon

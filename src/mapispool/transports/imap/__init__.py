"""The ``imap`` inbound transport: IMAP4rev1 via imapclient, off the event loop.

Dedupe keys are ``imap:<account>/<folder>:<uidvalidity>:<uid>``; see
the README (Transports, imap) for settings and guarantees.
"""

from __future__ import annotations

from .logon import ImapLogon
from .provider import ImapProvider
from .settings import ImapSettings

__all__ = ["ImapLogon", "ImapProvider", "ImapSettings"]

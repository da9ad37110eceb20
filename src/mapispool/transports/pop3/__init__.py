"""The ``pop3`` inbound transport: POP3 via stdlib poplib, off the event loop.

Dedupe keys are ``pop3:<account>:<uidl>``; see the README (Transports, pop3) for settings and
guarantees.
"""

from __future__ import annotations

from .logon import Pop3Logon
from .provider import Pop3Provider
from .settings import Pop3Settings

__all__ = ["Pop3Logon", "Pop3Provider", "Pop3Settings"]

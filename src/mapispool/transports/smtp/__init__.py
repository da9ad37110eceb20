"""The ``smtp`` transport: sends queued messages to an SMTP server with aiosmtplib.

Protocol logic lives in small I/O-free modules (``replies``, ``auth``, ``settings``,
``envelope``, ``content``, ``outcome``); ``secrets`` looks up passwords and tokens;
``connection`` drives one client; ``logon`` and ``provider`` implement the SPI.
"""

from __future__ import annotations

from .errors import SmtpError
from .logon import SmtpLogon
from .provider import SmtpProvider
from .settings import SmtpSettings, parse_settings

__all__ = ["SmtpError", "SmtpLogon", "SmtpProvider", "SmtpSettings", "parse_settings"]

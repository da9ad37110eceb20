"""Helpers shared by the inbound transports (``imap`` and ``pop3``).

Everything here is free of mail-protocol I/O: settings validation, secret and token
retrieval, TLS contexts, translation of foreign errors into ``MapiError``, and the single
worker thread that keeps blocking client libraries off the event loop.
"""

from __future__ import annotations

from .errors import redact, translate_error
from .secrets import Credentials, sasl_oauthbearer, sasl_xoauth2
from .settings import CommonSettings, SettingsReader
from .tls import make_ssl_context
from .worker import Worker

__all__ = [
    "CommonSettings",
    "Credentials",
    "SettingsReader",
    "Worker",
    "make_ssl_context",
    "redact",
    "sasl_oauthbearer",
    "sasl_xoauth2",
    "translate_error",
]

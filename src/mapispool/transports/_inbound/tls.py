"""TLS client contexts built from the ``ca_file`` / ``verify`` settings."""

from __future__ import annotations

import ssl

from .settings import CommonSettings


def make_ssl_context(settings: CommonSettings) -> ssl.SSLContext:
    """A client context: the system's CAs (or ``ca_file`` alone), hostname checked.

    With ``verify = false`` neither the chain nor the host name is checked; the logon
    logs a warning about it when it connects (``CommonSettings.verify`` is only false when
    a profile says so explicitly).
    """
    context = ssl.create_default_context(cafile=settings.ca_file)
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context

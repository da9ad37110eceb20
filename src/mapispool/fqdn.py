"""The host's fully qualified domain name, looked up once per process: the domain of
Message-IDs when the sender's is unknown, and of sendmail's default sender."""

from __future__ import annotations

import functools
import socket


@functools.cache
def host_fqdn() -> str:
    """``socket.getfqdn()``, cached: the lookup may ask DNS, which can be slow."""
    return socket.getfqdn() or "localhost"

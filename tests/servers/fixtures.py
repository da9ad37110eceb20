"""pytest plugin that registers the real-server fixtures (see tests/servers/README.md).

Loaded from the root conftest with ``pytest_plugins = ["tests.servers.fixtures"]``.
"""

from __future__ import annotations

from tests.servers._util import need
from tests.servers.dirs import server_dirs
from tests.servers.dovecot import dovecot, dovecot_user
from tests.servers.postfix import postfix
from tests.servers.postgres import pg_store, postgres_server, postgres_store, postgres_url
from tests.servers.smtp import smtp, smtp_server, smtp_server_factory
from tests.servers.smtp_sink import smtp_sink, smtp_sink_factory
from tests.servers.tls import tls_ca

__all__ = [
    "dovecot",
    "dovecot_user",
    "need",
    "pg_store",
    "postfix",
    "postgres_server",
    "postgres_store",
    "postgres_url",
    "server_dirs",
    "smtp",
    "smtp_server",
    "smtp_server_factory",
    "smtp_sink",
    "smtp_sink_factory",
    "tls_ca",
]

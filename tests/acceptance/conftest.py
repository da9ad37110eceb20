"""Fixtures shared by the command-line acceptance tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.smtp import SmtpServer


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """An aiosmtpd server on 127.0.0.1 that refuses nobody@example.test with 550 and
    takes everything else."""
    server = SmtpServer(rcpt_answers={"nobody@example.test": "550 5.1.1 no such user"})
    server.start()
    try:
        yield server
    finally:
        server.stop()

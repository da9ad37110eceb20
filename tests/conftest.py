"""Shared pytest configuration: server fixtures live in tests/servers/."""

from __future__ import annotations

pytest_plugins = ["tests.servers.fixtures"]

"""Transport providers: the registry and the built-in transports."""

from __future__ import annotations

from .registry import BUILTIN_PROVIDERS, ENTRY_POINT_GROUP, ProviderNotFound, resolve_provider

__all__ = ["BUILTIN_PROVIDERS", "ENTRY_POINT_GROUP", "ProviderNotFound", "resolve_provider"]

"""Where transport providers come from: built-in names, the ``mapispool.transports``
entry-point group, or an explicit ``"package.module:ClassName"``.

Built-ins are imported lazily so that a profile using only ``loopback`` never imports
aiosmtplib or imapclient.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from ..mapi.errors import NotFoundError
from ..spi import TransportProvider

ENTRY_POINT_GROUP = "mapispool.transports"

#: Registered names of the providers shipped with mapispool.
BUILTIN_PROVIDERS: dict[str, str] = {
    "loopback": "mapispool.transports.loopback:LoopbackProvider",
    "maildir": "mapispool.transports.maildir:MaildirProvider",
    "smtp": "mapispool.transports.smtp:SmtpProvider",
    "imap": "mapispool.transports.imap:ImapProvider",
    "pop3": "mapispool.transports.pop3:Pop3Provider",
    "recording": "mapispool.testing:RecordingTransport",
}


class ProviderNotFound(NotFoundError):
    """No provider of that name (``MAPI_E_NOT_FOUND``; a ``LookupError`` as before); the
    message says what was looked at and what to do."""


def _import_object(spec: str) -> object:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ProviderNotFound(f"{spec!r} is not of the form 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        raise ProviderNotFound(
            f"cannot import module {module_name!r} for provider {spec!r}: "
            f"no module named {missing!r} (is the package installed in this environment?)"
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ProviderNotFound(f"module {module_name!r} has no attribute {attr!r}") from exc


def resolve_provider(spec: str) -> type[TransportProvider]:
    """The provider class for ``spec``: a built-in name, an entry-point name, or
    ``"package.module:ClassName"``. Raises ``ProviderNotFound`` with a fix in the text."""
    target: object
    if ":" in spec:
        target = _import_object(spec)
    elif spec in BUILTIN_PROVIDERS:
        target = _import_object(BUILTIN_PROVIDERS[spec])
    else:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not matches:
            known = ", ".join(sorted(set(BUILTIN_PROVIDERS) | set(plugin_names())))
            raise ProviderNotFound(
                f"unknown provider {spec!r}; use one of: {known}, or 'package.module:ClassName'"
            )
        target = matches[0].load()
    if not (isinstance(target, type) and issubclass(target, TransportProvider)):
        raise ProviderNotFound(f"{spec!r} is not a subclass of mapispool.spi.TransportProvider")
    return target


def plugin_names() -> list[str]:
    """Names registered by installed plug-ins under the ``mapispool.transports`` group."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))

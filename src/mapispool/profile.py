"""Profiles (DESIGN §4): which transports to log on, in which order, and the spooler's settings.

A profile is a TOML file or a dict. Every mistake is reported at load time with the file,
the key and the fix, as a ``ProfileError`` (a ``MapiError`` with ``MAPI_E_UNCONFIGURED``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .mapi import MAPI_E_UNCONFIGURED, MapiError
from .mapi.errors import NotFoundError
from .profile_secrets import warn_if_exposed
from .store.postgres_settings import is_postgres_url, parse_lease, postgres_url_problem

if TYPE_CHECKING:
    from .spi import TransportProvider
    from .store.base import Store


class ProfileError(MapiError):
    """A profile that cannot be used; ``str()`` names the file, the key and the fix."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        where = source or "<profile>"
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        super().__init__(MAPI_E_UNCONFIGURED, text)
        self.source = source
        self.key = key


#: Settings of a transport section that the spooler itself reads; the rest go to the provider.
SPOOLER_TRANSPORT_KEYS = frozenset({"provider", "poll_interval", "lanes"})


@dataclass(frozen=True)
class TransportConfig:
    """One ``[transports.NAME]`` section; its provider is imported and checked at load,
    or with ``check_transports=False`` at the first use of ``provider_class``."""

    name: str
    provider: str
    settings: Mapping[str, Any]
    poll_interval: float = 60.0
    #: How many workers of a many-worker store may send through it at once (1: submit order).
    lanes: int = 1
    source: str | None = field(default=None, compare=False, repr=False)  # for errors
    _provider_class: type[TransportProvider] | None = field(default=None, compare=False, repr=False)

    @property
    def provider_class(self) -> type[TransportProvider]:
        """The provider class, imported and its settings checked on first use."""
        if self._provider_class is None:
            resolved = resolve_transport(self.name, self.provider, self.settings, self.source)
            object.__setattr__(self, "_provider_class", resolved)
            return resolved
        return self._provider_class


def resolve_transport(
    name: str, provider: str, settings: Mapping[str, Any], source: str | None
) -> type[TransportProvider]:
    """Import the provider class of ``[transports.NAME]`` and let it check its settings;
    a ``ProfileError`` naming the key and the fix when either fails."""
    from .transports.registry import ProviderNotFound, resolve_provider

    key = f"transports.{name}"
    try:
        provider_class = resolve_provider(provider)
    except ProviderNotFound as exc:
        raise ProfileError(exc.message, source=source, key=f"{key}.provider") from exc
    try:
        provider_class.check_settings(settings)
    except ValueError as exc:
        raise ProfileError(str(exc), source=source, key=key) from exc
    return provider_class


@dataclass(frozen=True)
class RetryConfig:
    """``[retry]``: backoff between ``floor`` and ``cap`` seconds, doubling per attempt with
    jitter; a message still undelivered ``lifetime`` seconds after submission fails with
    an NDR. Defaults follow Postfix (300 s, 4000 s, 5 days)."""

    floor: float = 300.0
    cap: float = 4000.0
    lifetime: float = 5 * 24 * 3600.0
    delay_warning: float | None = None
    resend_later: float = 60.0


@dataclass(frozen=True)
class Profile:
    """A loaded, validated profile. ``transports`` is in transport order."""

    transports: tuple[TransportConfig, ...]
    store: str | None = None
    store_schema: str | None = None
    store_password_env: str | None = None
    store_password_file: str | None = None
    store_password_command: str | None = None
    store_lease: float | None = None  # seconds; None: the PostgreSQL store's 30 s
    send_immediately: bool = True
    parallel_flush: bool = False
    retry: RetryConfig = field(default_factory=RetryConfig)
    flush_every: float | None = None
    #: The ``[web]`` table as written; ``mapispool.web.config`` validates it when serving.
    web: Mapping[str, Any] = field(default_factory=dict)
    #: ``[sendmail] delivery``: "background", "now" or "queue"; None: see cli.sendmail.
    sendmail_delivery: str | None = None
    source: str | None = None
    #: NDRs for mail from sendmail or the SMTP listener also go to the envelope sender.
    bounce_to_sender: bool = True
    #: The ``[listen]`` table (the SMTP listener), validated by ``listener.settings``.
    listen: Mapping[str, Any] = field(default_factory=dict)

    # -- loading ------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, check_transports: bool = True) -> Profile:
        """Read and validate a TOML profile file. ``check_transports=False`` leaves each
        transport's provider unimported and unchecked until used: for queueing only."""
        source = os.fspath(path)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ProfileError(
                "file not found; create one with 'mapispool init' or pass --profile",
                source=source,
            ) from exc
        except OSError as exc:
            raise ProfileError(f"cannot read the file: {exc.strerror}", source=source) from exc
        data = _parse_toml(text, source)
        profile = cls.from_dict(data, source=source, check_transports=check_transports)
        warn_if_exposed(source, data)
        return profile

    @classmethod
    def from_toml(
        cls, text: str, *, source: str | None = None, check_transports: bool = True
    ) -> Profile:
        """Parse and validate profile TOML text (``check_transports``: as in ``load``)."""
        data = _parse_toml(text, source)
        return cls.from_dict(data, source=source, check_transports=check_transports)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str | None = None, check_transports: bool = True
    ) -> Profile:
        """Validate a profile given as a mapping (the parsed form of the TOML file);
        ``check_transports``: as in ``load``."""
        return _ProfileReader(data, source, check_transports).read()

    # -- queries ------------------------------------------------------------------

    def transport(self, name: str) -> TransportConfig:
        """The section called ``name``; ``NotFoundError`` (``MAPI_E_NOT_FOUND``, a
        ``KeyError`` too) if there is none."""
        for config in self.transports:
            if config.name == name:
                return config
        known = ", ".join(c.name for c in self.transports) or "none"
        raise NotFoundError(
            f"no transport called {name!r} in the profile; the transports are: {known}"
        )

    @property
    def store_is_postgres(self) -> bool:
        """True when ``store`` is a ``postgresql://`` (or ``postgres://``) libpq URL."""
        return self.store is not None and is_postgres_url(self.store)

    def store_password(self) -> str | None:
        """The PostgreSQL store's password from ``store_password_env``, ``_file`` or
        ``_command``, read now (a rotated password is picked up at the next connect); None
        when none is set, so that libpq's ``PGPASSWORD`` or ``~/.pgpass`` apply. Raises
        ``MapiError(MAPI_E_LOGON_FAILED)`` naming the setting, never the secret."""
        from .transports import _secrets

        if self.store_password_env:
            return _secrets.read_env(self.store_password_env, "store_password_env")
        if self.store_password_file:
            return _secrets.read_file(self.store_password_file, "store_password_file")
        if self.store_password_command:
            return _secrets.run_command(self.store_password_command, "store_password_command")
        return None

    def postgres_store_options(self) -> dict[str, Any]:
        """The keyword options of ``PostgresStore.open(self.store, **options)``: the
        schema and a callable that reads the password by reference when connecting."""
        lease = {} if self.store_lease is None else {"lease": self.store_lease}
        return {"schema": self.store_schema, "password": self.store_password, **lease}

    async def open_store(self) -> Store:
        """Open the store this profile names: the PostgreSQL store (with its schema and
        password source) for a ``postgresql://`` URL, else the SQLite store at
        ``store_path()``."""
        if self.store is not None and self.store_is_postgres:
            from .store.postgres import PostgresStore

            return await PostgresStore.open(self.store, **self.postgres_store_options())
        from .store import open_store

        return await open_store(self.store_path())

    def store_path(self) -> Path:
        """Where the SQLite store lives: ``store`` (``sqlite:///path`` or a path, relative
        to the profile file) or ``store.db`` in the user data directory.

        A PostgreSQL store has no path: ``ProfileError`` says so, rather than letting a
        caller that expects a file open a SQLite store in its place (open any store with
        ``open_store()``)."""
        if self.store is None:
            from platformdirs import user_data_path

            return user_data_path("mapispool") / "store.db"
        if self.store_is_postgres:
            raise ProfileError(
                "names a PostgreSQL store, which has no file; open it with Profile.open_store()",
                source=self.source,
                key="store",
            )
        raw = self.store.removeprefix("sqlite://")
        path = Path(raw).expanduser()
        if not path.is_absolute() and self.source is not None and raw != ":memory:":
            path = Path(self.source).resolve().parent / path
        return path


def _parse_toml(text: str, source: str | None) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"not valid TOML: {exc}", source=source) from exc


_POSTGRES_STORE_KEYS = (
    "store_schema",
    "store_password_env",
    "store_password_file",
    "store_password_command",
    "store_lease",
)
_PASSWORD_SOURCES = ("store_password_env", "store_password_file", "store_password_command")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


TOP_LEVEL_KEYS = {
    "store": 'a store URL or path, e.g. store = "sqlite:///home/me/.mapispool/store.db"'
    ' or store = "postgresql://mapispool@db.example.com:5432/mail"',
    "store_schema": "the PostgreSQL schema that holds the store (default: mapispool)",
    "store_password_env": "the environment variable holding the PostgreSQL password",
    "store_password_file": "a file whose first line is the PostgreSQL password",
    "store_password_command": "a command that prints the PostgreSQL password",
    "store_lease": 'how long a PostgreSQL worker\'s claims outlive it, e.g. "30s" (default)',
    "transport_order": "a list of transport section names",
    "send_immediately": "true or false",
    "parallel_flush": "true or false",
    "flush_every": "minutes between scheduled Send/Receive runs of the daemon",
    "retry": "a table with floor, cap, lifetime, delay_warning, resend_later (seconds)",
    "transports": "a table of [transports.NAME] sections",
    "bounce_to_sender": "true or false (false keeps NDRs only in the Inbox)",
    "listen": 'a table for the SMTP listener, e.g. [listen] smtp = "127.0.0.1:2525"',
    "web": 'a table with listen = "127.0.0.1:8025" and token_env (the web page and metrics)',
    "sendmail": 'a table with delivery = "background", "now" or "queue"',
}


class _ProfileReader:
    """Validates one profile mapping, collecting the source for error messages."""

    def __init__(
        self, data: Mapping[str, Any], source: str | None, check_transports: bool = True
    ) -> None:
        self.data = data
        self.source = source
        self.check_transports = check_transports

    def error(self, key: str | None, message: str) -> ProfileError:
        return ProfileError(message, source=self.source, key=key)

    def read(self) -> Profile:
        if not isinstance(self.data, Mapping):
            raise self.error(None, "a profile must be a table of settings")
        for key in self.data:
            if key not in TOP_LEVEL_KEYS:
                known = ", ".join(TOP_LEVEL_KEYS)
                raise self.error(key, f"unknown setting; the known ones are: {known}")
        transports = self.read_transports()
        store = self.read_store()
        return Profile(
            transports=transports,
            store=store,
            store_schema=self.optional_str("store_schema"),
            store_password_env=self.optional_str("store_password_env"),
            store_password_file=self.optional_str("store_password_file"),
            store_password_command=self.optional_str("store_password_command"),
            store_lease=self.read_lease(),
            send_immediately=self.boolean("send_immediately", True),
            parallel_flush=self.boolean("parallel_flush", False),
            retry=self.read_retry(),
            flush_every=self.minutes("flush_every"),
            web=self.table("web"),
            sendmail_delivery=self.read_sendmail(),
            source=self.source,
            bounce_to_sender=self.boolean("bounce_to_sender", True),
            listen=self.read_listen(),
        )

    def read_store(self) -> str | None:
        """``store`` and the settings that only a PostgreSQL store takes, checked together."""
        store = self.optional_str("store")
        postgres_only = [k for k in _POSTGRES_STORE_KEYS if self.data.get(k) is not None]
        if store is None or not is_postgres_url(store):
            if postgres_only:
                raise self.error(
                    postgres_only[0],
                    'only a PostgreSQL store takes it; set store = "postgresql://USER@HOST/DB"'
                    " or remove it",
                )
            return store
        problem = postgres_url_problem(store)
        if problem:
            raise self.error("store", problem)
        sources = [k for k in _PASSWORD_SOURCES if self.data.get(k) is not None]
        if len(sources) > 1:
            raise self.error(sources[1], f"set only one password source, not {sources}")
        schema = self.optional_str("store_schema")
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise self.error(
                "store_schema",
                f"{schema!r} is not a plain schema name; use lower-case letters, digits and"
                " _ (at most 63, starting with a letter or _)",
            )
        return store

    def read_lease(self) -> float | None:
        try:
            return parse_lease(self.data.get("store_lease"))
        except ValueError as exc:
            raise self.error("store_lease", str(exc)) from exc

    def read_listen(self) -> Mapping[str, Any]:
        if "listen" not in self.data:
            return {}  # without importing the listener's settings (and ipaddress)
        from .listener.settings import parse_listen

        table = self.data["listen"]
        try:
            parse_listen(table)
        except ValueError as exc:
            raise self.error("listen", str(exc)) from exc
        return dict(table)

    def read_sendmail(self) -> str | None:
        section = self.data.get("sendmail")
        if section is None:
            return None
        if not isinstance(section, Mapping):
            raise self.error("sendmail", 'must be a table: [sendmail] delivery = "background"')
        for key in section:
            if key != "delivery":
                raise self.error(f"sendmail.{key}", "unknown setting; use delivery")
        value = section.get("delivery")
        if value not in (None, "background", "now", "queue"):
            raise self.error(
                "sendmail.delivery", f'must be "background", "now" or "queue", not {value!r}'
            )
        return value

    def optional_str(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a non-empty string, not {value!r}")
        return value

    def table(self, key: str) -> Mapping[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, Mapping):
            raise self.error(key, f"must be a table, e.g. [{key}], not {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {value!r}")
        return value

    def minutes(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.error(key, f"must be a positive number of minutes, not {value!r}")
        return float(value) * 60.0

    def read_retry(self) -> RetryConfig:
        table = self.data.get("retry", {})
        if not isinstance(table, Mapping):
            raise self.error("retry", "must be a table, e.g. [retry] floor = 300")
        defaults = RetryConfig()
        values: dict[str, float | None] = {}
        for key, value in table.items():
            if not hasattr(defaults, key):
                raise self.error(
                    f"retry.{key}",
                    "unknown setting; use floor, cap, lifetime, delay_warning or resend_later",
                )
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise self.error(f"retry.{key}", f"must be a number of seconds, not {value!r}")
            values[key] = float(value)
        retry = RetryConfig(**values)  # type: ignore[arg-type]
        if retry.floor > retry.cap:
            raise self.error("retry.floor", "must not be larger than retry.cap")
        return retry

    def read_transports(self) -> tuple[TransportConfig, ...]:
        sections = self.data.get("transports", {})
        if not isinstance(sections, Mapping):
            raise self.error("transports", "must be a table of [transports.NAME] sections")
        order = self.data.get("transport_order")
        if order is None:
            order = list(sections)
        if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
            raise self.error("transport_order", "must be a list of transport section names")
        if len(set(order)) != len(order):
            raise self.error("transport_order", "names a transport more than once")
        for name in order:
            if name not in sections:
                raise self.error(
                    "transport_order", f"names {name!r}, but there is no [transports.{name}]"
                )
        for name in sections:
            if name not in order:
                raise self.error(
                    "transport_order",
                    f"leaves out [transports.{name}]; list every transport exactly once",
                )
        return tuple(self.read_transport(name, sections[name]) for name in order)

    def read_transport(self, name: str, section: Any) -> TransportConfig:
        key = f"transports.{name}"
        if not isinstance(section, Mapping):
            raise self.error(key, 'must be a table with at least provider = "..."')
        provider = section.get("provider")
        if not isinstance(provider, str) or not provider:
            raise self.error(
                f"{key}.provider",
                'missing; set provider = "smtp" (or imap, pop3, maildir, loopback, '
                "or 'package.module:ClassName')",
            )
        poll_interval = section.get("poll_interval", 60)
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float):
            raise self.error(f"{key}.poll_interval", "must be a number of seconds")
        if poll_interval <= 0:
            raise self.error(f"{key}.poll_interval", "must be more than 0 seconds")
        lanes = section.get("lanes", 1)
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise self.error(f"{key}.lanes", f"must be a whole number of at least 1, not {lanes!r}")
        settings = {k: v for k, v in section.items() if k not in SPOOLER_TRANSPORT_KEYS}
        provider_class = None
        if self.check_transports:
            provider_class = resolve_transport(name, provider, settings, self.source)
        return TransportConfig(
            name=name,
            provider=provider,
            settings=settings,
            poll_interval=float(poll_interval),
            lanes=lanes,
            source=self.source,
            _provider_class=provider_class,
        )

"""The settings of a ``maildir`` profile section, parsed and checked.

``MaildirSettings.parse`` checks types and values only (no file system access), so a
logon can re-parse its section cheaply; ``check_settings`` adds the file system checks
that the profile loader runs once, so that a wrong path fails at load time with the key
and the fix rather than at the first Send/Receive.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACTIONS = ("move", "delete")
SUBDIRS = ("cur", "new", "tmp")

#: Every key a ``maildir`` section may hold, with what it means, for the error message
#: about an unknown key (a typo such as ``include-cur`` must not be silently ignored).
KNOWN_KEYS: Mapping[str, str] = {
    "path": "the Maildir to receive from",
    "include_cur": "also receive from cur/ (true/false)",
    "action": '"move" or "delete"',
    "create": "create the receiving Maildir if missing (true/false)",
    "domains": "e-mail domains delivered locally, a list",
    "deliver_root": "the directory holding one Maildir per local part",
    "account_id": "the name of the receiving Maildir in its dedupe keys (default: its path)",
}


def _path(settings: Mapping[str, Any], key: str) -> Path | None:
    value = settings.get(key)
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f'{key}: must be a directory path, e.g. {key} = "~/Maildir", not {value!r}'
        )
    return Path(value).expanduser()


def _boolean(settings: Mapping[str, Any], key: str, default: bool) -> bool:
    value = settings.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key}: must be true or false, not {value!r}")
    return value


def _domains(settings: Mapping[str, Any]) -> frozenset[str]:
    value = settings.get("domains", [])
    example = 'e.g. domains = ["local.test"]'
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"domains: must be a list of domain names, {example}, not {value!r}")
    domains: set[str] = set()
    for item in value:
        if not isinstance(item, str) or not item.strip() or "@" in item or " " in item.strip():
            raise ValueError(
                f"domains: {item!r} is not a domain name; write bare domains, {example}"
            )
        domains.add(item.strip().lower().rstrip("."))
    return frozenset(domains)


def maildir_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable Maildir (a directory with ``cur/``, ``new/`` and
    ``tmp/``), or ``None`` when it is one."""
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is not a directory"
    missing = [name + "/" for name in SUBDIRS if not (path / name).is_dir()]
    if missing:
        return f"{path} is not a Maildir: it has no {', '.join(missing)}"
    return None


@dataclass(frozen=True)
class MaildirSettings:
    """A validated ``maildir`` section. ``path`` is ``None`` for a send-only transport;
    ``domains`` are lower-case; paths have ``~`` expanded."""

    path: Path | None = None
    include_cur: bool = False
    action: str = "move"
    create: bool = False
    domains: frozenset[str] = frozenset()
    deliver_root: Path | None = None
    account_id: str | None = None
    """Names the receiving Maildir in dedupe keys; None: its real path (``source_id``)."""

    @classmethod
    def parse(cls, settings: Mapping[str, Any]) -> MaildirSettings:
        """Check the keys' types and values (not the file system). Raises ``ValueError``
        whose text starts with the key and ends with the fix."""
        for key in settings:
            if key not in KNOWN_KEYS:
                known = ", ".join(KNOWN_KEYS)
                raise ValueError(f"{key}: unknown setting of the maildir transport; use {known}")
        action = settings.get("action", "move")
        if action not in ACTIONS:
            raise ValueError(
                f'action: must be "move" (to cur/, marked seen) or "delete", not {action!r}'
            )
        domains = _domains(settings)
        deliver_root = _path(settings, "deliver_root")
        if domains and deliver_root is None:
            raise ValueError(
                "deliver_root: missing; with domains set, name the directory that holds one "
                'Maildir per local part, e.g. deliver_root = "~/Maildirs"'
            )
        if deliver_root is not None and not domains:
            raise ValueError(
                "deliver_root: has no effect without domains; "
                'add domains = ["your.domain"] or remove deliver_root'
            )
        account_id = settings.get("account_id")
        if account_id is not None and (not isinstance(account_id, str) or not account_id.strip()):
            raise ValueError(
                f'account_id: must be a non-empty string, e.g. account_id = "home", '
                f"not {account_id!r}"
            )
        path = _path(settings, "path")
        if account_id is not None and path is None:
            raise ValueError("account_id: only used with path (receiving); remove it")
        return cls(
            path=path,
            include_cur=_boolean(settings, "include_cur", False),
            action=str(action),
            create=_boolean(settings, "create", False),
            domains=domains,
            deliver_root=deliver_root,
            account_id=account_id.strip() if account_id is not None else None,
        )

    def source_id(self) -> str | None:
        """What names the receiving Maildir in dedupe keys: ``account_id``, else the
        Maildir's real path (symbolic links resolved, so two spellings of one Maildir
        share keys). None without ``path``. Resolves the path: file system access."""
        if self.path is None:
            return None
        return self.account_id or os.path.realpath(self.path)

    def check_file_system(self) -> None:
        """The load-time checks: ``path`` is a Maildir (or ``create`` is set and it can be
        made one), ``deliver_root`` is an existing directory. Raises ``ValueError``."""
        if self.path is not None:
            if self.create:
                if self.path.exists() and not self.path.is_dir():
                    raise ValueError(
                        f"path: {self.path} is not a directory; point path at a Maildir"
                    )
            else:
                problem = maildir_problem(self.path)
                if problem is not None:
                    raise ValueError(
                        f"path: {problem}; point path at a Maildir (a directory with cur/, "
                        "new/ and tmp/) or set create = true to have it created"
                    )
        if self.deliver_root is not None and not self.deliver_root.is_dir():
            raise ValueError(
                f"deliver_root: {self.deliver_root} is not an existing directory; "
                "create it or correct the path"
            )

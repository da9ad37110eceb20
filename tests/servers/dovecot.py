"""Dovecot IMAP + POP3 on 127.0.0.1, configured and run entirely inside a tmp dir.

One Dovecot runs per test session; each test gets a fresh user (and so a fresh Maildir) from
the ``dovecot_user`` fixture. Each user has its own passwd-file (``passwd.d/<name>``):
Dovecot checks a passwd-file for changes at most once a second, so a shared file would hide
users added within the same second, while a new file is read on first lookup.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers._process import descendants, kill_tree, signal_all, wait_gone
from tests.servers._util import (
    HOST,
    chown_tree,
    free_port,
    need,
    need_root,
    port_open,
    stop_process,
    wait_for_ports,
    wait_until,
)
from tests.servers.dirs import ServerDirs
from tests.servers.tls import TlsFiles

MAIL_USER = "nobody"
MAIL_GROUP = "nogroup"
MAIL_DOMAIN = "example.test"

_CONFIG = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap pop3
listen = {host}
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:{base}/mail/%n/Maildir
mail_fsync = never
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {base}/passwd.d/%n
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={base}/mail/%n
}}
# Tests log in with wrong passwords on purpose: no penalty that would slow the next login.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {imap}
  }}
  inet_listener imaps {{
    address = {host}
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {host}
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = {host}
    port = {pop3s}
    ssl = yes
  }}
}}
"""


def _passwd_line(name: str, password: str) -> str:
    # nodelay: a wrong password is answered at once instead of after Dovecot's delay.
    return f"{name}:{{PLAIN}}{password}::::::nodelay=yes\n"


@dataclass(frozen=True)
class MailUser:
    """A Dovecot login: ``name``/``password`` for LOGIN/USER+PASS, ``address`` at
    example.test (where the Postfix fixture delivers), ``maildir`` its Maildir root."""

    name: str
    password: str
    address: str
    maildir: Path


class DovecotServer:
    """A Dovecot instance with plain and TLS listeners for IMAP and POP3.

    Ports: ``imap_port`` and ``pop3_port`` speak plaintext and offer STARTTLS/STLS;
    ``imaps_port`` and ``pop3s_port`` are TLS from the first byte. Certificates chain to
    ``ca_file``. Everything lives under ``base``; mail under ``mail_root/<user>/Maildir``.
    """

    def __init__(self, base: Path, tls: TlsFiles) -> None:
        self.binary = need("dovecot")
        need_root("Dovecot")
        self.host = HOST
        self.base = base
        self.ca_file = tls.ca_pem
        self.mail_root = base / "mail"
        self.config = base / "dovecot.conf"
        self.log = base / "dovecot.log"
        self.passwd_dir = base / "passwd.d"
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.pop3_port = free_port()
        self.pop3s_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._users = itertools.count(1)
        self._deliveries = itertools.count(1)
        for sub in ("run", "state", "mail", "passwd.d"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.mail_root, MAIL_USER, MAIL_GROUP)
        self.config.write_text(
            _CONFIG.format(
                base=base,
                host=HOST,
                cert=tls.cert_pem,
                key=tls.key_pem,
                user=MAIL_USER,
                group=MAIL_GROUP,
                imap=self.imap_port,
                imaps=self.imaps_port,
                pop3=self.pop3_port,
                pop3s=self.pop3s_port,
            )
        )

    @property
    def ports(self) -> list[int]:
        """All four listening ports."""
        return [self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port]

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> DovecotServer:
        """Start ``dovecot -F``; returns when all four ports accept connections."""
        if self._proc is not None:
            raise RuntimeError("Dovecot is already running")
        stderr = (self.base / "dovecot.stderr").open("ab")
        with stderr:
            self._proc = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        try:
            wait_for_ports(self.ports, proc=self._proc, log=self.base / "dovecot.stderr")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM the master and its children; wait until every one of them is gone."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        children = descendants(proc.pid)
        # Signalling only the master makes it wait about a second for its children.
        proc.send_signal(signal.SIGTERM)
        signal_all(children, signal.SIGTERM)
        stop_process(proc)
        kill_tree(wait_gone(children, timeout=5.0))
        wait_until(lambda: not any(port_open(p) for p in self.ports), 5.0, "Dovecot ports")

    def restart(self) -> None:
        """Stop and start again on the same ports (mail and users are kept)."""
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: re-read the configuration without dropping the listeners."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)

    @property
    def running(self) -> bool:
        """True while the master process runs."""
        return self._proc is not None and self._proc.poll() is None

    # -- users and mail --------------------------------------------------------------

    def add_user(self, name: str | None = None, password: str | None = None) -> MailUser:
        """Add a login (fresh unique name and random password unless given).

        Its Maildir (new/cur/tmp) exists, owned by the mail user, when this returns.
        """
        name = name or f"user{next(self._users)}"
        password = password or secrets.token_urlsafe(12)
        if any(c in name + password for c in ":\n") or not name.replace("-", "").isalnum():
            raise ValueError("user names are letters, digits and '-'; no ':' in passwords")
        entry = self.passwd_dir / name
        if entry.exists():
            raise ValueError(f"user {name} exists already")
        entry.write_text(_passwd_line(name, password))
        maildir = self.maildir_path(name)
        self._make_maildir(maildir)
        return MailUser(name, password, f"{name}@{MAIL_DOMAIN}", maildir)

    def set_password(self, user: str | MailUser, password: str) -> None:
        """Change the password of *user* (takes effect within about a second)."""
        name = user.name if isinstance(user, MailUser) else user
        (self.passwd_dir / name).write_text(_passwd_line(name, password))

    def maildir_path(self, user: str | MailUser) -> Path:
        """The Maildir root of *user* (holding new/, cur/, tmp/ and .Folder/ dirs)."""
        name = user.name if isinstance(user, MailUser) else user
        return self.mail_root / name / "Maildir"

    def folder_path(self, user: str | MailUser, folder: str = "INBOX") -> Path:
        """The Maildir directory of *folder* (Maildir++: INBOX is the root, others ``.Name``)."""
        root = self.maildir_path(user)
        if folder.upper() == "INBOX":
            return root
        return root / ("." + folder.replace("/", "."))

    def deliver(self, user: str | MailUser, raw: bytes, folder: str = "INBOX") -> Path:
        """Put *raw* into *folder* of *user* as a new message, the way an MDA would.

        The file is written in tmp/ and renamed into new/, then given to the mail user.
        Dovecot serves it with CRLF line ends whatever *raw* uses. Returns the file's path.
        """
        directory = self.folder_path(user, folder)
        self._make_maildir(directory)
        unique = f"{time.time_ns()}.M{next(self._deliveries)}P{os.getpid()}.{socket.gethostname()}"
        temp = directory / "tmp" / unique
        temp.write_bytes(raw)
        shutil.chown(temp, MAIL_USER, MAIL_GROUP)
        final = directory / "new" / unique
        temp.rename(final)
        return final

    def message_files(self, user: str | MailUser, folder: str = "INBOX") -> list[Path]:
        """The message files of *folder* in new/ and cur/, oldest name first."""
        directory = self.folder_path(user, folder)
        files = [p for sub in ("new", "cur") for p in (directory / sub).glob("*") if p.is_file()]
        return sorted(files, key=lambda p: p.name)

    def wait_for_messages(
        self, user: str | MailUser, count: int, folder: str = "INBOX", timeout: float = 10.0
    ) -> list[Path]:
        """Block until *folder* of *user* holds at least *count* messages; return their files."""
        wait_until(
            lambda: len(self.message_files(user, folder)) >= count,
            timeout,
            f"{count} message(s) in {folder} of {user}",
        )
        return self.message_files(user, folder)

    def _make_maildir(self, directory: Path) -> None:
        for sub in ("new", "cur", "tmp"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        top = directory
        while top.parent != self.mail_root:
            top = top.parent
        chown_tree(top, MAIL_USER, MAIL_GROUP)


@pytest.fixture(scope="session")
def dovecot(server_dirs: ServerDirs, tls_ca: TlsFiles) -> Iterator[DovecotServer]:
    """One running Dovecot for the session (IMAP, IMAPS, POP3, POP3S on 127.0.0.1).

    Skips (fails under CI=true) when Dovecot is not installed or not running as root.
    Tests should use their own user (``dovecot_user``) rather than share mailboxes. A test
    that stops or restarts it must leave it running.
    """
    server = DovecotServer(server_dirs.make("dovecot"), tls_ca)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def dovecot_user(dovecot: DovecotServer) -> MailUser:
    """A fresh Dovecot user with an empty Maildir, unique to this test."""
    if not dovecot.running:
        dovecot.start()
    return dovecot.add_user()

"""A complete Postfix instance (own config, queue and log) that delivers into Dovecot's Maildir.

It accepts SMTP on 127.0.0.1 and delivers every recipient at ``example.test`` into the
Maildir of one Dovecot user through Postfix's virtual(8) agent, so a test can send with a
real MTA in the path and read the result back over IMAP or POP3.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers._process import descendants, kill_tree, wait_gone
from tests.servers._util import (
    HOST,
    free_port,
    need,
    need_root,
    pid_alive,
    port_open,
    stop_process,
    wait_for_ports,
    wait_until,
)
from tests.servers.dirs import ServerDirs
from tests.servers.dovecot import MAIL_DOMAIN, DovecotServer, MailUser

# Delivery runs as the Dovecot mail user (nobody:nogroup) so Dovecot can read what lands.
_MAIL_UID = 65534
_MAIL_GID = 65534

_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {base}/spool
data_directory = {base}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = mx.{domain}
mydestination =
mynetworks = 127.0.0.0/8
relayhost =
smtpd_relay_restrictions = reject_unauth_destination
relay_domains = discard.test
transport_maps = inline:{{ {{discard.test = discard:}} }}
default_transport = error:5.7.1 tests never relay beyond this machine
alias_maps =
alias_database =
biff = no
maillog_file = {base}/postfix.log
maillog_file_prefixes = /var, /dev/stdout, {base}
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {mail_root}
virtual_mailbox_maps = static:{user}/Maildir/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
"""


def _packaged_master_cf() -> str:
    for candidate in ("/etc/postfix/master.cf", "/usr/share/postfix/master.cf.dist"):
        if os.path.exists(candidate):
            return Path(candidate).read_text()
    raise FileNotFoundError("no packaged master.cf; reinstall postfix")


def master_cf(packaged: str, port: int) -> str:
    """The packaged master.cf with smtpd on 127.0.0.1:*port* and no service chrooted.

    The chroot column is turned off because a chroot would need copies of /etc files
    inside the throwaway queue directory.
    """
    out: list[str] = []
    for line in packaged.splitlines():
        fields = line.split()
        if not line or line[0] in "# \t" or len(fields) < 8:
            out.append(line)
            continue
        if fields[0] == "smtp" and fields[1] == "inet":
            out.append(f"{HOST}:{port} inet n - n - - smtpd")
            continue
        fields[4] = "n"
        out.append(" ".join(fields))
    return "\n".join(out) + "\n"


class PostfixServer:
    """A running Postfix whose smtpd listens on ``host``:``port``.

    Mail for any address ``@example.test`` is delivered into ``user``'s Maildir in the
    given Dovecot; ``@discard.test`` is accepted and discarded; any other domain is refused
    at RCPT TO with 554 5.7.1 (relay access denied). ``log`` is Postfix's own log file.
    """

    def __init__(self, base: Path, dovecot: DovecotServer, user: MailUser) -> None:
        self.binary = need("postfix")
        need_root("Postfix")
        self.host = HOST
        self.port = free_port()
        self.base = base
        self.dovecot = dovecot
        self.user = user
        self.config_dir = base / "etc"
        self.log = base / "postfix.log"
        self.pid_file = base / "spool" / "pid" / "master.pid"
        for sub in ("etc", "spool", "data"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(base / "data", "postfix")
        (self.config_dir / "main.cf").write_text(
            _MAIN_CF.format(
                base=base,
                domain=MAIL_DOMAIN,
                mail_root=dovecot.mail_root,
                user=user.name,
                uid=_MAIL_UID,
                gid=_MAIL_GID,
            )
        )
        (self.config_dir / "master.cf").write_text(master_cf(_packaged_master_cf(), self.port))
        # Postfix re-reads a config file until its mtime is in the past (a guard against
        # reading it half-written), which costs 2-3 s for a file written just now.
        past = time.time() - 10
        for name in ("main.cf", "master.cf"):
            os.utime(self.config_dir / name, (past, past))
        self._launcher: subprocess.Popen[bytes] | None = None
        self._master_pid: int | None = None

    def _postfix(self, *args: str) -> None:
        done = subprocess.run(
            [self.binary, "-c", str(self.config_dir), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            detail = (done.stdout + done.stderr).decode(errors="replace")
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"postfix {' '.join(args)} failed: {detail}\n{log}")

    def start(self) -> PostfixServer:
        """``postfix check`` then ``start-fg``; returns once smtpd accepts connections."""
        self._postfix("check")
        # start-fg would run the same checks again (about a second); this file skips them.
        (self.base / "spool" / "quick-start").touch()
        out = (self.base / "postfix.stdout").open("ab")
        with out:
            self._launcher = subprocess.Popen(
                [self.binary, "-c", str(self.config_dir), "start-fg"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        try:
            wait_for_ports([self.port], timeout=10.0, proc=self._launcher, log=self.log)
            wait_until(self.pid_file.exists, 5.0, "Postfix master.pid")
            self._master_pid = int(self.pid_file.read_text().split()[0])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM the master (pid from spool/pid/master.pid); wait for all its processes."""
        launcher, self._launcher = self._launcher, None
        master, self._master_pid = self._master_pid, None
        if master is None and self.pid_file.exists():
            text = self.pid_file.read_text().split()
            master = int(text[0]) if text else None
        tree: set[int] = set()
        if master is not None and pid_alive(master):
            # The master stops its children itself and reaps them (no zombies left behind).
            tree = descendants(master) | {master}
            os.kill(master, signal.SIGTERM)
        if launcher is not None:
            stop_process(launcher)
        kill_tree(wait_gone(tree, timeout=5.0))
        wait_until(lambda: not port_open(self.port), 5.0, "Postfix smtpd port to close")

    def queue_files(self) -> list[Path]:
        """Messages still in Postfix's queue (incoming, active, deferred, hold)."""
        spool = self.base / "spool"
        return [
            p
            for sub in ("incoming", "active", "deferred", "hold", "maildrop")
            if (spool / sub).is_dir()
            for p in (spool / sub).rglob("*")
            if p.is_file()
        ]

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[Path]:
        """Block until the user's INBOX holds at least *count* messages; return their files.

        On timeout the error includes the end of Postfix's log, which says why mail is stuck.
        """
        try:
            return self.dovecot.wait_for_messages(self.user, count, timeout=timeout)
        except TimeoutError as exc:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise TimeoutError(f"{exc}\n--- postfix log ---\n{log}") from exc

    def delivered_to(self, queue_id: str) -> bool:
        """True when Postfix's log shows *queue_id* delivered (status=sent)."""
        if not self.log.exists():
            return False
        pattern = re.compile(rf"\b{re.escape(queue_id)}: .*status=sent\b")
        return any(pattern.search(line) for line in self.log.read_text().splitlines())


@pytest.fixture
def postfix(
    server_dirs: ServerDirs, dovecot: DovecotServer, dovecot_user: MailUser
) -> Iterator[PostfixServer]:
    """A full Postfix for this test, delivering ``*@example.test`` into ``dovecot_user``.

    Send to ``postfix.host``/``postfix.port`` (no TLS, no AUTH; only example.test and
    discard.test are accepted),
    then ``postfix.wait_for_messages(n)`` and read the mail from Dovecot as
    ``postfix.user``. Stopped (master and every child) at teardown.
    """
    server = PostfixServer(server_dirs.make("postfix"), dovecot, dovecot_user)
    server.start()
    yield server
    server.stop()

"""Servers for the benchmarks: Postfix smtp-sink, a full Postfix relaying to it, and the
test suite's Dovecot (tests/servers), all on 127.0.0.1 in throwaway directories."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.servers._util import (
    HOST,
    free_port,
    port_open,
    stop_process,
    wait_for_ports,
    wait_until,
    which,
)
from tests.servers.dirs import ServerDirs
from tests.servers.dovecot import DovecotServer
from tests.servers.postfix import master_cf
from tests.servers.tls import make_tls_files


class Unavailable(Exception):
    """A server the benchmark needs is not installed or cannot run here."""


def require(binary: str, package: str, *, root: bool = True) -> str:
    path = which(binary)
    if path is None:
        raise Unavailable(f"{binary} missing: apt-get install {package}")
    if root and os.geteuid() != 0:
        raise Unavailable(f"{binary} needs root here")
    return path


class Sink:
    """``smtp-sink`` on a free port: accepts and discards mail as fast as C allows."""

    def __init__(self, dirs: ServerDirs) -> None:
        binary = require("smtp-sink", "postfix")
        self.host = HOST
        self.port = free_port()
        self.base = dirs.make("sink")
        log = self.base / "smtp-sink.log"
        with log.open("ab") as out:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [binary, "-u", "nobody", "-h", "sink.bench.test", f"{HOST}:{self.port}", "256"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        wait_for_ports([self.port], proc=self._proc, log=log)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)
            wait_until(lambda: not port_open(self.port), 5.0, "smtp-sink to stop")


_RELAY_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {base}/spool
data_directory = {base}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = relay.bench.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [{host}]:{sink_port}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_tls_security_level = none
alias_maps =
alias_database =
biff = no
maillog_file = {base}/postfix.log
maillog_file_prefixes = /var, /dev/stdout, {base}
"""


class PostfixRelay:
    """A complete Postfix (fsync'd queue) that relays every message to ``sink_port``.

    ``smtp_source(...)`` feeds it over SMTP (smtpd, cleanup, qmgr, smtp);
    ``delivered()`` counts ``status=sent`` lines."""

    def __init__(self, dirs: ServerDirs, sink_port: int) -> None:
        self.postfix = require("postfix", "postfix")
        self.smtp_source_bin = require("smtp-source", "postfix")
        self.base = dirs.make("postfix-relay")
        self.etc = self.base / "etc"
        self.log = self.base / "postfix.log"
        self.port = free_port()
        for sub in ("etc", "spool", "data"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "postfix", str(self.base / "data")], check=True)
        (self.etc / "main.cf").write_text(
            _RELAY_MAIN_CF.format(base=self.base, host=HOST, sink_port=sink_port)
        )
        packaged = Path("/etc/postfix/master.cf")
        if not packaged.exists():
            packaged = Path("/usr/share/postfix/master.cf.dist")
        (self.etc / "master.cf").write_text(master_cf(packaged.read_text(), self.port))
        past = time.time() - 10  # Postfix waits for config files to be in the past
        for name in ("main.cf", "master.cf"):
            os.utime(self.etc / name, (past, past))
        subprocess.run(
            [self.postfix, "-c", str(self.etc), "check"], check=True, capture_output=True
        )
        out = (self.base / "postfix.stdout").open("ab")
        with out:
            self._launcher: subprocess.Popen[bytes] | None = subprocess.Popen(
                [self.postfix, "-c", str(self.etc), "start-fg"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        wait_for_ports([self.port], timeout=15.0, proc=self._launcher, log=self.log)
        self._offset = 0
        self._sent = 0

    def smtp_source(self, n: int, size: int, sender: str, rcpt: str, sessions: int = 1) -> None:
        """Feed ``n`` messages of ``size`` bytes into this Postfix's smtpd with Postfix's
        own C load generator, over ``sessions`` connections kept open (-d)."""
        subprocess.run(
            [self.smtp_source_bin, "-d", "-s", str(sessions), "-m", str(n), "-l", str(size),
             "-f", sender, "-t", rcpt, f"{HOST}:{self.port}"],
            check=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def delivered(self) -> int:
        """How many deliveries the log shows as ``status=sent`` so far."""
        if not self.log.exists():
            return 0
        with self.log.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._sent += chunk[:end].count(b"status=sent")
        self._offset += end
        return self._sent

    def stop(self) -> None:
        subprocess.run(
            [self.postfix, "-c", str(self.etc), "stop"], check=False, capture_output=True
        )
        launcher, self._launcher = self._launcher, None
        if launcher is not None:
            try:
                launcher.wait(10)
            except subprocess.TimeoutExpired:
                stop_process(launcher)
        wait_until(lambda: not port_open(self.port), 10.0, "Postfix to stop")


def start_dovecot(dirs: ServerDirs) -> DovecotServer:
    """The test suite's Dovecot (IMAP and POP3, plaintext ports used here)."""
    require("dovecot", "dovecot-imapd dovecot-pop3d")
    tls = make_tls_files(dirs.make("tls"))
    return DovecotServer(dirs.make("dovecot"), tls).start()

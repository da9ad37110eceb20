"""Benchmark 5: an empty Send/Receive (nothing queued, nothing waiting) over a profile of
five transports (smtp, imap, pop3, maildir, loopback), against what raw clients need to
find out the same: NOOP + UID SEARCH on an IMAP connection kept open (as the imap
transport keeps its own), a POP3 login + UIDL, a Maildir listing; SMTP and loopback cost
a raw client nothing when there is nothing to send. #11's target: < 10 ms."""

from __future__ import annotations

import os
import poplib
import shutil
import tempfile
from pathlib import Path

from imapclient import IMAPClient
from tests.servers.dirs import ServerDirs

from mapispool.mapi import FLUSH_DOWNLOAD, FLUSH_UPLOAD
from mapispool.session import Session

from .common import Row, Section, Sizes, paired, skipped, stopwatch
from .inbound import PASSWORD_ENV
from .queue import profile
from .servers import Sink, Unavailable, start_dovecot

BENCH = "empty"


def run(sizes: Sizes, dirs: ServerDirs) -> Section:
    section = Section("5. Empty Send/Receive, 5 transports")
    print(f"== {section.title}", flush=True)
    try:
        sink = Sink(dirs)
    except Unavailable as exc:
        section.add(skipped(BENCH, "everything", 1, str(exc)))
        return section
    work = Path(tempfile.mkdtemp(prefix="bench-empty-"))
    try:
        dovecot = start_dovecot(dirs)
    except Unavailable as exc:
        sink.stop()
        section.add(skipped(BENCH, "everything", 1, str(exc)))
        return section
    try:
        user = dovecot.add_user()
        os.environ[PASSWORD_ENV] = user.password
        login = {"host": dovecot.host, "tls": "none", "allow_plaintext_auth": True,
                 "username": user.name, "password_env": PASSWORD_ENV}  # fmt: skip
        maildir = work / "Maildir"
        transports = {
            "smtp": {"provider": "smtp", "host": sink.host, "port": sink.port, "tls": "none"},
            "imap": {"provider": "imap", "port": dovecot.imap_port, **login},
            "pop3": {"provider": "pop3", "port": dovecot.pop3_port, **login},
            "maildir": {"provider": "maildir", "path": str(maildir), "create": True},
            "loopback": {"provider": "loopback", "address": "me@loop.test"},
        }

        # Like the imap transport, the raw client keeps its IMAP connection between
        # rounds (NOOP, then UID SEARCH); POP3 must log in again to see new mail.
        imap = IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False)
        imap.login(user.name, user.password)
        imap.select_folder("INBOX")

        def raw() -> float:
            with stopwatch() as t:
                imap.noop()
                imap.search("ALL")
                pop = poplib.POP3(dovecot.host, dovecot.pop3_port)
                pop.user(user.name)
                pop.pass_(user.password)
                pop.uidl()
                pop.quit()
                for sub in ("new", "cur"):
                    os.listdir(maildir / sub)
            return t[0]

        with Session.logon(profile(work / "store.db", transports)) as session:
            status = session.spooler_status()

            def ours() -> float:
                with stopwatch() as t:
                    result = status.flush_queues(FLUSH_UPLOAD | FLUSH_DOWNLOAD)
                if result.total("sent") or result.total("received") or not result.ok:
                    raise RuntimeError(f"an empty flush did something: {result}")
                return t[0]

            ours()  # the first flush opens connections a later one may reuse
            mine, base = paired(
                sizes.empty_runs,
                Row(BENCH, "mapispool empty Send/Receive", 1),
                ours,
                Row(BENCH, "raw clients: IMAP + POP3 + Maildir check", 1),
                raw,
            )
            section.add(base)
            section.add(mine)
            for row in (base, mine):
                row.extra = f"{(row.median or 0) * 1000:.1f} ms per round"
            ms = (mine.median or 0) * 1000
            section.check("empty Send/Receive, 5 transports", f"{ms:.1f} ms", "< 10 ms",
                          ms < 10)  # fmt: skip
            section.notes.append(
                f"{sizes.empty_runs} rounds each, interleaved; msg/s reads as rounds/s. The "
                "ratio says what the engine adds to the round trips the raw clients need "
                "to find out the same (SMTP and loopback cost them nothing)."
            )
        imap.logout()
    finally:
        dovecot.stop()
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    return section

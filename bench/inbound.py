"""Benchmark 2: downloading N messages from a Dovecot Maildir into the store, over IMAP
(against raw imapclient batched ``UID FETCH BODY.PEEK[]``) and POP3 (against raw poplib),
with getmail6 into a Maildir as the peer."""

from __future__ import annotations

import os
import poplib
import shutil
import subprocess
import tempfile
from pathlib import Path

from imapclient import IMAPClient
from tests.servers._util import chown_tree
from tests.servers.dirs import ServerDirs
from tests.servers.dovecot import MAIL_GROUP, MAIL_USER, DovecotServer, MailUser

from mapispool.mapi import FLUSH_DOWNLOAD
from mapispool.session import Session

from .common import Row, Section, Sizes, measure, message, settle_disk, skipped, stopwatch
from .queue import profile
from .servers import Unavailable, start_dovecot

BENCH = "inbound"
BATCH = 500
PASSWORD_ENV = "MAPISPOOL_BENCH_PASSWORD"


def seed(dovecot: DovecotServer, n: int) -> MailUser:
    """A fresh user whose INBOX holds ``n`` messages, written as an MDA would."""
    user = dovecot.add_user()
    new = dovecot.folder_path(user) / "new"
    for sub in ("new", "cur", "tmp"):
        (new.parent / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (new / f"{1700000000 + i}.M{i}P1.bench").write_bytes(message(i).replace(b"\r\n", b"\n"))
    chown_tree(dovecot.maildir_path(user).parent, MAIL_USER, MAIL_GROUP)
    return user


def raw_imap(dovecot: DovecotServer, user: MailUser, n: int) -> float:
    with stopwatch() as t:
        client = IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False)
        client.login(user.name, user.password)
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        got = 0
        for start in range(0, len(uids), BATCH):
            got += len(client.fetch(uids[start : start + BATCH], ["BODY.PEEK[]"]))
        client.logout()
    if got != n:
        raise RuntimeError(f"imapclient fetched {got} of {n}")
    return t[0]


def raw_pop3(dovecot: DovecotServer, user: MailUser, n: int) -> float:
    with stopwatch() as t:
        client = poplib.POP3(dovecot.host, dovecot.pop3_port)
        client.user(user.name)
        client.pass_(user.password)
        _resp, listing, _octets = client.uidl()
        got = 0
        for line in listing:
            number = int(line.split()[0])
            client.retr(number)
            got += 1
        client.quit()
    if got != n:
        raise RuntimeError(f"poplib fetched {got} of {n}")
    return t[0]


def spooler(dovecot: DovecotServer, user: MailUser, n: int, provider: str) -> float:
    work = Path(tempfile.mkdtemp(prefix=f"bench-{provider}-"))
    os.environ[PASSWORD_ENV] = user.password
    try:
        section = {
            "provider": provider, "host": dovecot.host,
            "port": dovecot.imap_port if provider == "imap" else dovecot.pop3_port,
            "tls": "none", "allow_plaintext_auth": True, "username": user.name,
            "password_env": PASSWORD_ENV, "batch_size": BATCH, "action": "keep",
        }  # fmt: skip
        settle_disk()
        with Session.logon(profile(work / "store.db", {"in": section})) as session:
            with stopwatch() as t:
                result = session.spooler_status().flush_queues(FLUSH_DOWNLOAD)
            stored = session.folder("Inbox").count()
        if result.total("received") != n or stored != n:
            raise RuntimeError(f"{provider}: received {result.total('received')}, stored "
                               f"{stored} of {n}: {result}")  # fmt: skip
        return t[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def getmail(dovecot: DovecotServer, user: MailUser, n: int, kind: str, dirs: ServerDirs) -> float:
    binary = shutil.which("getmail") or str(Path(os.sys.executable).parent / "getmail")
    if not Path(binary).exists():
        raise Unavailable("getmail6 missing: pip install getmail6")
    work = dirs.make("getmail")  # traversable: getmail delivers as nobody, never as root
    try:
        maildir = work / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir(parents=True)
        chown_tree(maildir, MAIL_USER, MAIL_GROUP)
        port = dovecot.imap_port if kind == "IMAP" else dovecot.pop3_port
        (work / "getmailrc").write_text(
            f"[retriever]\ntype = Simple{kind}Retriever\nserver = {dovecot.host}\n"
            f"port = {port}\nusername = {user.name}\npassword = {user.password}\n"
            + ('mailboxes = ("INBOX",)\n' if kind == "IMAP" else "")
            + f"[destination]\ntype = Maildir\npath = {maildir}/\n"
            + (f"user = {MAIL_USER}\n" if os.geteuid() == 0 else "")
            + "[options]\nread_all = true\ndelete = false\nverbose = 0\n"
            "message_log_syslog = false\n"
        )
        settle_disk()
        with stopwatch() as t:
            subprocess.run(
                [binary, "--getmaildir", str(work), "--rcfile", "getmailrc"], check=True,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        got = len(os.listdir(maildir / "new"))
        if got != n:
            raise RuntimeError(f"getmail6 ({kind}) stored {got} of {n}")
        return t[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(sizes: Sizes, dirs: ServerDirs) -> Section:
    section = Section("2. Inbound download from Dovecot")
    print(f"== {section.title}", flush=True)
    n, runs = sizes.inbound, sizes.runs
    try:
        dovecot = start_dovecot(dirs)
    except Unavailable as exc:
        section.add(skipped(BENCH, "everything", n, str(exc)))
        return section
    try:
        user = seed(dovecot, n)
        raw_imap(dovecot, user, n)  # Dovecot builds its index once; no run pays for it
        imap_raw = section.add(measure(Row(BENCH, f"raw imapclient, UID FETCH x{BATCH}", n),
                                       runs, lambda: raw_imap(dovecot, user, n)))  # fmt: skip
        imap_sp = section.add(measure(Row(BENCH, "mapispool flush, imap", n, base=imap_raw),
                                      runs, lambda: spooler(dovecot, user, n, "imap")))  # fmt: skip
        pop_raw = section.add(measure(Row(BENCH, "raw poplib, RETR one by one", n), runs,
                                      lambda: raw_pop3(dovecot, user, n)))  # fmt: skip
        pop_sp = section.add(measure(Row(BENCH, "mapispool flush, pop3", n, base=pop_raw),
                                     runs, lambda: spooler(dovecot, user, n, "pop3")))  # fmt: skip
        section.target("imap flush / raw imapclient batched", imap_sp, imap_raw, 0.7)
        section.target("pop3 flush / raw poplib", pop_sp, pop_raw, 0.8)
        if not sizes.smoke:
            few = sizes.getmail
            peer_user = user if few == n else seed(dovecot, few)
            for kind, ours in (("IMAP", imap_sp), ("POP3", pop_sp)):
                try:
                    peer = section.add(measure(
                        Row(BENCH, f"getmail6 {kind} into a Maildir", few), runs,
                        lambda kind=kind: getmail(dovecot, peer_user, few, kind, dirs)))  # type: ignore[misc]  # fmt: skip
                    section.target(f"{kind.lower()} flush / getmail6", ours, peer, 1.0)
                except (Unavailable, subprocess.CalledProcessError, RuntimeError) as exc:
                    section.add(skipped(BENCH, f"getmail6 {kind}", few, str(exc)))
    finally:
        dovecot.stop()
    return section

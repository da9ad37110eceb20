"""Benchmark 2: downloading N messages from a Dovecot Maildir into the store, over IMAP
(against raw imapclient batched ``UID FETCH BODY.PEEK[]``) and POP3 (against raw poplib),
with getmail6 into a Maildir as the peer.

Like for like: the raw clients keep what they download, in SQLite (WAL, one fsync'd
commit every 100 messages), because the spooler keeps every message durably before it
may touch the server (one fsync'd barrier per batch)."""

from __future__ import annotations

import os
import poplib
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

from imapclient import IMAPClient
from tests.servers._util import chown_tree
from tests.servers.dirs import ServerDirs
from tests.servers.dovecot import MAIL_GROUP, MAIL_USER, DovecotServer, MailUser

from mapispool.mapi import FLUSH_DOWNLOAD
from mapispool.session import Session

from .common import Row, Section, Sizes, message, paired, settle_disk, skipped, stopwatch
from .queue import profile
from .servers import Unavailable, start_dovecot

BENCH = "inbound"
BATCH = 500
COMMIT_EVERY = 100
PASSWORD_ENV = "MAPISPOOL_BENCH_PASSWORD"


class RawStore:
    """What a raw client that keeps its mail does: each message a row in SQLite (WAL,
    synchronous = FULL), committed every ``COMMIT_EVERY`` messages and at the end."""

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="bench-raw-in-"))
        self.conn = sqlite3.connect(self.work / "raw.db", isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, uid TEXT UNIQUE, content BLOB)"
        )
        self.pending = 0

    def keep(self, uid: str, content: bytes) -> None:
        if self.pending == 0:
            self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("INSERT INTO messages (uid, content) VALUES (?, ?)", (uid, content))
        self.pending += 1
        if self.pending >= COMMIT_EVERY:
            self.commit()

    def commit(self) -> None:
        if self.pending:
            self.conn.execute("COMMIT")
            self.pending = 0

    def close(self) -> None:
        self.conn.close()
        shutil.rmtree(self.work, ignore_errors=True)


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
    store = RawStore()
    settle_disk()
    try:
        with stopwatch() as t:
            client = IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False)
            client.login(user.name, user.password)
            client.select_folder("INBOX", readonly=True)
            uids = client.search("ALL")
            got = 0
            for start in range(0, len(uids), BATCH):
                fetched = client.fetch(uids[start : start + BATCH], ["BODY.PEEK[]"])
                for uid, data in fetched.items():
                    store.keep(str(uid), data[b"BODY[]"])
                    got += 1
            store.commit()
            client.logout()
    finally:
        store.close()
    if got != n:
        raise RuntimeError(f"imapclient fetched {got} of {n}")
    return t[0]


def raw_pop3(dovecot: DovecotServer, user: MailUser, n: int) -> float:
    store = RawStore()
    settle_disk()
    try:
        with stopwatch() as t:
            client = poplib.POP3(dovecot.host, dovecot.pop3_port)
            client.user(user.name)
            client.pass_(user.password)
            _resp, listing, _octets = client.uidl()
            got = 0
            for line in listing:
                number, uid = line.split()[:2]
                _resp, lines, _octets = client.retr(int(number))
                store.keep(uid.decode(), b"\r\n".join(lines) + b"\r\n")
                got += 1
            store.commit()
            client.quit()
    finally:
        store.close()
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
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
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
        imap_sp, imap_raw = paired(
            runs,
            Row(BENCH, "mapispool flush, imap", n),
            lambda: spooler(dovecot, user, n, "imap"),
            Row(BENCH, f"raw imapclient, UID FETCH x{BATCH}, SQLite commit/{COMMIT_EVERY}", n),
            lambda: raw_imap(dovecot, user, n),
        )
        pop_sp, pop_raw = paired(
            runs,
            Row(BENCH, "mapispool flush, pop3", n),
            lambda: spooler(dovecot, user, n, "pop3"),
            Row(BENCH, f"raw poplib, RETR one by one, SQLite commit/{COMMIT_EVERY}", n),
            lambda: raw_pop3(dovecot, user, n),
        )
        for row in (imap_raw, imap_sp, pop_raw, pop_sp):
            section.add(row)
        section.target("imap flush / raw imapclient batched + SQLite", imap_sp, imap_raw, 0.8)
        section.target("pop3 flush / raw poplib + SQLite", pop_sp, pop_raw, 0.9)
        section.notes.append(
            f"The raw clients keep every message in SQLite (WAL, synchronous = FULL, one "
            f"commit per {COMMIT_EVERY} messages), as the #11 baselines say. mapispool "
            "keeps each message with its properties and dedupe key, and syncs once per "
            "batch before it would touch the server."
        )
        if not sizes.smoke:
            few = sizes.getmail
            peer_user = user if few == n else seed(dovecot, few)
            for kind in ("IMAP", "POP3"):
                try:
                    ours, peer = paired(
                        runs,
                        Row(BENCH, f"mapispool flush, {kind.lower()} (getmail6's N)", few),
                        lambda kind=kind: spooler(dovecot, peer_user, few, kind.lower()),  # type: ignore[misc]
                        Row(BENCH, f"getmail6 {kind} into a Maildir", few),
                        lambda kind=kind: getmail(dovecot, peer_user, few, kind, dirs),  # type: ignore[misc]
                    )  # fmt: skip
                    section.add(peer)
                    section.add(ours)
                    section.target(f"{kind.lower()} flush / getmail6", ours, peer, 1.0)
                except (Unavailable, subprocess.CalledProcessError, RuntimeError) as exc:
                    section.add(skipped(BENCH, f"getmail6 {kind}", few, str(exc)))
    finally:
        dovecot.stop()
    return section

"""Benchmark 1: flushing N queued messages into Postfix smtp-sink, against raw aiosmtplib
(1 and 4 connections), raw smtplib (1 connection), msmtp (one process per message) and a
full Postfix fed through its sendmail and relaying to the same sink."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path

import aiosmtplib

from mapispool.mapi import FLUSH_UPLOAD
from mapispool.session import Session

from .common import (
    RECIPIENT,
    SENDER,
    Row,
    Section,
    Sizes,
    measure,
    message,
    settle_disk,
    skipped,
    stopwatch,
)
from .queue import fill_numbered, profile
from .servers import PostfixRelay, Sink, Unavailable, require

BENCH = "outbound"


def raw_aiosmtplib(port: int, msgs: list[bytes], connections: int) -> float:
    async def worker(share: list[bytes]) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        for raw in share:
            await client.sendmail(SENDER, [RECIPIENT], raw)
        await client.quit()

    async def main() -> float:
        shares = [msgs[i::connections] for i in range(connections)]
        with stopwatch() as t:
            await asyncio.gather(*(worker(s) for s in shares))
        return t[0]

    return asyncio.run(main())


def raw_smtplib(port: int, msgs: list[bytes]) -> float:
    with stopwatch() as t:
        client = smtplib.SMTP("127.0.0.1", port)
        for raw in msgs:
            client.sendmail(SENDER, [RECIPIENT], raw)
        client.quit()
    return t[0]


def spooler_flush(port: int, n: int, connections: int) -> float:
    work = Path(tempfile.mkdtemp(prefix="bench-out-"))
    try:
        store = work / "store.db"
        fill_numbered(store, n)
        settle_disk()
        smtp = {"provider": "smtp", "host": "127.0.0.1", "port": port, "tls": "none",
                "connections": connections}  # fmt: skip
        with Session.logon(profile(store, {"out": smtp})) as session, stopwatch() as t:
            result = session.spooler_status().flush_queues(FLUSH_UPLOAD)
        sent = result.total("sent")
        if sent != n:
            raise RuntimeError(f"the spooler sent {sent} of {n}: {result}")
        return t[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def spooler_end_to_end(port: int, msgs: list[bytes], connections: int) -> float:
    """Submit through ``Session.submit`` (durable) and flush: what Postfix's number means."""
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    try:
        smtp = {"provider": "smtp", "host": "127.0.0.1", "port": port, "tls": "none",
                "connections": connections}  # fmt: skip
        settle_disk()
        with (
            Session.logon(profile(work / "store.db", {"out": smtp})) as session,
            stopwatch() as t,
        ):
            for raw in msgs:
                session.submit(raw)
            result = session.spooler_status().flush_queues(FLUSH_UPLOAD)
        if result.total("sent") != len(msgs):
            raise RuntimeError(f"the spooler sent {result.total('sent')} of {len(msgs)}")
        return t[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def msmtp(port: int, msgs: list[bytes]) -> float:
    binary = shutil.which("msmtp")
    assert binary is not None
    args = [binary, "--host=127.0.0.1", f"--port={port}", f"--from={SENDER}", "--auth=off",
            "--tls=off", RECIPIENT]  # fmt: skip
    with stopwatch() as t:
        for raw in msgs:
            subprocess.run(args, input=raw, check=True)
    return t[0]


def postfix_end_to_end(relay: PostfixRelay, msgs: list[bytes]) -> float:
    start_count = relay.delivered()
    with stopwatch() as t:
        for raw in msgs:
            relay.sendmail(raw, SENDER, RECIPIENT)
        deadline = time.monotonic() + 120 + len(msgs) / 20
        while relay.delivered() - start_count < len(msgs):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Postfix relayed {relay.delivered()} of {len(msgs)}")
            time.sleep(0.05)
    return t[0]


def run(sizes: Sizes, dirs: object) -> Section:
    from tests.servers.dirs import ServerDirs

    assert isinstance(dirs, ServerDirs)
    section = Section("1. Outbound flush into smtp-sink")
    print(f"== {section.title}", flush=True)
    n, runs = sizes.outbound, sizes.runs
    try:
        sink = Sink(dirs)
    except Unavailable as exc:
        section.add(skipped(BENCH, "everything", n, str(exc)))
        return section
    try:
        msgs = [message(i) for i in range(n)]
        aio1 = section.add(measure(Row(BENCH, "raw aiosmtplib, 1 conn", n), runs,
                                   lambda: raw_aiosmtplib(sink.port, msgs, 1)))  # fmt: skip
        aio4 = section.add(measure(Row(BENCH, "raw aiosmtplib, 4 conns", n), runs,
                                   lambda: raw_aiosmtplib(sink.port, msgs, 4)))  # fmt: skip
        smtplib1 = section.add(measure(Row(BENCH, "raw smtplib, 1 conn", n), runs,
                                       lambda: raw_smtplib(sink.port, msgs)))  # fmt: skip
        sp1 = section.add(measure(Row(BENCH, "mapispool flush, smtp 1 conn", n, base=aio1),
                                  runs, lambda: spooler_flush(sink.port, n, 1)))  # fmt: skip
        sp4 = section.add(measure(Row(BENCH, "mapispool flush, smtp 4 conns", n, base=aio4),
                                  runs, lambda: spooler_flush(sink.port, n, 4)))  # fmt: skip
        section.target("flush 1 conn / raw aiosmtplib 1 conn", sp1, aio1, 1.0)
        section.target("flush 4 conns / raw aiosmtplib 4 conns", sp4, aio4, 1.0)
        best_raw = max((aio1, aio4, smtplib1), key=lambda r: r.rate or 0)
        best_sp = max((sp1, sp4), key=lambda r: r.rate or 0)
        section.target(f"best flush / best raw Python client ({best_raw.name}) [goal]",
                       best_sp, best_raw, 1.5)  # fmt: skip
        if not sizes.smoke:
            _peers(section, sizes, dirs, sink, best_sp)
    finally:
        sink.stop()
    return section


def _peers(section: Section, sizes: Sizes, dirs: object, sink: Sink, best_sp: Row) -> None:
    from tests.servers.dirs import ServerDirs

    assert isinstance(dirs, ServerDirs)
    try:
        require("msmtp", "msmtp", root=False)
        small = [message(i) for i in range(sizes.msmtp)]
        peer = section.add(measure(Row(BENCH, "msmtp, one process per message",
                                       sizes.msmtp), sizes.runs,
                                   lambda: msmtp(sink.port, small)))  # fmt: skip
        section.target("best flush / msmtp", best_sp, peer, 1.0)
    except Unavailable as exc:
        section.add(skipped(BENCH, "msmtp", sizes.msmtp, str(exc)))
    try:
        relay = PostfixRelay(dirs, sink.port)
    except (Unavailable, subprocess.CalledProcessError) as exc:
        section.add(skipped(BENCH, "Postfix end-to-end", sizes.postfix, str(exc)))
        return
    try:
        many = [message(i) for i in range(sizes.postfix)]
        e2e = section.add(measure(Row(BENCH, "mapispool submit + flush, 4 conns",
                                      sizes.postfix), sizes.runs,
                                  lambda: spooler_end_to_end(sink.port, many, 4)))  # fmt: skip
        pf = section.add(measure(Row(BENCH, "Postfix: sendmail → queue → smtp-sink",
                                     sizes.postfix), sizes.runs,
                                 lambda: postfix_end_to_end(relay, many)))  # fmt: skip
        section.target("submit + flush / Postfix end-to-end", e2e, pf, 3.0)
        section.target("flush only / Postfix end-to-end", best_sp, pf, 3.0)
    finally:
        relay.stop()

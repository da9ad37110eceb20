"""A transport's lanes on a store that many workers share: ``[transports.NAME] lanes = N``
is read and checked, and a worker sends nothing through a transport whose lanes other
workers hold (one lane: one worker at a time, so submit order holds across workers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mapispool.mapi import FLUSH_DOWNLOAD, FLUSH_UPLOAD
from mapispool.profile import Profile, ProfileError
from mapispool.session import AsyncSession
from mapispool.spooler.flush import FlushResult
from mapispool.store.postgres import PostgresStore
from tests.servers.postgres import PgStoreLocation
from tests.servers.smtp import SmtpServer

MESSAGE = b"From: me@example.test\r\nTo: bob@example.test\r\nSubject: lane\r\n\r\nhi\r\n"


def profile_text(store: PgStoreLocation, port: int, lanes: object = 1) -> str:
    return (
        f'store = "{store.url}"\nstore_schema = "{store.schema}"\n\n'
        f'[transports.out]\nprovider = "smtp"\nhost = "127.0.0.1"\nport = {port}\n'
        f'tls = "none"\nlanes = {lanes}\n'
    )


def test_lanes_is_a_whole_number_of_at_least_one() -> None:
    where = PgStoreLocation("postgresql://u@h/db", "s")
    assert Profile.from_toml(profile_text(where, 25, 3)).transport("out").lanes == 3
    assert Profile.from_toml(profile_text(where, 25)).transport("out").lanes == 1
    for bad in (0, '"2"', 1.5):
        with pytest.raises(ProfileError, match=r"transports\.out\.lanes: must be a whole"):
            Profile.from_toml(profile_text(where, 25, bad))


@pytest.mark.timeout(120)
async def test_a_worker_waits_while_another_holds_the_transports_lane(
    pg_store: PgStoreLocation, smtp_server: SmtpServer
) -> None:
    profile = Profile.from_toml(profile_text(pg_store, smtp_server.port), source="p.toml")
    other = await PostgresStore.open(pg_store.url, schema=pg_store.schema)
    try:
        assert await other.try_lane("out", 1) == 0  # another worker sends through "out"
        session = await AsyncSession.logon(profile, worker="waiting")
        try:
            await session.submit(MESSAGE)
            await asyncio.sleep(2.0)
            assert smtp_server.messages == []  # the lane is taken: not sent meanwhile
            await other.release_lane("out", 0)
            await smtp_server.wait_for_async(1, within=60)  # the next look takes it
        finally:
            await session.logoff()
    finally:
        await other.close()
    assert len(smtp_server.messages) == 1


async def test_one_worker_at_a_time_reads_an_inbound_transport(
    pg_store: PgStoreLocation, tmp_path: Path
) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1700000000.M1P1.host").write_bytes(MESSAGE)
    profile = Profile.from_toml(
        f'store = "{pg_store.url}"\nstore_schema = "{pg_store.schema}"\n'
        f'send_immediately = false\n\n[transports.in]\nprovider = "maildir"\n'
        f'path = "{maildir}"\n',
        source="p.toml",
    )
    other = await PostgresStore.open(pg_store.url, schema=pg_store.schema)
    try:
        lane = await other.try_lane("in/inbound")  # another worker reads the mailbox now
        assert lane == 0
        async with await AsyncSession.logon(profile, worker="second") as session:
            flags = FLUSH_UPLOAD | FLUSH_DOWNLOAD
            first = await session.spooler_status().flush_queues(flags)
            assert isinstance(first, FlushResult)
            assert first.total("received") == 0
            await other.release_lane("in/inbound", lane)
            again = await session.spooler_status().flush_queues(flags)
            assert isinstance(again, FlushResult)
            assert again.total("received") == 1
    finally:
        await other.close()

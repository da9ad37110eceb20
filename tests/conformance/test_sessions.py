"""Sessions end to end over the loopback transport, plus a custom transport loaded by
"module:Class" exactly as the README shows it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from mapispool import Profile, Session
from mapispool.mapi import FLUSH_DOWNLOAD, FLUSH_UPLOAD
from mapispool.session import AsyncSession
from mapispool.store import QueueState
from mapispool.transports.loopback import post_office
from tests.conftest import StoreBackend

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def loopback(backend: StoreBackend, who: str, office: str, **extra: object) -> Profile:
    return Profile.from_dict({
        **backend.options(who),
        "send_immediately": False,
        "transports": {"mail": {"provider": "loopback", "post_office": office,
                                "address": f"{who}@example.test"}},
        **extra,
    })  # fmt: skip


def test_two_sessions_exchange_mail_through_a_post_office(tmp_path, store_backend):
    """Alice's flush sends, Bob's flush receives, each message exactly once."""
    office = f"office-{tmp_path.name}"
    with (
        Session.logon(loopback(store_backend, "alice", office)) as alice,
        Session.logon(loopback(store_backend, "bob", office)) as bob,
    ):
        alice.submit(
            b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nx\r\n"
        )
        assert alice.spooler_status().flush_queues(FLUSH_UPLOAD).total("sent") == 1
        assert bob.spooler_status().flush_queues(FLUSH_DOWNLOAD).total("received") == 1
        assert bob.spooler_status().flush_queues(FLUSH_DOWNLOAD).total("received") == 0
        assert [m.subject for m in bob.folder("Inbox").messages()] == ["hi"]
        assert [m.subject for m in alice.folder("Sent Items").messages()] == ["hi"]


async def test_send_immediately_and_polling_without_a_flush(tmp_path, store_backend):
    """Outside flushes, queued mail goes out as it arrives and polling fetches new mail."""
    office = f"office-{tmp_path.name}"
    alice_profile = loopback(store_backend, "alice", office, send_immediately=True)
    alice = await AsyncSession.logon(alice_profile)
    bob_profile = loopback(store_backend, "bob", office)
    bob_profile = Profile.from_dict({
        **store_backend.options("bob"), "send_immediately": False,
        "transports": {"mail": {"provider": "loopback", "post_office": office,
                                "address": "bob@example.test", "poll_interval": 0.05}},
    })  # fmt: skip
    bob = await AsyncSession.logon(bob_profile)
    try:
        entry_id = await alice.submit(
            b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: now\r\n\r\nx\r\n"
        )
        for _ in range(300):
            if await bob.folder("Inbox").count():
                break
            await asyncio.sleep(0.01)
        assert (await alice.queue_entry(entry_id)).state is QueueState.SENT
        assert [m.subject for m in await bob.folder("Inbox").messages()] == ["now"]
        assert post_office(office).waiting("bob@example.test") == 0
    finally:
        await alice.logoff()
        await bob.logoff()


def test_readme_custom_transport_loads_by_module_and_class(tmp_path, monkeypatch):
    """The README's transport, named "custom_transport:JsonLinesProvider", sends a message."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    out = tmp_path / "out.jsonl"
    profile = Profile.from_toml(
        f'store = "{tmp_path / "s.db"}"\nsend_immediately = false\n'
        f'[transports.files]\nprovider = "custom_transport:JsonLinesProvider"\npath = "{out}"\n'
    )
    with Session.logon(profile) as session:
        session.submit(b"From: a@example.test\r\nTo: b@example.test\r\nSubject: s\r\n\r\nhi\r\n")
        result = session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert result.total("sent") == 1
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["to"] == "b@example.test"
    sys.modules.pop("custom_transport", None)


def test_quickstart_example_runs(tmp_path):
    """The README's quickstart script runs and reports the exchange."""
    import subprocess

    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")], capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    assert "alice sent 3, bob received 3" in done.stdout

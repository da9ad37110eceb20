"""Spooler services around the flush: NOTIFY_NEWMAIL, progress events, ValidateState,
per-call failures, plug-ins from the entry-point group."""

from __future__ import annotations

import asyncio
import sys

from mapispool.mapi import (
    FLUSH_DOWNLOAD,
    FLUSH_NO_UI,
    FLUSH_UPLOAD,
    MAPI_E_CALL_FAILED,
    MAPI_E_LOGON_FAILED,
    MAPI_E_NETWORK_ERROR,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    STATUS_FAILURE,
    SUPPRESS_UI,
    MapiError,
)
from mapispool.profile import Profile
from mapispool.spi import TransportProvider
from mapispool.store import QueueState
from mapispool.transports.registry import resolve_provider

from .conftest import message


async def test_newmail_notification_fetches_without_a_flush(rig, session_factory):
    """SpoolerNotify(NOTIFY_NEWMAIL) makes the spooler call start_message on its own."""
    script = rig.script("a")
    session = await session_factory()
    script.deliver(2)
    script.announce_newmail()
    for _ in range(200):
        if await session.folder("Inbox").count() == 2:
            break
        await asyncio.sleep(0.01)
    assert await session.folder("Inbox").count() == 2
    assert rig.journal.trace("a", "start_message") == ["a.start_message"] * 3
    assert not rig.journal.of("a", "flush_queues")


async def test_progress_events_count_messages_and_bytes(rig, session_factory):
    """The progress callback sees each transport's outbound and inbound phases; with
    FLUSH_NO_UI it sees nothing."""
    rig.script("a").deliver(1)
    session = await session_factory()
    for n in range(3):
        await session.submit(message(f"p{n}"))
    events = []
    await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_DOWNLOAD, None, events.append)
    outbound = [e for e in events if e.phase == "outbound"]
    assert [(e.done, e.total) for e in outbound] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert outbound[-1].bytes_done == outbound[-1].bytes_total
    assert outbound[-1].bytes_total > 0
    assert [e.done for e in events if e.phase == "inbound"] == [0, 1]
    assert events[-1].phase == "done"
    quiet = []
    await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_NO_UI, None, quiet.append)
    assert quiet == []


async def test_validate_state_reaches_every_transport(rig, session_factory):
    """ValidateState on the spooler's object calls every logon's validate_state."""
    rig.script("a")
    rig.script("b")
    session = await session_factory()
    await session.spooler_status().validate_state(SUPPRESS_UI)
    assert rig.journal.trace(None, "validate_state") == [
        "a.validate_state 0x1",
        "b.validate_state 0x1",
    ]


async def test_failing_calls_are_contained(rig, session_factory):
    """A transport raising from submit_message or start_message loses nothing: the message
    waits for a retry and the flush result names the error. A failure in end_message after
    the transport marked the recipient is a failed attempt too: the recipient was not
    delivered (issue 9: marks are not delivery; a transport that did deliver says so with
    delivered_recips), so the message retries rather than risk a loss."""
    script = rig.script("a")
    session = await session_factory()
    entry_id = await session.submit(message("e"))
    taken = await session.submit(message("t"))
    script.fail_next("submit_message", MapiError(MAPI_E_NETWORK_ERROR, "link down"))
    script.fail_next("end_message", MapiError(MAPI_E_CALL_FAILED, "late failure"))
    script.deliver(1)
    script.fail_next("start_message", MapiError(MAPI_E_CALL_FAILED, "disk gone"))
    result = await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_DOWNLOAD)
    entry = await session.queue_entry(entry_id)
    assert entry.state is QueueState.RETRY
    assert "link down" in (entry.last_error or "")
    assert result.transports["a"].retried == 2
    assert "disk gone" in (result.transports["a"].error or "")
    assert await session.folder("Inbox").count() == 0
    assert (await session.queue_entry(taken)).state is QueueState.RETRY


async def test_logon_failure_shows_in_the_status_row_and_mail_waits(rig, session_factory):
    """A transport that cannot log on gets STATUS_FAILURE and its reason; mail for it waits
    (no NDR) because nothing else could have taken it."""
    rig.script("a")
    profile_extra = {
        "transports": {
            "a": {"provider": "recording", "script": rig.scripts["a"]},
            "broken": {"provider": "tests.conformance.test_spooler_services:BrokenProvider"},
        }
    }
    session = await session_factory(**profile_extra)
    row = (await session.status_table())[2]
    assert row[PR_STATUS_CODE] & STATUS_FAILURE
    assert "no credentials" in row[PR_STATUS_STRING]
    entry_id = await session.submit(message("fax"), recipients=["FAX:1"])
    result = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert result.transports["broken"].skipped.startswith("not logged on")
    assert (await session.queue_entry(entry_id)).state is QueueState.QUEUED
    assert await session.folder("Inbox").count() == 0


def test_plugins_load_from_the_entry_point_group(tmp_path, monkeypatch):
    """A distribution that registers a provider under "mapispool.transports" is found by
    its entry-point name."""
    dist = tmp_path / "mapispool_demo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: mapispool-demo-plugin\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[mapispool.transports]\nfiles = mapispool.transports.loopback:LoopbackProvider\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from mapispool.transports.loopback import LoopbackProvider

    assert resolve_provider("files") is LoopbackProvider
    profile = Profile.from_dict({"transports": {"x": {"provider": "files"}}})
    assert profile.transports[0].provider_class is LoopbackProvider
    assert "mapispool_demo_plugin" not in sys.modules


class BrokenProvider(TransportProvider):
    """A provider whose logon always fails (used by a test above)."""

    async def transport_logon(self, support, flags):
        raise MapiError(MAPI_E_LOGON_FAILED, "no credentials configured")


async def test_offline_transport_gets_a_validate_state_before_being_skipped(rig, session_factory):
    """An OFFLINE transport is asked to reconnect (ValidateState) before an ordinary flush;
    if it comes back it is flushed, if not it is skipped, and FLUSH_FORCE flushes it anyway."""
    from mapispool.mapi import FLUSH_FORCE

    script = rig.script("a")
    session = await session_factory()
    await session.submit(message("back"))
    script.logon.go_offline()
    result = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert rig.flush_trace()[:2] == ["a.validate_state 0x0", "a.flush_queues 0x2"]
    assert result.transports["a"].sent == 1
    script.stay_offline = True
    script.logon.go_offline()
    await session.submit(message("stays"))
    skipped = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert skipped.transports["a"].skipped == "offline"
    forced = await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
    assert forced.transports["a"].sent == 1

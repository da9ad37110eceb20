"""A message's fate follows MAPI's answers, never PR_RESPONSIBILITY alone (issue 9, rules
1-7 and 13; DESIGN §5 and §7).

Every test runs with both scripted marking styles (the ``marking`` fixture): ``"mrxp"``
marks every handled recipient in ``submit_message`` before the transport acts, as MAPI's
sample transport does; ``"on_success"`` marks a recipient only when it takes it. Both must
give every message the same fate. The tests look at the store (queue state, recipient
outcomes, Sent Items) and at the SPI call journal.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mapispool.mapi import (
    BEGIN_DEFERRED,
    FLUSH_FORCE,
    FLUSH_UPLOAD,
    MAPI_E_BUSY,
    MAPI_E_CALL_FAILED,
    MAPI_E_INVALID_PARAMETER,
    MAPI_E_NETWORK_ERROR,
    MAPI_E_WAIT,
    NOTIFY_ABORT_DEFERRED,
    NOTIFY_CANCEL_MESSAGE,
    MapiError,
)
from mapispool.profile import Profile
from mapispool.session import AsyncSession
from mapispool.spi import OutboundMessage
from mapispool.store import QueueState
from mapispool.testing import (
    Defer,
    DeliverSome,
    Raise,
    RecordingLogon,
    RecordingTransport,
    Refuse,
    ResendLater,
    ResendNow,
    Take,
)
from tests.acceptance.test_cli_support import run
from tests.conftest import StoreBackend

from .conftest import Rig, message

BOB = "bob@example.test"
CAROL = "carol@example.test"
TWO = f"{BOB}, {CAROL}"


async def outcomes(session: AsyncSession, entry_id: bytes) -> dict[str, str | None]:
    """Each recipient's recorded outcome, by address."""
    stored = await session.store.message(entry_id)
    by_row = {r.row_id: r.address for r in stored.recipients}
    return {by_row[row]: outcome for row, outcome, _t, _s in
            await session.store.recipient_outcomes(entry_id)}  # fmt: skip


async def sent_items(session: AsyncSession) -> list[bytes]:
    return [m.entry_id for m in await session.folder("Sent Items").messages()]


async def state(session: AsyncSession, entry_id: bytes) -> QueueState:
    return (await session.queue_entry(entry_id)).state


def submits(rig: Rig, transport: str, entry_id: bytes) -> list[int | None]:
    """The flags of each submit_message call ``transport`` got for ``entry_id``."""
    return [c.flags for c in rig.journal.of(transport, "submit_message") if c.data == entry_id]


async def assert_waiting_unsent(session: AsyncSession, entry_id: bytes) -> None:
    """Not sent, not moved to Sent Items, no recipient recorded delivered."""
    assert entry_id not in await sent_items(session)
    assert "delivered" not in (await outcomes(session, entry_id)).values()
    assert await state(session, entry_id) not in (QueueState.SENT, QueueState.FAILED)


# -- rule 1: marking is "handled in this attempt"; the attempt's end decides ----------------


async def test_rule1_answer_0_delivers_the_marked_and_unmarked_fall_through(
    rig, session_factory, marking
):
    """End answer 0: every recipient the transport marked is delivered by it; the ones it
    left unmarked go to the next capable transport in the same flush."""
    rig.script("a", marking=marking).on("split", Take((BOB,)))
    second = rig.script("b", marking=marking)
    session = await session_factory()
    entry_id = await session.submit(message("split", to=TWO))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert await outcomes(session, entry_id) == {BOB: "delivered", CAROL: "delivered"}
    assert second.sent == [("split", (CAROL,))]
    assert await sent_items(session) == [entry_id]


async def test_rule1_marked_recipients_are_not_delivered_when_end_message_fails(
    rig, session_factory, marking
):
    """The transport marked the recipient in submit_message, then end_message raised: the
    attempt did not end well, so nothing was delivered and the message retries."""
    script = rig.script("a", marking=marking)
    script.fail_next("end_message", MapiError(MAPI_E_NETWORK_ERROR, "link dropped"))
    session = await session_factory()
    entry_id = await session.submit(message("marked"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    await assert_waiting_unsent(session, entry_id)
    assert await state(session, entry_id) is QueueState.RETRY
    await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
    assert await state(session, entry_id) is QueueState.SENT
    assert await outcomes(session, entry_id) == {BOB: "delivered"}


# -- rule 2: END_DONT_RESEND parks the message, unsent, until NOTIFY_SENTDEFERRED ------------


async def test_rule2_deferred_message_stays_unsent_until_released_then_begin_deferred(
    rig, session_factory, marking
):
    """Parked: no recipient delivered, not in Sent Items. The transport releases it in
    flush_queues of the next flush, and in that same flush it is submitted again with
    BEGIN_DEFERRED to the same transport, with its recipients pending, and sent."""
    script = rig.script("a", marking=marking).on("held", Defer())
    session = await session_factory()
    entry_id = await session.submit(message("held"))
    first = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert first.transports["a"].deferred == 1
    assert await state(session, entry_id) is QueueState.PARKED
    await assert_waiting_unsent(session, entry_id)
    rig.journal.clear()
    second = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert second.transports["a"].sent == 1
    assert submits(rig, "a", entry_id) == [BEGIN_DEFERRED]
    trace = rig.journal.trace("a", "flush_queues", "submit_message")
    assert trace[0].startswith("a.flush_queues")
    assert "submit_message" in trace[1]
    assert script.sent == [("held", (BOB,))]
    assert await state(session, entry_id) is QueueState.SENT
    assert await sent_items(session) == [entry_id]


async def test_rule2_sentdeferred_without_entry_id_releases_only_messages_held_then(
    rig, session_factory, marking
):
    """NOTIFY_SENTDEFERRED(None) releases what the transport holds at that moment; a
    message it defers afterwards stays parked until another notification."""
    script = rig.script("a", marking=marking)
    script.on("early", Defer(release_on_flush=False)).on("late", Defer(release_on_flush=False))
    session = await session_factory()
    early = await session.submit(message("early"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert await state(session, early) is QueueState.PARKED
    script.release_deferred(None)  # releases "early" only: "late" is not submitted yet
    late = await session.submit(message("late"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert await state(session, early) is QueueState.SENT
    assert await state(session, late) is QueueState.PARKED
    rig.journal.clear()
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert submits(rig, "a", late) == []
    assert await state(session, late) is QueueState.PARKED
    await assert_waiting_unsent(session, late)
    script.release_deferred(None)
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert submits(rig, "a", late) == [BEGIN_DEFERRED]
    assert await state(session, late) is QueueState.SENT


# -- rule 3: END_RESEND_LATER is not sent; partial delivery is explicit ----------------------


async def test_rule3_resend_later_retries_and_never_goes_to_sent_items(
    rig, session_factory, marking
):
    """END_RESEND_LATER with every handled recipient marked (mrxp) or none: not sent, in
    the retry schedule; the next (forced) flush sends it for real."""
    script = rig.script("a", marking=marking).on("later", ResendLater())
    session = await session_factory()
    entry_id = await session.submit(message("later"))
    result = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert result.transports["a"].sent == 0
    assert await state(session, entry_id) is QueueState.RETRY
    await assert_waiting_unsent(session, entry_id)
    await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
    assert script.sent == [("later", (BOB,))]
    assert await state(session, entry_id) is QueueState.SENT


async def test_rule3_delivered_recips_is_the_only_partial_delivery(rig, session_factory, marking):
    """Support.delivered_recips reports Bob delivered in an attempt that answers
    END_RESEND_LATER: Bob is done, Carol (marked or not) waits and is the only recipient
    offered at the retry."""
    script = rig.script("a", marking=marking).on("half", DeliverSome((BOB,)))
    session = await session_factory()
    entry_id = await session.submit(message("half", to=TWO))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert await outcomes(session, entry_id) == {BOB: "delivered", CAROL: None}
    assert await state(session, entry_id) is QueueState.RETRY
    assert entry_id not in await sent_items(session)
    await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
    assert script.sent == [("half", (BOB,)), ("half", (CAROL,))]
    assert await outcomes(session, entry_id) == {BOB: "delivered", CAROL: "delivered"}
    assert await sent_items(session) == [entry_id]


async def test_rule3_smtp_rcpt_2xx_is_delivered_and_4xx_waits(store_backend, smtp_server_factory):
    """The smtp transport's partial delivery goes through delivered_recips: the recipient
    accepted with 250 is delivered once; the one refused with 450 alone is retried."""
    server = smtp_server_factory(rcpt_answers={CAROL: "450 4.2.0 busy"})
    profile = Profile.from_dict({
        **store_backend.options(), "send_immediately": False,
        "transports": {"out": {"provider": "smtp", "host": "127.0.0.1", "port": server.port,
                               "tls": "none"}},
    })  # fmt: skip
    session = await AsyncSession.logon(profile)
    try:
        entry_id = await session.submit(message("smtp", to=TWO))
        await session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert await outcomes(session, entry_id) == {BOB: "delivered", CAROL: None}
        assert await state(session, entry_id) is QueueState.RETRY
        server.rcpt_answers.clear()
        await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
        first, second = await server.wait_for_async(2)
        assert first.rcpt_tos == (BOB,)
        assert second.rcpt_tos == (CAROL,)
        assert await state(session, entry_id) is QueueState.SENT
    finally:
        await session.logoff()


# -- rule 4: END_RESEND_NOW offers it again at once with its undelivered recipients ---------


async def test_rule4_resend_now_offers_again_with_every_undelivered_recipient(
    rig, session_factory, marking
):
    script = rig.script("a", marking=marking).on("again", ResendNow())
    session = await session_factory()
    entry_id = await session.submit(message("again", to=TWO))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert submits(rig, "a", entry_id) == [0, 0]
    assert script.sent == [("again", (BOB, CAROL))]
    assert await outcomes(session, entry_id) == {BOB: "delivered", CAROL: "delivered"}
    assert await sent_items(session) == [entry_id]


async def test_rule4_resend_now_after_a_partial_delivery_offers_only_the_rest(
    rig, session_factory, marking
):
    script = rig.script("a", marking=marking).on("rest", DeliverSome((BOB,), then=ResendNow()))
    session = await session_factory()
    entry_id = await session.submit(message("rest", to=TWO))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert script.sent == [("rest", (BOB,)), ("rest", (CAROL,))]
    assert await state(session, entry_id) is QueueState.SENT


# -- rule 5: an error raised from submit_message delivers nothing ----------------------------


@pytest.mark.parametrize(
    "hresult", [MAPI_E_WAIT, MAPI_E_NETWORK_ERROR, MAPI_E_BUSY, MAPI_E_CALL_FAILED]
)
async def test_rule5_an_error_from_submit_message_delivers_nothing(
    rig, session_factory, marking, hresult
):
    script = rig.script("a", marking=marking).on("boom", Raise(hresult))
    session = await session_factory()
    entry_id = await session.submit(message("boom", to=TWO))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert await state(session, entry_id) is QueueState.RETRY
    await assert_waiting_unsent(session, entry_id)
    await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
    assert script.sent == [("boom", (BOB, CAROL))]
    assert await sent_items(session) == [entry_id]


async def test_rule5_delivered_recips_before_an_error_still_count(rig, session_factory, marking):
    """The maildir case: one recipient delivered, then the attempt fails: only the one
    reported with delivered_recips is done."""
    rig.script("a", marking=marking).on("disk", DeliverSome((BOB,), then=Raise(MAPI_E_WAIT)))
    session = await session_factory()
    entry_id = await session.submit(message("disk", to=TWO))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert await outcomes(session, entry_id) == {BOB: "delivered", CAROL: None}
    assert await state(session, entry_id) is QueueState.RETRY


def _maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    return path


async def test_rule5_maildir_delivers_one_maildir_then_fails_for_another(
    tmp_path: Path, store_backend: StoreBackend, monkeypatch: pytest.MonkeyPatch
):
    """The maildir transport delivered to Bob's Maildir, then Carol's is full (ENOSPC):
    MAPI_E_WAIT after delivered_recips(Bob). Bob gets one copy, Carol hers at the retry."""
    bob, carol = _maildir(tmp_path / "bob"), _maildir(tmp_path / "carol")
    real_fsync = os.fsync

    def full_for_carol(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(carol)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    profile = Profile.from_dict({
        **store_backend.options(), "send_immediately": False,
        "transports": {"md": {"provider": "maildir"}},
    })  # fmt: skip
    session = await AsyncSession.logon(profile)
    try:
        recipients = [f"MAILDIR:{bob}", f"MAILDIR:{carol}"]
        entry_id = await session.submit(message("disk"), recipients=recipients)
        monkeypatch.setattr(os, "fsync", full_for_carol)
        await session.spooler_status().flush_queues(FLUSH_UPLOAD)
        monkeypatch.undo()
        assert await outcomes(session, entry_id) == {str(bob): "delivered", str(carol): None}
        assert await state(session, entry_id) is QueueState.RETRY
        await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
        assert len(os.listdir(bob / "new")) == 1
        assert len(os.listdir(carol / "new")) == 1
        assert await state(session, entry_id) is QueueState.SENT
    finally:
        await session.logoff()


async def test_rule5_a_refusal_text_with_undecodable_bytes_is_recorded_as_a_refusal(
    rig, session_factory, marking
):
    """status_recips with a reply text holding a lone surrogate (a Latin-1 reply decoded
    with surrogateescape). Before the store made every text storable, writing it raised
    inside the attempt and the refused recipient was recorded delivered. Now the text is
    stored escaped: Bob is delivered, Carol failed with an NDR, nothing lost or faked.
    (A store that raises while recording is covered by the SpoilingLogon test below.)"""
    rig.script("a", marking=marking).on("latin", Refuse((CAROL,), "550 Empf\udce4nger unbekannt"))
    session = await session_factory()
    entry_id = await session.submit(message("latin", to=TWO))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    recorded = await outcomes(session, entry_id)
    assert recorded[CAROL] == "failed"
    assert recorded[BOB] == "delivered"
    inbox = await session.folder("Inbox").messages()
    reports = [m for m in inbox if b"Empf\\xe4nger" in m.content]
    assert len(reports) == 1


async def test_rule5_an_error_text_the_store_cannot_write_leaves_the_message_retrying(
    rig, session_factory, marking
):
    """A 451 whose text holds a byte that is not UTF-8 (decoded with surrogateescape):
    the message is retrying with a readable error, not stuck in flight."""
    rig.script("a", marking=marking).on(
        "busy", Raise(MAPI_E_WAIT, message="451 4.3.0 Empf\udce4nger busy")
    )
    session = await session_factory()
    entry_id = await session.submit(message("busy"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    entry = await session.queue_entry(entry_id)
    assert entry.state is QueueState.RETRY
    assert "Empf\\udce4nger" in (entry.last_error or "")
    await assert_waiting_unsent(session, entry_id)


class SpoilingLogon(RecordingLogon):
    """A recording logon that leaves a recipient property the store cannot save."""

    async def submit_message(self, message: OutboundMessage, flags: int) -> None:
        await super().submit_message(message, flags)
        for recipient in message.recipients:
            recipient.props[0x7FF00102] = object()


class SpoilingTransport(RecordingTransport):
    async def transport_logon(self, support, flags):
        return SpoilingLogon(support, self.script)


async def test_rule5_a_store_failure_while_recording_is_a_visible_retry(
    tmp_path, store_backend, marking
):
    """The store raises while the spooler records the end of an attempt: the message
    goes to the retry schedule with the error shown, nothing recorded delivered."""
    script = Rig(tmp_path, store_backend).script("a", marking=marking).on("spoiled", ResendLater())
    profile = Profile.from_dict({
        **store_backend.options(), "send_immediately": False,
        "transports": {"a": {"provider": f"{__name__}:SpoilingTransport", "script": script}},
    })  # fmt: skip
    session = await AsyncSession.logon(profile)
    try:
        entry_id = await session.submit(message("spoiled"))
        await session.spooler_status().flush_queues(FLUSH_UPLOAD)
        entry = await session.queue_entry(entry_id)
        assert entry.state is QueueState.RETRY
        assert "could not record the outcome" in (entry.last_error or "")
        await assert_waiting_unsent(session, entry_id)
    finally:
        await session.logoff()


# -- rule 6: logoff hands deferred messages back, unsent -------------------------------------


async def test_rule6_logoff_hands_back_deferred_messages_which_are_sent_after_restart(rig, marking):
    script = rig.script("a", marking=marking).on("parked", Defer(release_on_flush=False))
    session = await rig.logon()
    entry_id = await session.submit(message("parked"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert await state(session, entry_id) is QueueState.PARKED
    await session.logoff()
    aborts = [c for c in rig.journal.of("a", "transport_notify")
              if c.flags == NOTIFY_ABORT_DEFERRED]  # fmt: skip
    assert [c.data for c in aborts] == [entry_id]
    again = await rig.logon()
    try:
        assert await state(again, entry_id) is QueueState.QUEUED
        await assert_waiting_unsent(again, entry_id)
        await again.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert submits(rig, "a", entry_id) == [0]
        assert script.sent == [("parked", (BOB,))]
        assert await state(again, entry_id) is QueueState.SENT
        assert await sent_items(again) == [entry_id]
    finally:
        await again.logoff()


# -- rule 7: hold, purge or cancel of a parked message tells its transport first -------------


@pytest.mark.parametrize("action", ["hold", "purge", "cancel"])
async def test_rule7_taking_a_parked_message_back_tells_its_transport(
    rig, session_factory, marking, action
):
    rig.script("a", marking=marking).on("mine", Defer(release_on_flush=False))
    session = await session_factory()
    entry_id = await session.submit(message("mine"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    rig.journal.clear()
    await getattr(session, action)(entry_id)
    [notify] = rig.journal.of("a", "transport_notify")
    assert notify.flags == NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE
    assert notify.data == entry_id


async def test_rule7_a_held_parked_message_is_sent_normally_after_release(
    rig, session_factory, marking
):
    script = rig.script("a", marking=marking).on("mine", Defer(release_on_flush=False))
    session = await session_factory()
    entry_id = await session.submit(message("mine"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    await session.hold(entry_id)
    assert await state(session, entry_id) is QueueState.HELD
    await assert_waiting_unsent(session, entry_id)
    await session.release(entry_id)
    rig.journal.clear()
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert submits(rig, "a", entry_id) == [0]
    assert script.sent == [("mine", (BOB,))]
    assert await state(session, entry_id) is QueueState.SENT


# -- rule 13: no internal exception reaches a user -------------------------------------------


async def test_rule13_hold_and_release_in_a_wrong_state_are_clear_mapi_errors(
    rig, session_factory, marking
):
    rig.script("a", marking=marking)
    session = await session_factory()
    sent = await session.submit(message("done"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert await state(session, sent) is QueueState.SENT
    with pytest.raises(MapiError) as hold:
        await session.hold(sent)
    assert hold.value.hresult == MAPI_E_INVALID_PARAMETER
    assert "cannot hold" in str(hold.value)
    assert "sent" in str(hold.value)
    queued = await session.submit(message("waiting"))
    with pytest.raises(MapiError) as release:
        await session.release(queued)
    assert "cannot release" in str(release.value)
    assert "queued" in str(release.value)
    with pytest.raises(MapiError, match="cannot cancel"):
        await session.cancel(sent)


def test_rule13_cli_queue_hold_on_a_sent_message_prints_one_line(tmp_path: Path) -> None:
    profile = tmp_path / "profile.toml"
    profile.write_text(
        'store = "store.db"\nsend_immediately = false\n\n[transports.a]\nprovider = "recording"\n',
        encoding="utf-8",
    )
    done = run(profile, "submit", stdin=message("cli"))
    assert done.returncode == 0, done.stderr
    entry_id = done.stdout.strip()
    assert run(profile, "flush").returncode == 0
    held = run(profile, "queue", "hold", entry_id)
    assert held.returncode != 0
    assert "Traceback" not in held.stderr
    lines = held.stderr.strip().splitlines()
    assert len(lines) == 1, held.stderr
    assert "cannot hold" in lines[0]
    assert "sent" in lines[0]

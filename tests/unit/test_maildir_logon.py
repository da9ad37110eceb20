"""The maildir logon driven directly, as the spooler would, with real Maildirs in tmp_path
and a small in-memory Support standing in for the spooler and the store."""

from __future__ import annotations

import errno
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from mapispool.mapi import (
    LOGON_NO_INBOUND,
    LOGON_SP_POLL,
    MAPI_E_DISK_ERROR,
    MAPI_E_FAILONEPROVIDER,
    MAPI_E_NOT_ME,
    MAPI_E_WAIT,
    PR_MESSAGE_FLAGS,
    PR_REPORT_TEXT,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    STATUS_AVAILABLE,
    STATUS_FAILURE,
    STATUSROW_UPDATE,
    MapiError,
    MessageFlags,
)
from mapispool.spi import InboundMessage, OutboundMessage, Recipient, Support
from mapispool.transports.maildir import MaildirLogon, MaildirProvider, dedupe_key
from mapispool.transports.maildir import _logon as logon_module

CONTENT = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


class FakeSupport(Support):
    """IMAPISupport for one logon, with an in-memory Inbox keyed by dedupe key."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self._settings = dict(settings or {})
        self.row: dict[int, object] = {}
        self.inbox: dict[str, bytes] = {}
        self.inbox_props: dict[str, dict[int, Any]] = {}
        self.reported: list[tuple[OutboundMessage, list[Recipient]]] = []
        self.notified: list[int] = []
        self.state: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return "md"

    @property
    def settings(self) -> Mapping[str, Any]:
        return self._settings

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger("test.maildir")

    def modify_status_row(self, props: Mapping[int, object], flags: int = 0) -> None:
        if not flags & STATUSROW_UPDATE:
            self.row.clear()
        self.row.update(props)

    def status_row(self) -> Mapping[int, object]:
        return dict(self.row)

    def spooler_notify(self, flags: int, data: object | None = None) -> None:
        self.notified.append(flags)

    def status_recips(self, message: OutboundMessage, recipients: Sequence[Recipient]) -> None:
        self.reported.append((message, list(recipients)))

    def has_dedupe_key(self, key: str) -> bool:
        return key in self.inbox

    def get_state(self, key: str) -> Any:
        return self.state.get(key)

    def set_state(self, key: str, value: Any) -> None:
        self.state[key] = value

    # -- what the spooler does around start_message ------------------------------------

    def new_message(self) -> InboundMessage:
        return InboundMessage(self._save, self.has_dedupe_key)

    def _save(self, message: InboundMessage) -> bytes | None:
        assert message.dedupe_key is not None
        assert message.content is not None
        if message.dedupe_key in self.inbox:
            return None
        self.inbox[message.dedupe_key] = message.content
        self.inbox_props[message.dedupe_key] = dict(message.props)
        return message.dedupe_key.encode()

    async def receive_all(self, logon: MaildirLogon, limit: int = 100) -> int:
        """The inbound loop of a flush: start_message until a call does not save."""
        for count in range(limit):
            message = self.new_message()
            await logon.start_message(message)
            if not message.saved:
                return count
        raise AssertionError("the inbound loop did not end")


def key(maildir: Path, name: str) -> str:
    """The dedupe key of file ``name`` received from ``maildir`` (named by its real path)."""
    return dedupe_key(os.path.realpath(maildir), name)


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def outbound(*recipients: Recipient, content: bytes = CONTENT) -> OutboundMessage:
    return OutboundMessage(
        b"\x01" * 16,
        {},
        list(recipients),
        size=len(content),
        open_content=lambda: io.BytesIO(content),
    )


def maildir_recipient(path: Path) -> Recipient:
    return Recipient(address=str(path), addrtype="MAILDIR")


async def logon_with(settings: dict[str, Any], flags: int = 0) -> tuple[MaildirLogon, FakeSupport]:
    support = FakeSupport(settings)
    logon = await MaildirProvider("md", settings).transport_logon(support, flags)
    assert isinstance(logon, MaildirLogon)
    return logon, support


def status_code(support: FakeSupport) -> int:
    value = support.row.get(PR_STATUS_CODE, 0)
    assert isinstance(value, int)
    return value


def files(path: Path) -> list[str]:
    return sorted(os.listdir(path))


# -- outbound -------------------------------------------------------------------------


async def test_maildir_recipient_gets_the_exact_bytes_in_new(tmp_path: Path) -> None:
    """A MAILDIR recipient's copy lands in new/, byte for byte, with tmp/ left empty."""
    target = make_maildir(tmp_path / "bob")
    logon, support = await logon_with({})
    recipient = maildir_recipient(target)
    await logon.submit_message(outbound(recipient), 0)
    [name] = files(target / "new")
    assert (target / "new" / name).read_bytes() == CONTENT
    assert files(target / "tmp") == []
    assert oct((target / "new" / name).stat().st_mode & 0o777) == oct(0o600)
    assert recipient.responsibility
    assert support.reported == []


async def test_local_domain_goes_to_deliver_root_by_local_part(tmp_path: Path) -> None:
    """bob@local.test and Bob@LOCAL.TEST share <deliver_root>/bob, created on demand."""
    root = tmp_path / "root"
    root.mkdir()
    logon, _ = await logon_with({"domains": ["local.test"], "deliver_root": str(root)})
    assert tuple(logon.address_types()) == ("MAILDIR", "SMTP")
    first = Recipient("bob@local.test")
    second = Recipient("Bob@LOCAL.TEST")
    await logon.submit_message(outbound(first, second), 0)
    assert files(root) == ["bob"]
    assert len(files(root / "bob" / "new")) == 1  # one copy per mailbox
    assert first.responsibility
    assert second.responsibility


async def test_other_domains_are_left_for_the_next_transport(tmp_path: Path) -> None:
    """SMTP recipients outside domains keep responsibility False."""
    root = tmp_path / "root"
    root.mkdir()
    logon, _ = await logon_with({"domains": ["local.test"], "deliver_root": str(root)})
    mine = Recipient("bob@local.test")
    theirs = Recipient("carol@example.org")
    await logon.submit_message(outbound(mine, theirs), 0)
    assert mine.responsibility
    assert not theirs.responsibility


async def test_no_recipient_of_ours_is_not_me(tmp_path: Path) -> None:
    """A message with nothing for this transport raises MAPI_E_NOT_ME and changes nothing."""
    logon, _ = await logon_with({})
    assert tuple(logon.address_types()) == ("MAILDIR",)
    theirs = Recipient("carol@example.org")
    with pytest.raises(MapiError) as caught:
        await logon.submit_message(outbound(theirs), 0)
    assert caught.value.hresult == MAPI_E_NOT_ME
    assert not theirs.responsibility


async def test_the_same_maildir_twice_gets_one_copy(tmp_path: Path) -> None:
    """Two recipients naming one Maildir (one with a trailing slash) get a single file."""
    target = make_maildir(tmp_path / "bob")
    logon, _ = await logon_with({})
    await logon.submit_message(
        outbound(maildir_recipient(target), Recipient(str(target) + "/", "MAILDIR")), 0
    )
    assert len(files(target / "new")) == 1


async def test_missing_maildir_with_existing_parent_is_created(tmp_path: Path) -> None:
    """A Maildir that does not exist yet is created when its parent directory exists."""
    target = tmp_path / "new-box"
    logon, _ = await logon_with({})
    await logon.submit_message(outbound(maildir_recipient(target)), 0)
    assert files(target) == ["cur", "new", "tmp"]
    assert len(files(target / "new")) == 1


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("{tmp}/no/such/parent", "does not exist and cannot be created"),
        ("{tmp}/plainfile", "is not a directory"),
        ("{tmp}/half", "is not a Maildir: it has no cur/, tmp/"),
        ("relative/box", "is not an absolute path"),
    ],
)
async def test_undeliverable_maildirs_fail_permanently_with_the_path(
    tmp_path: Path, address: str, reason: str
) -> None:
    """Each undeliverable Maildir is reported once through status_recips, naming it."""
    (tmp_path / "plainfile").write_text("x")
    (tmp_path / "half" / "new").mkdir(parents=True)
    logon, support = await logon_with({})
    good = make_maildir(tmp_path / "good")
    bad = Recipient(address.format(tmp=tmp_path), "MAILDIR")
    ok = maildir_recipient(good)
    await logon.submit_message(outbound(bad, ok), 0)
    [(_message, failed)] = support.reported
    assert failed == [bad]
    assert reason in bad.props[PR_REPORT_TEXT]
    assert address.format(tmp=tmp_path).split("/")[-1] in bad.props[PR_REPORT_TEXT]
    assert bad.responsibility
    assert ok.responsibility
    assert len(files(good / "new")) == 1


async def test_target_whose_new_is_not_a_directory_fails_permanently(tmp_path: Path) -> None:
    """A Maildir that cannot take files (new/ is a file) bounces, and tmp/ is cleaned."""
    target = tmp_path / "broken"
    for sub in ("cur", "tmp"):
        (target / sub).mkdir(parents=True)
    (target / "new").write_text("not a directory")
    logon, support = await logon_with({})
    recipient = maildir_recipient(target)
    await logon.submit_message(outbound(recipient), 0)
    assert support.reported[0][1] == [recipient]
    assert str(target) in recipient.props[PR_REPORT_TEXT]
    assert files(target / "tmp") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
async def test_unwritable_maildir_fails_permanently(tmp_path: Path) -> None:
    """A Maildir whose tmp/ is read-only bounces with a reason naming it."""
    target = make_maildir(tmp_path / "ro")
    (target / "tmp").chmod(0o500)
    try:
        logon, support = await logon_with({})
        recipient = maildir_recipient(target)
        await logon.submit_message(outbound(recipient), 0)
    finally:
        (target / "tmp").chmod(0o700)
    assert "permission" in recipient.props[PR_REPORT_TEXT].lower()
    assert support.reported[0][1] == [recipient]


async def test_permission_denied_bounces_even_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES on tmp/ is permanent: an NDR whose text says to check the permissions."""
    target = make_maildir(tmp_path / "bob")
    logon, support = await logon_with({})
    real_open = os.open

    def denied(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if Path(path).parent.name == "tmp":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    recipient = maildir_recipient(target)
    await logon.submit_message(outbound(recipient), 0)
    monkeypatch.undo()
    assert support.reported[0][1] == [recipient]
    assert str(target / "tmp") in recipient.props[PR_REPORT_TEXT]
    assert "permissions" in recipient.props[PR_REPORT_TEXT]


async def test_disk_full_is_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC raises MAPI_E_WAIT, leaves the recipient pending and tmp/ empty."""
    target = make_maildir(tmp_path / "bob")
    logon, support = await logon_with({})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    recipient = maildir_recipient(target)
    with pytest.raises(MapiError) as caught:
        await logon.submit_message(outbound(recipient), 0)
    monkeypatch.undo()
    assert caught.value.hresult == MAPI_E_WAIT
    assert str(target / "tmp") in caught.value.message
    assert not recipient.responsibility
    assert support.reported == []
    assert files(target / "tmp") == []
    assert files(target / "new") == []


# -- inbound --------------------------------------------------------------------------


def drop(maildir: Path, name: str, content: bytes = CONTENT, sub: str = "new") -> Path:
    path = maildir / sub / name
    path.write_bytes(content)
    return path


async def test_receives_each_file_once_then_moves_it_to_cur_as_seen(tmp_path: Path) -> None:
    """Files in new/ are stored with maildir:<unique> keys and moved to cur/ with :2,S."""
    inbox = make_maildir(tmp_path / "Maildir")
    drop(inbox, "1.a.host", b"one")
    drop(inbox, "2.b.host", b"two")
    logon, support = await logon_with({"path": str(inbox)})
    assert logon.logon_flags & LOGON_SP_POLL
    assert await logon.poll() == 2
    assert await support.receive_all(logon) == 2
    assert support.inbox == {key(inbox, "1.a.host"): b"one", key(inbox, "2.b.host"): b"two"}
    assert files(inbox / "new") == []
    assert files(inbox / "cur") == ["1.a.host:2,S", "2.b.host:2,S"]
    assert await logon.poll() == 0
    assert await support.receive_all(logon) == 0


async def test_tmp_and_dot_files_are_ignored(tmp_path: Path) -> None:
    """Nothing in tmp/ and no dot file is ever received."""
    inbox = make_maildir(tmp_path / "Maildir")
    drop(inbox, "1.a.host", sub="tmp")
    drop(inbox, ".hidden")
    (inbox / "new" / "subdir").mkdir()
    logon, support = await logon_with({"path": str(inbox), "include_cur": True})
    assert await logon.poll() == 0
    assert await support.receive_all(logon) == 0
    assert support.inbox == {}


async def test_delete_action_removes_stored_files(tmp_path: Path) -> None:
    """With action = "delete" a file is removed once stored."""
    inbox = make_maildir(tmp_path / "Maildir")
    drop(inbox, "1.a.host")
    logon, support = await logon_with({"path": str(inbox), "action": "delete"})
    assert await support.receive_all(logon) == 1
    assert files(inbox / "new") == []
    assert files(inbox / "cur") == []


async def test_include_cur_receives_cur_once_and_keeps_the_seen_state(tmp_path: Path) -> None:
    """cur/ files are stored once, read ones marked read, and all get the S flag."""
    inbox = make_maildir(tmp_path / "Maildir")
    drop(inbox, "1.a.host:2,F", sub="cur")
    drop(inbox, "2.b.host:2,S", sub="cur")
    drop(inbox, "3.c.host")
    logon, support = await logon_with({"path": str(inbox), "include_cur": True})
    assert await logon.poll() == 3
    assert await support.receive_all(logon) == 3
    assert files(inbox / "cur") == ["1.a.host:2,FS", "2.b.host:2,S", "3.c.host:2,S"]
    assert (
        support.inbox_props[key(inbox, "2.b.host")][PR_MESSAGE_FLAGS] == MessageFlags.MSGFLAG_READ
    )
    assert PR_MESSAGE_FLAGS not in support.inbox_props[key(inbox, "1.a.host")]
    # A later logon over the same store finds nothing new in cur/.
    again = await MaildirProvider("md", support.settings).transport_logon(support, 0)
    assert await again.poll() == 0
    assert await support.receive_all(again) == 0  # type: ignore[arg-type]
    assert len(support.inbox) == 3


class Crash(BaseException):
    """Stands for the process dying."""


async def test_crash_between_commit_and_move_never_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file committed but still in new/ (the process died) is moved, not stored again."""
    inbox = make_maildir(tmp_path / "Maildir")
    drop(inbox, "1.a.host")
    logon, support = await logon_with({"path": str(inbox)})

    def die(*args: object) -> None:
        raise Crash

    monkeypatch.setattr(logon_module, "finish", die)
    with pytest.raises(Crash):
        await logon.start_message(support.new_message())
    monkeypatch.undo()
    assert list(support.inbox) == [key(inbox, "1.a.host")]
    assert files(inbox / "new") == ["1.a.host"]

    restarted, _ = await logon_with({"path": str(inbox)})
    restarted.support = support  # same store after the restart
    assert await restarted.poll() == 0
    assert await support.receive_all(restarted) == 0
    assert list(support.inbox) == [key(inbox, "1.a.host")]
    assert files(inbox / "new") == []
    assert files(inbox / "cur") == ["1.a.host:2,S"]


async def test_a_file_that_cannot_be_moved_is_kept_and_not_stored_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If the move fails after the commit, the call still succeeds and logs a warning."""
    inbox = make_maildir(tmp_path / "Maildir")
    drop(inbox, "1.a.host")
    logon, support = await logon_with({"path": str(inbox)})
    real_rename = os.rename

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "rename", refuse)
    with caplog.at_level(logging.WARNING, logger="test.maildir"):
        assert await support.receive_all(logon) == 1
        assert await support.receive_all(logon) == 0
    assert "cannot move" in caplog.text
    assert caplog.text.count("cannot move") == 1  # reported once, not at every pass
    monkeypatch.setattr(os, "rename", real_rename)
    assert await support.receive_all(logon) == 0
    assert files(inbox / "cur") == ["1.a.host:2,S"]
    assert len(support.inbox) == 1


async def test_an_unreadable_file_is_skipped_reported_once_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unreadable file does not block the others, is logged once, leaves poll's count,
    and is received at a later flush once it can be read."""
    inbox = make_maildir(tmp_path / "Maildir")
    bad = drop(inbox, "1.a.host", b"one")
    drop(inbox, "2.b.host", b"two")
    logon, support = await logon_with({"path": str(inbox)})
    real_read = Path.read_bytes

    def guarded(path: Path) -> bytes:
        if path == bad:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", guarded)
    with caplog.at_level(logging.WARNING, logger="test.maildir"):
        assert await support.receive_all(logon) == 1
        assert await logon.poll() == 0
        assert await support.receive_all(logon) == 0
    assert caplog.text.count("cannot read") == 1
    assert files(inbox / "new") == ["1.a.host"]
    monkeypatch.undo()
    assert await support.receive_all(logon) == 1
    assert support.inbox == {key(inbox, "1.a.host"): b"one", key(inbox, "2.b.host"): b"two"}


async def test_new_files_arriving_between_flushes_are_picked_up(tmp_path: Path) -> None:
    """A second flush sees files that arrived after the first one listed the folder."""
    inbox = make_maildir(tmp_path / "Maildir")
    drop(inbox, "1.a.host")
    logon, support = await logon_with({"path": str(inbox)})
    assert await support.receive_all(logon) == 1
    drop(inbox, "2.b.host")
    assert await support.receive_all(logon) == 1
    assert sorted(support.inbox) == [key(inbox, "1.a.host"), key(inbox, "2.b.host")]


async def test_vanished_inbox_raises_disk_error_and_marks_failure(tmp_path: Path) -> None:
    """When the Maildir disappears after logon, receiving fails with its path."""
    inbox = make_maildir(tmp_path / "Maildir")
    logon, support = await logon_with({"path": str(inbox)})
    (inbox / "new").rmdir()
    with pytest.raises(MapiError) as caught:
        await logon.start_message(support.new_message())
    assert caught.value.hresult == MAPI_E_DISK_ERROR
    assert str(inbox) in caught.value.message
    assert status_code(support) & STATUS_FAILURE
    (inbox / "new").mkdir()
    assert await logon.poll() == 0
    assert status_code(support) & STATUS_AVAILABLE


# -- logon and state ------------------------------------------------------------------


async def test_logon_fails_when_the_inbox_is_gone(tmp_path: Path) -> None:
    """A receiving Maildir removed after the profile was loaded fails the logon clearly."""
    with pytest.raises(MapiError) as caught:
        await logon_with({"path": str(tmp_path / "gone")})
    assert caught.value.hresult == MAPI_E_FAILONEPROVIDER
    assert "create = true" in caught.value.message


async def test_logon_creates_the_inbox_when_asked(tmp_path: Path) -> None:
    """create = true makes the Maildir, parents included."""
    inbox = tmp_path / "a" / "Maildir"
    _logon, support = await logon_with({"path": str(inbox), "create": True})
    assert files(inbox) == ["cur", "new", "tmp"]
    assert status_code(support) & STATUS_AVAILABLE


async def test_send_only_logon_does_not_poll() -> None:
    """Without path the logon asks for no polling and receives nothing."""
    logon, support = await logon_with({})
    assert not logon.logon_flags & LOGON_SP_POLL
    assert await logon.poll() == 0
    assert await support.receive_all(logon) == 0


async def test_logon_no_inbound_only_defers_receiving(tmp_path: Path) -> None:
    """LOGON_NO_INBOUND (inbound enabled later by NOTIFY_BEGIN_INBOUND) keeps polling on."""
    inbox = make_maildir(tmp_path / "Maildir")
    drop(inbox, "1.a.host")
    logon, support = await logon_with({"path": str(inbox)}, LOGON_NO_INBOUND)
    assert logon.logon_flags & LOGON_SP_POLL
    assert await support.receive_all(logon) == 1


async def test_validate_state_reports_availability_and_failure(tmp_path: Path) -> None:
    """validate_state sets STATUS_AVAILABLE, or STATUS_FAILURE with the reason."""
    inbox = make_maildir(tmp_path / "Maildir")
    logon, support = await logon_with({"path": str(inbox)})
    await logon.validate_state(0)
    assert status_code(support) == STATUS_AVAILABLE
    (inbox / "cur").rmdir()
    await logon.validate_state(0)
    assert status_code(support) == STATUS_FAILURE
    assert str(inbox) in str(support.row[PR_STATUS_STRING])
    assert "cur/" in str(support.row[PR_STATUS_STRING])

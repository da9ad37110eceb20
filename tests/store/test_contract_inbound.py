"""Store contract: inbound batches with dedupe keys, the durability barrier, folders and
messages."""

from __future__ import annotations

import pytest

from mapispool.mapi import MAPI_E_NOT_FOUND, PR_SUBJECT, MapiError
from mapispool.store.base import FOLDERS
from mapispool.store.types import Delivery


def mail(n: int, key: str | None = None, folder: str = "Inbox") -> Delivery:
    raw = f"Subject: in{n}\r\n\r\nbody {n}\r\n".encode()
    return Delivery(folder, raw, {PR_SUBJECT: f"in{n}"}, dedupe_key=key)


async def test_deliver_files_a_batch_and_returns_the_new_entry_ids(store):
    ids = await store.deliver([mail(1, "k1"), mail(2, "k2"), mail(3)])
    assert all(ids)
    assert len(set(ids)) == 3
    inbox = await store.messages("Inbox")
    assert [m.subject for m in inbox] == ["in1", "in2", "in3"]
    assert inbox[0].content == b"Subject: in1\r\n\r\nbody 1\r\n"
    assert [e.kind for e in await store.events(ids[0])] == ["received"]
    assert await store.known_dedupe_keys(["k1", "k2", "k3"]) == {"k1", "k2"}


async def test_a_duplicate_key_is_skipped_and_the_rest_of_the_batch_stored(store):
    (first,) = await store.deliver([mail(1, "k1")])
    again = await store.deliver([mail(1, "k1"), mail(2, "k2"), mail(3, "k2"), mail(4)])
    assert first is not None
    assert again[0] is None  # stored by an earlier batch
    assert again[1] is not None
    assert again[2] is None  # the same key earlier in this batch
    assert again[3] is not None
    assert [m.subject for m in await store.messages("Inbox")] == ["in1", "in2", "in4"]


async def test_a_key_recorded_without_a_message_also_dedupes(store):
    await store.add_dedupe_keys(["uid:1", "uid:2"])
    await store.add_dedupe_keys(["uid:2"])  # a key already stored is kept
    assert await store.has_dedupe_key("uid:1")
    assert not await store.has_dedupe_key("uid:3")
    skipped, stored = await store.deliver([mail(1, "uid:1"), mail(3, "uid:3")])
    assert skipped is None
    assert stored is not None
    assert await store.message_count("Inbox") == 1


async def test_an_unknown_folder_refuses_the_whole_batch(store):
    with pytest.raises(MapiError) as info:
        await store.deliver([mail(1, "k1"), mail(2, "k2", folder="Junk")])
    assert info.value.hresult == MAPI_E_NOT_FOUND
    assert await store.message_count("Inbox") == 0
    assert await store.known_dedupe_keys(["k1", "k2"]) == set()


async def test_a_delivery_not_yet_synced_is_there_and_sync_makes_it_durable(store):
    (entry_id,) = await store.deliver([mail(1, "k1")], durable=False)
    assert entry_id is not None
    assert (await store.message(entry_id)).folder == "Inbox"
    await store.sync()
    await store.sync()  # nothing waiting: cheap, and still fine
    assert await store.has_dedupe_key("k1")


# -- folders and messages ---------------------------------------------------------------


async def test_folders_have_fixed_names_and_stable_entry_ids(store):
    assert store.folder_names() == list(FOLDERS)
    ids = [store.folder_entry_id(name) for name in FOLDERS]
    assert len(set(ids)) == len(FOLDERS)
    assert ids == [store.folder_entry_id(name) for name in FOLDERS]
    for name, folder_id in zip(FOLDERS, ids, strict=True):
        assert store.folder_by_entry_id(folder_id) == name
    assert store.folder_by_entry_id(b"\x03" * 16) is None
    with pytest.raises(MapiError) as info:
        store.folder_entry_id("Junk")
    assert info.value.hresult == MAPI_E_NOT_FOUND
    assert "Inbox" in str(info.value)  # names the folders there are


async def test_messages_move_and_delete(store):
    a, b = await store.deliver([mail(1), mail(2)])
    assert a is not None
    assert b is not None
    await store.move_message(a, "Deleted Items")
    assert [m.entry_id for m in await store.messages("Deleted Items")] == [a]
    assert await store.message_count("Inbox") == 1
    assert "moved" in [e.kind for e in await store.events(a)]
    await store.delete_message(b)
    assert await store.message_count("Inbox") == 0
    with pytest.raises(MapiError):
        await store.message(b)
    with pytest.raises(MapiError):
        await store.messages("Junk")


async def test_open_content_streams_the_stored_bytes(store):
    body = b"Subject: big\r\n\r\n" + b"0123456789" * 50_000 + b"\r\n"
    (entry_id,) = await store.deliver([Delivery("Inbox", body)])
    assert entry_id is not None
    with store.open_content(entry_id) as stream:
        assert stream.read() == body
    with store.open_content(entry_id, verify=False) as stream:
        assert stream.read(7) == b"Subject"
    with pytest.raises(MapiError) as info:
        store.open_content(b"\x04" * 16)
    assert info.value.hresult == MAPI_E_NOT_FOUND


async def test_what_a_caller_changes_in_a_returned_message_stays_out_of_the_store(store):
    (entry_id,) = await store.deliver([mail(1)])
    assert entry_id is not None
    first = await store.message(entry_id)
    first.props[PR_SUBJECT] = "changed"  # type: ignore[index]
    assert (await store.message(entry_id)).subject == "in1"
    assert (await store.message(entry_id, content=False)).content == b""

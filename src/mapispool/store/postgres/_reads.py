"""Reads of the PostgreSQL store (folders, messages, paged queue queries, events, status
rows, transport state) and a person's queue actions."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Collection, Mapping, Sequence
from typing import IO, Any

import psycopg
from psycopg import sql

from ...mapi import MAPI_E_INVALID_PARAMETER, MAPI_E_NOT_FOUND, MapiError
from ..base import PAGE, QueuePosition
from ..codec import dump_json, dump_props, load_json, load_props
from ..model import TRANSITIONS, Event, InvalidTransition, QueueEntry, QueueState, StoredMessage
from ..sqlite.integrity import CorruptContent
from ..types import QUEUE_ACTIONS, QueueAction, action_applies
from ._outbound import Outbound
from ._rows import (
    FOLDER_IDS,
    add_event,
    folder_entry_id,
    queue_entry,
    recipients_by_message,
    stored_message,
)
from ._sql import q

_FINISHED_HIDDEN = (QueueState.SENT.value, QueueState.CANCELLED.value)


class Reads(Outbound):
    """Everything that reads or edits single messages (mixed into ``PostgresStore``)."""

    # -- folders and messages ----------------------------------------------------------

    def folder_entry_id(self, name: str) -> bytes:
        return folder_entry_id(self.folder_id(name))

    def folder_by_entry_id(self, entry_id: bytes) -> str | None:
        for name, folder_id in FOLDER_IDS.items():
            if folder_entry_id(folder_id) == entry_id:
                return name
        return None

    async def _messages(
        self, where: str, params: Sequence[Any], *, content: bool = True
    ) -> list[StoredMessage]:
        select = q("message_select")
        if not content:
            select = select.replace("c.data", "''::bytea")
        async with self.tx("reading messages") as conn:
            cur = await conn.execute(f"{select} {where}", params)
            rows = await cur.fetchall()
            recipients = await recipients_by_message(conn, [int(r[0]) for r in rows])
        return [stored_message(row, recipients[int(row[0])]) for row in rows]

    async def messages(
        self, folder: str, *, after: int | None = None, limit: int = PAGE
    ) -> list[StoredMessage]:
        return await self._messages(
            "WHERE m.folder_id = %s AND m.id > %s ORDER BY m.id LIMIT %s",
            (self.folder_id(folder), after or 0, limit),
        )

    async def message_count(self, folder: str) -> int:
        rows = await self.read(
            "counting messages",
            q("count_folder"),
            (self.folder_id(folder),),
        )
        return int(rows[0][0])

    async def message(self, entry_id: bytes, *, content: bool = True) -> StoredMessage:
        found = await self._messages("WHERE m.entry_id = %s", (entry_id,), content=content)
        if not found:
            raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
        return found[0]

    def open_content(self, entry_id: bytes, *, verify: bool = True) -> IO[bytes]:
        """Blocking, on a connection of its own: the content in 1 MiB pieces."""
        try:
            conn = psycopg.connect(self.url, **self.connect_kwargs())
        except psycopg.Error as exc:
            raise self.error(exc, "reading a message") from exc
        return io.BufferedReader(_ContentReader(self, conn, entry_id, verify), 1 << 20)

    async def move_message(self, entry_id: bytes, folder: str) -> None:
        async with self.tx("moving a message") as conn:
            cur = await conn.execute(
                q("move_message"),
                (self.folder_id(folder), entry_id),
            )
            if await cur.fetchone() is None:
                raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
            await add_event(conn, entry_id, "moved", None, folder, time.time())

    async def delete_message(self, entry_id: bytes) -> None:
        async with self.tx("deleting a message") as conn:
            await conn.execute(q("delete_message"), (entry_id,))
            await add_event(conn, entry_id, "deleted", None, None, time.time())

    # -- the queue -------------------------------------------------------------------

    async def _entries(
        self,
        where: str,
        params: Sequence[Any],
        *,
        after: QueuePosition | None = None,
        limit: int = PAGE,
        with_recipients: bool = False,
    ) -> list[QueueEntry]:
        start = after or (float("-inf"), 0)
        query = (
            f"{q('queue_select')} WHERE ({where}) AND (q.submit_time, m.id) > (%s, %s)"
            " ORDER BY q.submit_time, m.id LIMIT %s"
        )
        async with self.tx("reading the queue") as conn:
            cur = await conn.execute(query, (*params, start[0], start[1], limit))
            rows = await cur.fetchall()
            recipients = (
                await recipients_by_message(conn, [int(r[11]) for r in rows])
                if with_recipients
                else {}
            )
        return [queue_entry(row, recipients.get(int(row[11]))) for row in rows]

    async def queue_entry(self, entry_id: bytes, *, with_recipients: bool = True) -> QueueEntry:
        async with self.tx("reading the queue") as conn:
            cur = await conn.execute(f"{q('queue_select')} WHERE m.entry_id = %s", (entry_id,))
            row = await cur.fetchone()
            if row is None:
                raise MapiError(MAPI_E_NOT_FOUND, f"{entry_id.hex()} is not in the outgoing queue")
            recipients = (
                (await recipients_by_message(conn, [int(row[11])]))[int(row[11])]
                if with_recipients
                else None
            )
        return queue_entry(row, recipients)

    async def queue_page(
        self,
        *,
        states: Collection[QueueState] | None = None,
        after: QueuePosition | None = None,
        limit: int = PAGE,
        with_recipients: bool = True,
    ) -> list[QueueEntry]:
        if states is None:
            where, params = "NOT (q.state = ANY(%s))", [list(_FINISHED_HIDDEN)]
        else:
            where, params = "q.state = ANY(%s)", [[s.value for s in states]]
        return await self._entries(
            where, params, after=after, limit=limit, with_recipients=with_recipients
        )

    async def due_entries(
        self,
        now: float,
        *,
        ignore_backoff: bool = False,
        after: QueuePosition | None = None,
        limit: int = PAGE,
    ) -> list[QueueEntry]:
        return await self._entries(
            "q.state = 'queued' OR (q.state IN ('deferred', 'retry') AND q.not_before <= %s)"
            " OR (q.state = 'retry' AND %s)",
            (now, ignore_backoff),
            after=after,
            limit=limit,
        )

    async def parked_entries(
        self, transport: str, *, after: QueuePosition | None = None, limit: int = PAGE
    ) -> list[QueueEntry]:
        return await self._entries(
            "q.state = 'parked' AND q.parked_by = %s", (transport,), after=after, limit=limit
        )

    async def overdue_entries(self, now: float, *, limit: int = PAGE) -> list[QueueEntry]:
        return await self._entries(
            "q.state IN ('queued', 'retry') AND q.expires_at <= %s", (now,), limit=limit
        )

    async def settled_entries(self, *, limit: int = PAGE) -> list[QueueEntry]:
        return await self._entries(
            "q.state IN ('queued', 'retry') AND NOT EXISTS (SELECT 1 FROM recipients r"
            " WHERE r.message_id = m.id AND r.outcome IS NULL)",
            (),
            limit=limit,
        )

    async def delayed_entries(self, due_before: float, *, limit: int = PAGE) -> list[QueueEntry]:
        return await self._entries(
            "q.state IN ('queued', 'retry') AND q.attempts > 0 AND NOT q.delay_notified"
            " AND q.due_at <= %s",
            (due_before,),
            limit=limit,
        )

    async def pending_types(self, seqs: Sequence[int]) -> dict[int, list[str]]:
        result: dict[int, list[str]] = {int(s): [] for s in seqs}
        rows = await self.read(
            "reading recipients",
            q("pending_types"),
            (list(result),),
        )
        for mid, addrtype in rows:
            result[int(mid)].append(str(addrtype))
        return result

    async def recipient_outcomes(
        self, entry_id: bytes
    ) -> list[tuple[int, str | None, str | None, bool]]:
        rows = await self.read(
            "reading recipients",
            q("recipient_outcomes"),
            (entry_id,),
        )
        if not rows and not await self.read("reading recipients", q("message_exists"), (entry_id,)):
            raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
        return [(int(r), o, t, bool(n)) for r, o, t, n in rows]

    async def next_wakeup(self) -> float | None:
        rows = await self.read(
            "reading the queue",
            q("next_wakeup"),
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    async def count_by_state(self) -> dict[QueueState, int]:
        rows = await self.read("counting the queue", q("count_by_state"))
        return {QueueState(state): int(n) for state, n in rows}

    async def events(self, entry_id: bytes) -> list[Event]:
        rows = await self.read(
            "reading events",
            q("events"),
            (entry_id,),
        )
        return [Event(at, kind, transport, detail) for at, kind, transport, detail in rows]

    # -- a person's actions -----------------------------------------------------------

    async def act(
        self, entry_id: bytes, action: QueueAction, *, expires_at: float | None = None
    ) -> QueueState:
        now = time.time()
        async with self.tx("changing the queue") as conn:
            cur = await conn.execute(q("lock_entry"), (entry_id,))
            row = await cur.fetchone()
            if row is None:
                raise MapiError(MAPI_E_NOT_FOUND, f"{entry_id.hex()} is not in the queue")
            old, message_id = QueueState(row[0]), int(row[2])
            if not action_applies(action, old):
                raise InvalidTransition(
                    f"{entry_id.hex()}: cannot {action.value} a message that is {old.value}"
                )
            if action is QueueAction.PURGE:
                await conn.execute(q("delete_message_by_id"), (message_id,))
                await add_event(conn, entry_id, "deleted", None, None, now)
                return old
            _starts, new, event = QUEUE_ACTIONS[action]
            if new not in TRANSITIONS[old]:
                raise InvalidTransition(
                    f"{entry_id.hex()}: cannot {action.value} a message that is {old.value}"
                )
            if action is QueueAction.RETRY and old is QueueState.FAILED:
                if expires_at is None:
                    raise MapiError(
                        MAPI_E_INVALID_PARAMETER, "retrying a failed message needs expires_at"
                    )
                await conn.execute(q("reopen_failed_recipients"), (message_id,))
                await conn.execute(q("reopen_queue"), (expires_at, now, message_id))
            folder = FOLDER_IDS["Deleted Items"] if action is QueueAction.CANCEL else None
            await conn.execute(
                q("change_state_logged"),
                {"state": new.value, "not_before": None, "error": None, "parked_by": None,
                 "attempt": 0, "now": now, "message_id": message_id, "entry_id": entry_id,
                 "kind": event, "transport": None, "detail": None, "folder_id": folder},
            )  # fmt: skip
        if new is QueueState.QUEUED:
            self.wake()
        return old

    # -- status rows and transport state -----------------------------------------------

    async def get_transport_state(self, transport: str, key: str) -> Any:
        rows = await self.read(
            "reading transport state",
            q("get_transport_state"),
            (transport, key),
        )
        return load_json(rows[0][0]) if rows else None

    async def set_transport_state(self, transport: str, key: str, value: Any) -> None:
        async with self.tx("saving transport state") as conn:
            await conn.execute(
                q("set_transport_state"),
                (transport, key, dump_json(value)),
            )

    async def save_status_rows(
        self, rows: Sequence[Mapping[int, Any]], names: Sequence[str], *, worker: str = ""
    ) -> None:
        worker = worker or self.worker_name
        now = time.time()
        async with self.tx("saving status rows", durable=False) as conn:
            await conn.execute(q("clear_status_rows"), (worker,))
            async with conn.cursor() as cur:
                await cur.executemany(
                    q("insert_status_row"),
                    [
                        (worker, name, i, dump_props(row), now)
                        for i, (name, row) in enumerate(zip(names, rows, strict=True))
                    ],
                )

    async def load_status_rows(self) -> list[dict[int, Any]]:
        rows = await self.read(
            "reading status rows", q("load_status_rows"), (time.time() - self.dead_after,)
        )
        return [load_props(props) for (props,) in rows]

    async def worker_status_rows(self) -> list[tuple[str, dict[int, Any]]]:
        rows = await self.read(
            "reading status rows", q("load_worker_status_rows"), (time.time() - self.dead_after,)
        )
        return [(str(worker), load_props(props)) for worker, props in rows]


class _ContentReader(io.RawIOBase):
    """A message's content read in pieces over a connection of its own, checked against
    its SHA-256 at the end (``verify``)."""

    _PIECE = 1 << 20

    def __init__(
        self, owner: Reads, conn: psycopg.Connection[Any], entry_id: bytes, verify: bool
    ) -> None:
        self._owner, self._conn, self._entry_id = owner, conn, entry_id
        self._conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(owner.schema)))
        row = self._conn.execute(
            q("content_head"),
            (entry_id,),
        ).fetchone()
        if row is None:
            self._conn.close()
            raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
        self._id, self._size = int(row[0]), int(row[1])
        self._expected = bytes(row[2]) if verify and row[2] is not None else None
        self._hash = hashlib.sha256()
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._size:
            return 0
        want = min(len(buffer), self._PIECE, self._size - self._pos)
        try:
            row = self._conn.execute(
                q("content_piece"),
                (self._pos + 1, want, self._id),
            ).fetchone()
        except psycopg.Error as exc:
            raise self._owner.error(exc, "reading a message") from exc
        piece = bytes(row[0]) if row else b""
        self._hash.update(piece)
        self._pos += len(piece)
        if (
            self._pos >= self._size
            and self._expected is not None
            and self._hash.digest() != self._expected
        ):
            raise CorruptContent(self._entry_id)
        buffer[: len(piece)] = piece
        return len(piece)

    def close(self) -> None:
        if not self.closed:
            self._conn.close()
        super().close()

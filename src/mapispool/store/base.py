"""The ``Store`` interface (DESIGN §7): what the spooler, the session and the application
layer may ask of a message store, and what every implementation (``store/sqlite/``, the
in-memory store, ``store/postgres/``) promises. The docstrings are the contract.

The shape
---------
* Every method that touches data is a coroutine. An implementation never blocks the
  event loop for a query (SQLite runs its SQL on a thread of its own; PostgreSQL is
  asynchronous by nature). ``folder_names``, ``folder_entry_id``,
  ``folder_by_entry_id`` (no I/O) and ``open_content`` (a blocking stream) are the
  exceptions, documented there.
* The coroutines may be awaited from any thread's event loop, not only the one that
  opened the store: the spooler runs plug-in transports' synchronous ``Support`` calls
  (``save_changes``, ``get_state``...) to completion on a helper thread's loop while the
  spooler's loop waits. ``wait_for_work`` is awaited on one loop at a time; wake-ups
  from other threads reach it thread-safely.
* Work is done in batches: ``claim`` hands out a page of queued messages with everything
  a transport needs (props, recipients, small contents) under a lease; ``record`` applies
  the outcomes of many messages in one transaction; ``deliver`` files an inbound batch
  with its dedupe keys in one transaction. Nothing reads the whole queue: every query
  that may return many rows takes a ``limit`` and a cursor.
* Many workers: a claim is fenced by a token. A write tied to a claim (``mark_handoff``,
  ``record``, ``renew``, ``release``) carries the token and is refused with
  ``StaleClaim`` once the claim is no longer current, so a stalled worker never
  overwrites a newer attempt. A single-process store may treat the lease as infinite,
  but must still refuse stale tokens (``recover`` and ``release`` end claims).

The promises (DESIGN §7)
------------------------
* A submitted message is durable (fsync'd, power loss included) when ``submit`` returns;
  from then on it is sent, bounced or visibly failed, never dropped.
* The queue state machine (``model.TRANSITIONS``) is enforced by the store: a transition
  it does not allow raises (or, in ``record``, reports) ``InvalidTransition``.
* Outbound is at-least-once, with the uncertain state kept exactly: ``mark_handoff(begun
  = True)`` is durable against a crash of the process (in the WAL, for SQLite) before it
  returns; a message whose hand-over began and whose outcome was not recorded comes back
  from ``recover`` as ``uncertain`` (never queued again silently), unless every
  recipient's outcome was already recorded.
* Inbound is exactly-once: ``deliver`` stores a message and its dedupe key together or
  not at all; ``sync`` is the barrier after which every earlier ``deliver`` survives a
  power loss.
* Queue order is submit order: ``(submit_time, seq)``, ``seq`` being the store's own
  increasing number for the message (``QueueEntry.seq``).

Errors
------
Every error is a ``MapiError`` naming the store, the cause and what to do (disk full,
read-only, damaged, locked...), never a driver's raw exception; ``MAPI_E_NOT_FOUND`` for
an unknown entry id or folder name; ``InvalidTransition`` for a state change the state
machine refuses; ``StaleClaim`` for a write with a token that is no longer current
(a message a newer claim finished and deleted included: a token never gets
``MAPI_E_NOT_FOUND``, so that a worker that lost its claim can tell and drop its outcome).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import IO, Any, ClassVar, Self

from .model import Event, QueueEntry, QueueState, Recipient, StoredMessage
from .types import Claim, Delivery, Outcome, QueueAction, Recorded, Route

#: The folders every store has, in their fixed order.
FOLDERS = ("Outbox", "Inbox", "Sent Items", "Deleted Items")

#: A place in submit order: (submit_time, seq) of the last row of the previous page.
QueuePosition = tuple[float, int]

#: Default size of a page from the queue queries and ``claim``.
PAGE = 500

#: Contents up to this many bytes come inline with a claim (``Claim.content``).
INLINE_LIMIT = 64 * 1024


class Store(ABC):
    """A mapispool message store: folders, the outgoing queue, dedupe keys, events,
    status rows and transport state (DESIGN §7)."""

    #: True when several spoolers (workers) may run on one store at once (PostgreSQL);
    #: False when ``acquire_spooler_lock`` admits one spooler (SQLite, in memory).
    many_workers: ClassVar[bool] = False

    #: A one-line alert from the integrity checks run when a spooler took the store
    #: (a store that lost submissions, a damaged file), or None. Shown in the status table.
    integrity_alert: str | None = None

    # -- opening and closing ------------------------------------------------------------

    @classmethod
    @abstractmethod
    async def open(cls, location: str, **options: Any) -> Self:
        """Open the store at ``location`` (a path or URL), creating and migrating it as
        needed: a store created by an older version is migrated in place; one created by
        a newer version is refused with ``MAPI_E_VERSION``. Raises ``MapiError`` with a
        one-line reason (cannot create, not writable, damaged, disk full)."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store lives, for messages and ``mapispool status`` (a path, or a URL
        without its password)."""

    @abstractmethod
    async def close(self) -> None:
        """Release the spooler lock if held, finish queued writes and close. Idempotent."""

    # -- the spooler lock (one spooler per SQLite store; registration with many) --------

    @abstractmethod
    async def acquire_spooler_lock(self, worker: str = "") -> bool:
        """Register this process as a spooler on the store, under the name ``worker``.

        One-spooler stores (``many_workers`` False): an exclusive lock; False when another
        process holds it. The first successful call runs the store's integrity checks
        (their finding goes to ``integrity_alert``). Many-worker stores: registers the
        worker (False if a live worker has the same name). Idempotent while held."""

    @abstractmethod
    async def release_spooler_lock(self) -> None:
        """Give the lock (or the worker's registration) back: a clean stop. Idempotent."""

    # -- sharing work among workers (no-ops where one spooler runs on the store) --------

    async def try_flush_lock(self) -> bool:
        """Take "a FlushQueues runs on this store"; False when another worker holds it.
        A one-spooler store always gives it: the spooler's own lock serialises flushes."""
        return True

    async def try_flush_unlock(self) -> None:
        """Give back what ``try_flush_lock`` took."""
        return None

    async def try_lane(self, transport: str, lanes: int = 1) -> int | None:
        """Take one of ``transport``'s ``lanes``: its number, or None when other workers
        hold them all. A one-spooler store always gives lane 0."""
        return 0

    async def release_lane(self, transport: str, lane: int) -> None:
        """Give back a lane that ``try_lane`` took."""
        return None

    async def live_workers(self) -> list[dict[str, Any]]:
        """The workers alive on the store (name, host, pid, started_at, heartbeat_at)."""
        return []

    async def worker_status_rows(self) -> list[tuple[str, dict[int, Any]]]:
        """``load_status_rows`` with the name of the worker that saved each row."""
        return [("", row) for row in await self.load_status_rows()]

    # -- submitting -------------------------------------------------------------------

    @abstractmethod
    async def submit(
        self,
        content: bytes,
        props: Mapping[int, Any],
        recipients: Sequence[Recipient],
        *,
        submit_time: float,
        not_before: float | None,
        expires_at: float,
        eight_bit: bool = False,
        canonical: bool = False,
    ) -> bytes:
        """Write a message into the Outbox with its queue entry, in one durable
        (fsync'd) transaction, and return its new entry id.

        ``content`` is stored as given. ``canonical=True`` is the caller's word that it
        is in canonical form (``submission.prepare``: CRLF line ends only, no Bcc or
        Resent-Bcc field) and that ``eight_bit`` is exact (true when a byte is above
        127); both flags are stored and returned with every ``Claim``, so that a
        transport sends the stored bytes without scanning or rewriting them. A message
        stored without the flag (one submitted by an older version, or by a caller that
        did not canonicalise it) is sent the careful way: line ends converted, Bcc
        removed again, 8-bit bytes looked for. The entry is ``deferred`` when ``not_before`` is
        in the future (send later), else ``queued``. The lifetime counts from when the
        message becomes due: ``expires_at`` is moved by the deferral. The submission is
        counted with the message (the store's ``seq`` check) and logs the event
        ``submitted``. Wakes ``wait_for_work``."""

    # -- claiming work (outbound) --------------------------------------------------------

    @abstractmethod
    async def claim(
        self,
        route: Route,
        *,
        now: float,
        limit: int = PAGE,
        lease: float = 300.0,
        worker: str = "",
        ignore_backoff: bool = False,
        submitted_before: float | None = None,
        exclude: Collection[bytes] = (),
        released: Collection[bytes] = (),
        inline_limit: int = INLINE_LIMIT,
    ) -> list[Claim]:
        """Claim up to ``limit`` messages for ``route.transport``, in submit order, in one
        transaction, and return them (an empty list: nothing qualifies now).

        A message qualifies when it is due (``queued``; ``deferred`` or ``retry`` whose
        ``not_before`` <= ``now``, every ``retry`` with ``ignore_backoff``) and
        ``route.takes`` it (one of its pending recipients, those with no outcome and no
        responsibility, goes to this transport given the transports that declined it;
        with ``route.senders``, in the order ``route.for_sender`` gives for the
        message's ``PR_SENDER_EMAIL_ADDRESS``),
        or it is ``parked`` by this transport and its entry id is in ``released``
        (whatever the route: those come first); and when it was submitted at or before
        ``submitted_before`` (if given) and is not in ``exclude``. Non-qualifying rows
        are skipped, not returned: fewer than ``limit`` claims means the queue holds no
        more qualifying messages.

        Each claimed message goes to ``in_flight`` with its attempt counted and the
        event ``offered`` (with the transport), gets a fresh fencing ``token`` and a
        lease until ``now + lease``, and comes with its props, all its recipients and
        its content when it is at most ``inline_limit`` bytes. In-flight messages, even
        with an expired lease, are never claimed: ``recover`` repairs them first (their
        hand-over may have begun). Memory is bounded by ``limit``, never by the queue's length."""

    @abstractmethod
    async def renew(self, claims: Sequence[Claim], lease: float) -> list[bytes]:
        """Extend the leases of ``claims`` to now + ``lease`` (updating each
        ``Claim.lease_until``); return the entry ids of those no longer current (lost:
        their attempts must stop without recording)."""

    @abstractmethod
    async def release(self, claims: Sequence[Claim]) -> None:
        """Give back claims that were not offered (shutdown, a flush that ended): each
        message returns to the state it was claimed from (``Claim.claimed_from``), its
        attempt count is given back, the event ``unclaimed`` is logged, and its token
        stops being current. Claims no longer current are skipped silently."""

    @abstractmethod
    async def mark_handoff(self, entry_id: bytes, token: int | None, begun: bool) -> None:
        """Persist that the transport began (``begun``) or finished the irreversible
        hand-over of a claimed message (for SMTP: the final dot of DATA). Before it
        returns, the mark survives a crash of the process (durable in the WAL; not
        necessarily fsync'd): a crash between the two marks makes the message
        ``uncertain`` in ``recover``. Raises ``StaleClaim`` for a token not current
        (None: not fenced, for callers outside a claim)."""

    # -- recording outcomes -------------------------------------------------------------

    @abstractmethod
    async def record(self, outcomes: Sequence[Outcome], *, durable: bool = False) -> list[Recorded]:
        """Apply ``outcomes`` (see ``Outcome`` for what one holds and in which order it
        is applied), for many messages, in ONE transaction, and return one ``Recorded``
        per outcome, in order.

        An outcome the store refuses (``InvalidTransition``, ``StaleClaim``,
        ``MAPI_E_NOT_FOUND``, or a statement of its own that fails: a constraint, a
        trigger) changes nothing and gets its error in its ``Recorded``; the others are
        applied all the same (per-outcome savepoints), except the later outcomes of the
        same message in the batch, refused too (a message's outcomes apply in order, and
        none after its first refusal: "recipients delivered" then "finished" can share
        one call). An error that ends the whole
        transaction (disk full at commit, an I/O error) raises and nothing of the batch
        is applied.

        Once it returns, the batch survives a crash of the process; with ``durable`` it
        also survives a power loss (fsync'd). Otherwise a later durable commit or
        ``sync`` makes it durable: a lost non-durable outcome at worst sends a message
        again (at-least-once). An implementation may commit outcomes of several
        concurrent callers together (group commit); each caller's call still returns
        only after its own outcomes are committed. A message that goes back to a due
        state wakes ``wait_for_work``."""

    async def record_one(self, outcome: Outcome, *, durable: bool = False) -> QueueState | None:
        """``record`` for one outcome: its old state, or its error raised."""
        (recorded,) = await self.record([outcome], durable=durable)
        return recorded.check().old

    @abstractmethod
    async def recover(self, *, parked: bool = True, now: float | None = None) -> dict[str, int]:
        """Repair what a stopped or crashed spooler left behind, in one durable transaction;
        returns counts ``{"requeued": n, "uncertain": n, "unparked": n}``.

        ``in_flight`` messages become ``uncertain`` when their hand-over had begun and a
        recipient has no recorded outcome; otherwise ``queued`` (events
        ``recovered-<state>``). Their claims stop being current. With ``parked``,
        ``parked`` messages are queued again (the transport that parked them is gone).
        ``now`` None: every in-flight message (a one-spooler store at the spooler's start,
        or once nothing is being sent); a time: only those whose lease ended before
        ``now`` (many workers: a dead worker's claims)."""

    # -- inbound ------------------------------------------------------------------------

    @abstractmethod
    async def deliver(
        self, items: Sequence[Delivery], *, durable: bool = True
    ) -> list[bytes | None]:
        """File ``items`` (received mail, reports, generated messages) in ONE transaction,
        each in its folder together with its dedupe key and the event ``received``;
        return, per item in order, its new entry id, or None when its dedupe key was
        already stored (or appears earlier in the same batch): then nothing is written
        for it. The keys are checked by the insert itself, not by a query per item.

        ``durable`` (the default): the batch survives a power loss when this returns.
        ``durable=False``: it survives a crash of the process; ``sync`` makes it durable.
        The caller must not delete or flag a server copy before that."""

    @abstractmethod
    async def sync(self) -> None:
        """The durability barrier: when it returns, every earlier write of this store
        object (non-durable deliveries and outcomes included) survives a power loss.
        Cheap when nothing is waiting for it (no fsync then)."""

    @abstractmethod
    async def known_dedupe_keys(self, keys: Collection[str]) -> set[str]:
        """Which of ``keys`` are stored (one query for the batch)."""

    async def has_dedupe_key(self, key: str) -> bool:
        """True when a message with this dedupe key was committed."""
        return key in await self.known_dedupe_keys([key])

    @abstractmethod
    async def add_dedupe_keys(self, keys: Iterable[str]) -> None:
        """Durably record dedupe keys without messages (re-baselining a mailbox after a
        UIDVALIDITY change); keys already stored are kept."""

    # -- transport state and status rows ------------------------------------------------

    @abstractmethod
    async def get_transport_state(self, transport: str, key: str) -> Any:
        """A JSON value saved by ``set_transport_state``, or None."""

    @abstractmethod
    async def set_transport_state(self, transport: str, key: str, value: Any) -> None:
        """Durably save a JSON value for a transport (replacing the previous one)."""

    @abstractmethod
    async def save_status_rows(
        self, rows: Sequence[Mapping[int, Any]], names: Sequence[str], *, worker: str = ""
    ) -> None:
        """Replace ``worker``'s status table (read by commands run from another process).
        Not durable against power loss; never wakes ``wait_for_work``."""

    @abstractmethod
    async def load_status_rows(self) -> list[dict[int, Any]]:
        """Every worker's saved status rows, worker by worker, each in its saved order."""

    # -- folders and messages ------------------------------------------------------------

    def folder_names(self) -> list[str]:
        """The folders, in their fixed order (no I/O)."""
        return list(FOLDERS)

    @abstractmethod
    def folder_entry_id(self, name: str) -> bytes:
        """The entry id of a folder (what ``PR_SENTMAIL_ENTRYID`` may name);
        ``MAPI_E_NOT_FOUND`` naming the folders for an unknown name. No I/O: the folders
        are fixed, and a store loads their entry ids when it opens."""

    @abstractmethod
    def folder_by_entry_id(self, entry_id: bytes) -> str | None:
        """The folder name for a folder entry id, or None (no I/O, as above)."""

    @abstractmethod
    async def messages(
        self, folder: str, *, after: int | None = None, limit: int = PAGE
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages of ``folder`` with their contents, oldest first,
        after the message whose ``seq`` is ``after`` (``StoredMessage.seq``)."""

    @abstractmethod
    async def message_count(self, folder: str) -> int:
        """How many messages ``folder`` holds."""

    @abstractmethod
    async def message(self, entry_id: bytes, *, content: bool = True) -> StoredMessage:
        """One message by entry id, in whatever folder it is (``MAPI_E_NOT_FOUND``), with
        its props and recipients; without ``content`` its ``content`` is ``b""``."""

    @abstractmethod
    def open_content(self, entry_id: bytes, *, verify: bool = True) -> IO[bytes]:
        """A blocking stream over a message's content, read in pieces (for contents too
        big to come inline with a claim). Safe to call from any thread; reading it from
        the event loop blocks it for the duration of each read.

        With ``verify``, reading to the end checks the content against the checksum taken
        when it was stored: the read that would return its last bytes raises
        ``MapiError(MAPI_E_CORRUPT_DATA)`` instead when they differ. ``verify=False`` is
        for readers of a part (the head quoted in a report). ``MAPI_E_NOT_FOUND``."""

    @abstractmethod
    async def move_message(self, entry_id: bytes, folder: str) -> None:
        """Move a message to another folder (event ``moved``)."""

    @abstractmethod
    async def delete_message(self, entry_id: bytes) -> None:
        """Delete a message for good, with its queue entry and recipients (event
        ``deleted``)."""

    # -- the outgoing queue: queries (all paged) -----------------------------------------

    @abstractmethod
    async def queue_entry(self, entry_id: bytes, *, with_recipients: bool = True) -> QueueEntry:
        """The queue entry of a submitted message, finished ones included
        (``MAPI_E_NOT_FOUND``); without ``with_recipients`` its ``recipients`` stay empty."""

    @abstractmethod
    async def queue_page(
        self,
        *,
        states: Collection[QueueState] | None = None,
        after: QueuePosition | None = None,
        limit: int = PAGE,
        with_recipients: bool = True,
    ) -> list[QueueEntry]:
        """Up to ``limit`` queue entries in submit order after ``after``; ``states`` None
        means every state but ``sent`` and ``cancelled``."""

    @abstractmethod
    async def due_entries(
        self,
        now: float,
        *,
        ignore_backoff: bool = False,
        after: QueuePosition | None = None,
        limit: int = PAGE,
    ) -> list[QueueEntry]:
        """Up to ``limit`` messages that may be offered now, in submit order after
        ``after``, without recipient lists: queued ones, deferred ones whose time has
        come, retries whose backoff has passed (every retry with ``ignore_backoff``)."""

    @abstractmethod
    async def parked_entries(
        self, transport: str, *, after: QueuePosition | None = None, limit: int = PAGE
    ) -> list[QueueEntry]:
        """Messages ``transport`` parked (END_DONT_RESEND), in submit order, paged."""

    @abstractmethod
    async def overdue_entries(self, now: float, *, limit: int = PAGE) -> list[QueueEntry]:
        """Up to ``limit`` waiting messages (queued or retry) whose lifetime ran out by
        ``now``. A deferred message waiting for its time is never among them."""

    @abstractmethod
    async def settled_entries(self, *, limit: int = PAGE) -> list[QueueEntry]:
        """Up to ``limit`` queued or retrying messages none of whose recipients is
        pending (a spooler stopped between recording outcomes and finishing them)."""

    @abstractmethod
    async def delayed_entries(self, due_before: float, *, limit: int = PAGE) -> list[QueueEntry]:
        """Up to ``limit`` messages still waiting (queued or retry, tried at least once),
        due before ``due_before``, whose sender has not had a delay notice yet."""

    @abstractmethod
    async def pending_types(self, seqs: Sequence[int]) -> dict[int, list[str]]:
        """For each message ``seq``, the address types of its pending recipients."""

    @abstractmethod
    async def recipient_outcomes(
        self, entry_id: bytes
    ) -> list[tuple[int, str | None, str | None, bool]]:
        """(row id, outcome, report text, NDR already sent) for each recipient."""

    @abstractmethod
    async def next_wakeup(self) -> float | None:
        """The earliest ``not_before`` of a deferred or retrying message, or None."""

    @abstractmethod
    async def count_by_state(self) -> dict[QueueState, int]:
        """How many queue entries are in each state (one query)."""

    @abstractmethod
    async def events(self, entry_id: bytes) -> list[Event]:
        """A message's history, oldest first."""

    # -- the outgoing queue: a person's actions -------------------------------------------

    @abstractmethod
    async def act(
        self, entry_id: bytes, action: QueueAction, *, expires_at: float | None = None
    ) -> QueueState:
        """A person's ``action`` in one durable transaction; returns the old state. One
        table for every store, ``types.QUEUE_ACTIONS`` (``action_applies``): ``hold``
        (queued, deferred, retry, parked) to ``held``; ``release`` (held) to ``queued``;
        ``retry`` (retry, deferred, parked, held, uncertain, failed) to ``queued`` now, a
        ``failed`` one reopened (failed recipients pending, a new lifetime until
        ``expires_at``, required then); ``cancel`` (queued, deferred, retry, parked, held,
        uncertain) to ``cancelled`` in Deleted Items; ``purge`` (all but in flight)
        removes it. In flight: never held, cancelled or purged (the caller answers
        ``MAPI_E_UNABLE_TO_ABORT``); outside the table: ``InvalidTransition``, nothing
        changed. Clears ``parked_by``, keeps ``last_error``, logs the table's event
        (purge: ``deleted``), wakes ``wait_for_work`` when the message becomes due."""

    # -- waiting for work ---------------------------------------------------------------

    @abstractmethod
    async def wait_for_work(self, deadline: float | None) -> bool:
        """Wait until work may be due; return True when woken by work, False at
        ``deadline`` (a ``time.time()`` value; None: no deadline).

        Woken by a submit, a person's action or an outcome that made a message due,
        through this store object, or through another process where the backend can
        tell (PostgreSQL: LISTEN/NOTIFY; SQLite: another process's commit, noticed within
        a short poll). A wake-up that happened since the previous call is not lost: the
        call returns at once. Spurious wake-ups are allowed; callers re-check the queue."""

"""The database extension's protocol engine: one replica of one share (sans-I/O).

Theory of operation
-------------------
A :class:`Replica` owns a :class:`~csembed.database.store.Store` and talks to
peers through connection handles the runtime opens with :meth:`attach` and
closes with :meth:`detach`. It never touches sockets or clocks: messages come
in through :meth:`receive`, local changes through :meth:`local_put`,
:meth:`local_delete` and :meth:`local_rename` (with ``now_ns`` passed in),
and every call returns the :class:`Outgoing` messages to send.

Versions. Each write is a *version* named by its dot ``(last_updated_by,
last_updated_rev)``; its vector clock is the join of every version of that
record the writer held, with the writer's own entry set to the new revision
(:mod:`csembed.database.vector_clock`). A received version that some stored
version descends from (or equals) is dropped; otherwise it is stored and every
version it descends from is deleted. What remains for a record are its
*concurrent* versions (usually one). The winner among them -- what
:meth:`get` returns -- is chosen by folding the resolver over them in dot
order, so every peer holding the same versions shows the same winner. A local
write joins all of them and so resolves the conflict everywhere.

Sync. On attach the replica sends ``database.get_updates`` with its ``since``
map (highest revision known per writer, kept in its own table). A peer's
``get_updates`` subscribes that connection: the replica remembers, per
connection and per writer, the revision it has sent up to (starting from the
peer's ``since``) and streams every stored, shareable version above it in
revision order -- the initial backlog and later changes alike, since both are
just "stored versions the peer has not been sent". A version received from a
connection also advances that connection's mark (the peer has it), which is
what keeps relays from echoing back to the sender. Output per connection and
call is bounded by ``Limits.batch``; :meth:`pull` gives more, :meth:`pause`
holds a connection whose transport is full.

Access levels. A read-only replica accepts only versions signed by the
read-write key, keeps the signature with the raw body and relays both
verbatim. A read-write replica accepts unsigned versions from read-write
peers, requires a valid signature on anything from a read-only peer, and signs
(once, then stored) whatever it sends to a read-only peer. A read-only
replica's own changes are stored ``local_only``: never sent, never counted in
``since``, and dropped when they lose a conflict against a signed version.

Anything wrong in a peer's message raises
:class:`~csembed.database.errors.InvalidUpdate` internally; :meth:`receive`
turns it into a log line and an :class:`UpdateRejected` event and changes
nothing. The application learns about changes and conflicts from
:meth:`take_events`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from csembed.database.errors import InvalidUpdate, LocalWriteError
from csembed.database.record import (
    GetUpdates,
    Limits,
    Record,
    check_key,
    check_value,
)
from csembed.database.signing import Signer, Verifier
from csembed.database.store import Store
from csembed.database.vector_clock import INT64_MAX, VectorClock, is_peer_id
from csembed.protocol.wire import Message, encode_body, encode_message, parse_body

__all__ = [
    "Batch",
    "Conflict",
    "ConflictKind",
    "DatabaseEvent",
    "Outgoing",
    "RecordChanged",
    "Replica",
    "Resolution",
    "Resolver",
    "UpdateRejected",
    "Written",
    "latest_update_time",
]

_log = logging.getLogger("csembed.database")

ConnId = Hashable


# -- results and events ------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """A message for one connection: exact body bytes and, when signed, the signature."""

    conn_id: ConnId
    raw: bytes
    signature: bytes | None = None

    def encode(self) -> bytes:
        """Wire bytes (``m`` or ``s`` frame)."""
        return encode_message(self.raw, signature=self.signature)

    def message(self) -> Message:
        """The message as the peer's decoder will see it."""
        return Message(body=parse_body(self.raw), raw=self.raw, signature=self.signature)


@dataclass(frozen=True)
class Written:
    """Result of a local write: the new version and what to send."""

    record: Record
    outgoing: tuple[Outgoing, ...]


@dataclass
class Batch:
    """Filled in when a :meth:`Replica.batch` block commits: what to send then."""

    outgoing: list[Outgoing] = field(default_factory=list)
    events: list[DatabaseEvent] = field(default_factory=list)


@dataclass(frozen=True)
class Resolution:
    """A resolver's answer: which of two records wins, which loses."""

    winner: Record
    loser: Record


Resolver = Callable[[Record, Record], Resolution]
"""``resolver(current, incoming)``: pick a winner between two conflicting records.

It must be deterministic and depend only on the two records (every peer runs
it and must reach the same answer), and must return the two records it was
given.
"""


def latest_update_time(current: Record, incoming: Record) -> Resolution:
    """The draft's default: the larger ``update_time`` wins; ties by peer ID, revision, uuid."""

    def rank(record: Record) -> tuple[int, str, int, str]:
        return (record.update_time, record.last_updated_by, record.last_updated_rev, record.uuid)

    if rank(incoming) > rank(current):
        return Resolution(incoming, current)
    return Resolution(current, incoming)


class ConflictKind(Enum):
    """What kind of conflict an event reports."""

    CONCURRENT = "concurrent"  #: two versions of one record written concurrently
    SAME_KEY = "same_key"  #: two records (different uuid) claim one key


@dataclass(frozen=True)
class RecordChanged:
    """A record's winning version changed (``conn_id`` None: a local write).

    When a peer's update moved the record to another key, the old key is also
    noted durably (:meth:`Replica.departures`) until :meth:`Replica.acted_on`.
    """

    record: Record
    previous: Record | None
    conn_id: ConnId | None


@dataclass(frozen=True)
class Conflict:
    """A conflict was found; ``loser`` is handed to the application to keep or drop.

    For CONCURRENT both versions stay stored until a write supersedes them
    (every peer shows ``winner``). For SAME_KEY both records stay; :meth:`Replica.get`
    returns ``winner`` for the key, and the application may rename the loser.
    """

    kind: ConflictKind
    winner: Record
    loser: Record
    conn_id: ConnId | None


@dataclass(frozen=True)
class UpdateRejected:
    """A peer's database message was refused; nothing was changed."""

    conn_id: ConnId
    reason: str


DatabaseEvent = RecordChanged | Conflict | UpdateRejected


# -- connections ---------------------------------------------------------------


@dataclass
class _Connection:
    conn_id: ConnId
    peer_read_only: bool
    peer_id: str | None
    subscribed: bool = False
    paused: bool = False
    # Per writer: the revision up to which this peer has everything we would
    # send (from its since map, what we sent, and what it sent us).
    sent: dict[str, int] = field(default_factory=dict)


def _maximal(versions: list[Record]) -> list[Record]:
    """Versions nothing else descends from, in dot order (the order the resolver folds in)."""
    top = [v for v in versions if not any(v.vector_clock < o.vector_clock for o in versions)]
    top.sort(key=lambda v: v.dot)
    return top


class Replica:
    """One share's replicated records and the ``database`` extension on its connections.

    ``read_only`` is this peer's own access level. ``verify(raw, signature)``
    checks a signature against the read-write public key; ``sign(raw)`` (read-write
    replicas only) makes one. ``rng(n)`` returns ``n`` random bytes (new uuids).
    ``resolver`` picks conflict winners (default :func:`latest_update_time`).
    """

    def __init__(
        self,
        store: Store,
        *,
        read_only: bool,
        verify: Verifier,
        sign: Signer | None = None,
        rng: Callable[[int], bytes],
        resolver: Resolver = latest_update_time,
        limits: Limits | None = None,
    ) -> None:
        if read_only and sign is not None:
            raise ValueError("a read-only replica cannot hold the read-write signing key")
        self.store = store
        self.read_only = read_only
        self._verify = verify
        self._sign = sign
        self._rng = rng
        self._resolver = resolver
        self.limits = limits or Limits()
        self._conns: dict[ConnId, _Connection] = {}
        self._events: list[DatabaseEvent] = []
        self._batch: Batch | None = None

    @property
    def peer_id(self) -> str:
        """This replica's peer ID for the share."""
        return self.store.peer_id

    # -- connections ---------------------------------------------------------

    def attach(
        self, conn_id: ConnId, *, peer_read_only: bool, peer_id: str | None = None
    ) -> list[Outgoing]:
        """Start the extension on a new connection; returns our ``get_updates``.

        ``peer_read_only`` is the access level the peer authenticated with.
        """
        if conn_id in self._conns:
            raise ValueError(f"connection {conn_id!r} is already attached")
        if self._batch is not None:
            raise ValueError("attach() inside a batch would advertise uncommitted revisions")
        if peer_read_only and not self.read_only and self._sign is None:
            raise ValueError("a read-write replica needs sign() to serve read-only peers")
        self._conns[conn_id] = _Connection(conn_id, peer_read_only, peer_id)
        return [Outgoing(conn_id, encode_body(GetUpdates(self.since()).to_body()))]

    def detach(self, conn_id: ConnId) -> None:
        """Forget a closed connection (unknown ids are ignored)."""
        self._conns.pop(conn_id, None)

    def pause(self, conn_id: ConnId) -> None:
        """Hold output for a connection whose transport buffer is full."""
        self._conn(conn_id).paused = True

    def resume(self, conn_id: ConnId) -> list[Outgoing]:
        """Release a paused connection; returns the next batch for it."""
        conn = self._conn(conn_id)
        conn.paused = False
        return self._collect(conn, self.limits.batch)

    def pull(self, conn_id: ConnId, limit: int | None = None) -> list[Outgoing]:
        """The next messages owed to a connection (paused or not); [] when none."""
        return self._collect(self._conn(conn_id), limit or self.limits.batch)

    def has_pending(self, conn_id: ConnId) -> bool:
        """Whether :meth:`pull` may have more for this connection.

        Can be true once more than needed (versions since superseded); the
        :meth:`pull` that returns ``[]`` then clears it.
        """
        conn = self._conn(conn_id)
        if not conn.subscribed:
            return False
        sent = conn.sent
        return any(top > sent.get(author, 0) for author, top in self.store.seen.items())

    def _conn(self, conn_id: ConnId) -> _Connection:
        try:
            return self._conns[conn_id]
        except KeyError:
            raise ValueError(f"connection {conn_id!r} is not attached") from None

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        """Group many receives and local writes into one SQLite transaction.

        Inside the block :meth:`receive` and the local writes return no
        messages and events wait; when the block commits, the returned
        :class:`Batch` holds the messages for every connection (its first
        batch of each; :meth:`pull` gives the rest) and the events go to
        :meth:`take_events`. A message rejected inside the block undoes only
        itself. If the block raises, everything in it is rolled back and
        nothing is sent. Use it for a scan's worth of writes or a peer's
        backlog: one commit instead of one per record.
        """
        if self._batch is not None:
            raise ValueError("batches do not nest")
        result = Batch()
        self._batch = result
        try:
            with self.store.transaction():
                yield result
        finally:
            self._batch = None
        self._events.extend(result.events)
        result.events = []
        result.outgoing = self._push_all()

    # -- receiving -----------------------------------------------------------

    def receive(self, conn_id: ConnId, message: Message) -> list[Outgoing]:
        """Handle one message from a peer; returns what to send (to any connection).

        Messages of other extensions are ignored. A bad message is logged and
        reported as :class:`UpdateRejected`; it never raises.
        """
        conn = self._conn(conn_id)
        handler = _HANDLERS.get(message.type)
        if handler is None:
            return []
        try:
            if message.has_payload:
                raise InvalidUpdate("must not carry a binary payload", "message")
            return handler(self, conn, message)
        except InvalidUpdate as exc:
            reason = f"{message.type}: {exc}"
            _log.warning("rejected from connection %r (peer %s): %s", conn_id,
                         conn.peer_id or "unknown", reason)
            self._events.append(UpdateRejected(conn_id, reason))
            return []

    def _on_get_updates(self, conn: _Connection, message: Message) -> list[Outgoing]:
        conn.sent = dict(GetUpdates.from_body(message.body, self.limits).since)
        conn.subscribed = True
        return self._collect(conn, self.limits.batch)

    def _on_update(self, conn: _Connection, message: Message) -> list[Outgoing]:
        record = Record.from_body(message.body, message.raw, message.signature, self.limits)
        if self.read_only and record.last_updated_by == self.peer_id:
            raise InvalidUpdate("names this read-only peer as the writer", "last_updated_by")
        if message.signature is not None:
            if not self._verify(message.raw, message.signature):
                raise InvalidUpdate("does not verify with the read-write key", "signature")
        elif self.read_only:
            raise InvalidUpdate("missing; a read-only peer accepts only signed records",
                                "signature")
        elif conn.peer_read_only:
            raise InvalidUpdate("missing on an update from a read-only peer", "signature")
        self._apply(record, conn.conn_id)
        author, rev = record.dot
        if rev > conn.sent.get(author, 0):
            conn.sent[author] = rev
        return self._push_all()

    def _apply(self, incoming: Record, conn_id: ConnId) -> None:
        events: list[DatabaseEvent] = []
        store = self.store
        with store.transaction():
            store.note_seen(*incoming.dot)
            if incoming.last_updated_by == self.peer_id:
                store.raise_revision(incoming.last_updated_rev)
            if store.has_dot(*incoming.dot):
                return
            before = store.versions(incoming.uuid)
            clock = incoming.vector_clock
            if any(not v.local_only and clock <= v.vector_clock for v in before):
                return  # a stored version already descends from it
            superseded = [v for v in before if v.vector_clock < clock]
            after = [v for v in before if not v.vector_clock < clock] + [incoming]
            if len(after) > self.limits.max_versions:
                raise InvalidUpdate(
                    f"record {incoming.uuid} would have {len(after)} concurrent versions,"
                    f" more than {self.limits.max_versions}"
                )
            store.delete(v.dot for v in superseded)
            self._settle(before, after, incoming, conn_id, events, check_key=True)
        self._emit(events)

    # -- choosing winners ----------------------------------------------------

    def _fold(self, candidates: list[Record]) -> Record:
        winner = candidates[0]
        for other in candidates[1:]:
            result = self._resolver(winner, other)
            if not (
                (result.winner is winner and result.loser is other)
                or (result.winner is other and result.loser is winner)
            ):
                raise TypeError("resolver must return the two records it was given")
            winner = result.winner
        return winner

    def _winner(self, versions: list[Record]) -> Record | None:
        if not versions:
            return None
        top = _maximal(versions)
        return top[0] if len(top) == 1 else self._fold(top)

    def _settle(
        self,
        before: list[Record],
        after: list[Record],
        incoming: Record,
        conn_id: ConnId | None,
        events: list[DatabaseEvent],
        *,
        check_key: bool,
        update_time_text: str | None = None,
    ) -> None:
        """Store ``incoming``, pick the record's winner among ``after``, describe it.

        ``before`` are the versions held until now, ``after`` those that remain
        (``incoming`` included, superseded ones already deleted).
        """
        uuid = incoming.uuid
        previous = self._winner(before)
        while True:
            top = _maximal(after)
            winner = top[0] if len(top) == 1 else self._fold(top)
            # A read-only peer's own change that loses to a signed version is
            # handed to the application and dropped: it could never spread.
            dropped = [v for v in top if v.local_only and v is not winner]
            if not dropped:
                break
            for loser in dropped:
                events.append(Conflict(ConflictKind.CONCURRENT, winner, loser, conn_id))
            self.store.delete(v.dot for v in dropped if v is not incoming)
            after = [v for v in after if v not in dropped]
        store = self.store
        if any(v is incoming for v in after):
            store.insert(incoming, visible=winner is incoming, update_time_text=update_time_text)
        if len(after) > 1 or winner is not incoming:
            store.set_visible(uuid, winner.dot)
        if len(top) > 1 and any(v is incoming for v in top):
            if winner is incoming:
                others = [v for v in top if v is not incoming]
                loser = others[0] if len(others) == 1 else self._fold(others)
            else:
                loser = incoming
            if winner.live or loser.live:
                events.append(Conflict(ConflictKind.CONCURRENT, winner, loser, conn_id))
        if previous is None or previous.dot != winner.dot:
            events.append(RecordChanged(winner, previous, conn_id))
            if conn_id is not None and previous is not None and previous.live \
                    and previous.key != winner.key:
                # Durable with the update until the application acted on it.
                store.note_departure(uuid, previous.key)
            if check_key and winner.live and (
                previous is None or previous.deleted or previous.key != winner.key
            ):
                for other in store.visible_by_key(winner.key):
                    if other.uuid != uuid:
                        result = self._resolver(other, winner)
                        events.append(
                            Conflict(ConflictKind.SAME_KEY, result.winner, result.loser, conn_id)
                        )

    # -- local changes -------------------------------------------------------

    def local_put(
        self, key: str, value: Any, now_ns: int, *, uuid: str | None = None
    ) -> Written:
        """Create or change the record at ``key`` (or the record ``uuid``)."""
        self._check_local(key, value, now_ns)
        current = self.get(key)
        if uuid is None:
            uuid = current.uuid if current is not None else self._new_uuid()
        elif not is_peer_id(uuid):
            raise LocalWriteError("uuid must be 32 lower-case hex digits")
        elif current is not None and current.uuid != uuid:
            raise LocalWriteError(f"key {key!r} already belongs to record {current.uuid}")
        return self._write(uuid, key, value, False, now_ns)

    def local_delete(self, key: str, now_ns: int, *, uuid: str | None = None) -> Written:
        """Delete the record at ``key`` (or the record ``uuid``), leaving a tombstone."""
        self._check_now(now_ns)
        current = self.get_uuid(uuid) if uuid is not None else self.get(key)
        if current is None or current.deleted:
            raise LocalWriteError(f"no record {uuid or key!r} to delete")
        return self._write(current.uuid, current.key, None, True, now_ns)

    def local_rename(
        self, old_key: str, new_key: str, now_ns: int, *, uuid: str | None = None
    ) -> Written:
        """Give the record at ``old_key`` (or the record ``uuid``) the key ``new_key``.

        The uuid and value stay; only the key changes. Passing ``uuid`` reaches
        a record that lost a same-key conflict, which :meth:`get` does not return.
        """
        self._check_now(now_ns)
        try:
            check_key(new_key, self.limits, "new_key")
        except InvalidUpdate as exc:
            raise LocalWriteError(str(exc)) from None
        current = self.get_uuid(uuid) if uuid is not None else self.get(old_key)
        if current is None or current.deleted:
            raise LocalWriteError(f"no record {uuid or old_key!r} to rename")
        taken = self.get(new_key)
        if taken is not None and taken.uuid != current.uuid:
            raise LocalWriteError(f"key {new_key!r} is already taken")
        return self._write(current.uuid, new_key, current.value, False, now_ns)

    def _check_now(self, now_ns: int) -> None:
        if isinstance(now_ns, bool) or not isinstance(now_ns, int):
            raise LocalWriteError("now_ns must be an int")
        if not -INT64_MAX - 1 <= now_ns <= INT64_MAX:
            raise LocalWriteError("now_ns is outside the signed 64-bit range")

    def _check_local(self, key: str, value: Any, now_ns: int) -> None:
        self._check_now(now_ns)
        try:
            check_key(key, self.limits)
            check_value(value)
        except InvalidUpdate as exc:
            raise LocalWriteError(str(exc)) from None

    def _new_uuid(self) -> str:
        while True:
            candidate = bytes(self._rng(16)).hex()
            if len(candidate) != 32:
                raise ValueError("rng(16) must return 16 bytes")
            if not self.store.has_uuid(candidate):
                return candidate

    def _write(self, uuid: str, key: str, value: Any, deleted: bool, now_ns: int) -> Written:
        events: list[DatabaseEvent] = []
        store = self.store
        with store.transaction():
            before = store.versions(uuid)
            rev = store.allocate_revision()
            clock = VectorClock().merge(*(v.vector_clock for v in before))
            clock = clock.with_entry(self.peer_id, rev)
            record = Record(
                key=key, value=value, uuid=uuid, last_updated_by=self.peer_id,
                last_updated_rev=rev, update_time=now_ns, vector_clock=clock,
                deleted=deleted, raw=b"", local_only=self.read_only,
            )
            body = record.to_body()
            try:
                record = replace(record, raw=encode_body(body))
            except (TypeError, ValueError) as exc:
                raise LocalWriteError(f"cannot encode the update: {exc}") from None
            # Everything held is an ancestor of the new version. A read-only
            # peer keeps the signed ones anyway: it must still relay them.
            superseded = [v for v in before if v.local_only or not self.read_only]
            kept = [v for v in before if v not in superseded]
            store.delete(v.dot for v in superseded)
            if not self.read_only:
                store.note_seen(self.peer_id, rev)
            # Local writes never create a same-key conflict: put and rename
            # refuse a key another record holds.
            self._settle(before, kept + [record], record, None, events, check_key=False,
                         update_time_text=body["update_time"])
        self._emit(events)
        return Written(record, tuple(self._push_all()))

    # -- sending -------------------------------------------------------------

    def _emit(self, events: list[DatabaseEvent]) -> None:
        (self._events if self._batch is None else self._batch.events).extend(events)

    def _push_all(self) -> list[Outgoing]:
        out: list[Outgoing] = []
        for conn in list(self._conns.values()):
            if conn.subscribed and not conn.paused:
                out.extend(self._collect(conn, self.limits.batch))
        return out

    def _collect(self, conn: _Connection, limit: int) -> list[Outgoing]:
        """Up to ``limit`` stored versions this connection has not had, in revision order."""
        if not conn.subscribed or self._batch is not None:
            return []  # in a batch nothing leaves before the commit
        seen = self.store.seen
        sent = conn.sent
        heads: list[Record] = []
        available: dict[str, int] = {}
        for author, top in seen.items():
            after = sent.get(author, 0)
            if top <= after:
                continue
            rows = self.store.pending(author, after, limit)
            if len(rows) < limit:
                available[author] = len(rows)  # every remaining version by this writer
            heads.extend(rows)
        heads.sort(key=lambda r: (r.last_updated_rev, r.last_updated_by))
        chosen = heads[:limit]
        taken: dict[str, int] = {}
        for record in chosen:
            sent[record.last_updated_by] = record.last_updated_rev
            taken[record.last_updated_by] = taken.get(record.last_updated_by, 0) + 1
        for author, count in available.items():
            if taken.get(author, 0) == count:
                sent[author] = seen[author]
        return self._frames(conn, chosen)

    def _frames(self, conn: _Connection, records: list[Record]) -> list[Outgoing]:
        signed = conn.peer_read_only or self.read_only
        out: list[Outgoing] = []
        new_signatures: list[tuple[tuple[str, int], bytes]] = []
        for record in records:
            signature = None
            if signed:
                signature = record.signature
                if signature is None and self._sign is not None:
                    signature = self._sign(record.raw)
                    new_signatures.append((record.dot, signature))
                if signature is None:
                    _log.error("cannot relay %s:%d unsigned to %r", *record.dot, conn.conn_id)
                    continue
            out.append(Outgoing(conn.conn_id, record.raw, signature))
        if new_signatures:
            with self.store.transaction():
                for dot, signature in new_signatures:
                    self.store.set_signature(dot, signature)
        return out

    # -- reading -------------------------------------------------------------

    def since(self) -> dict[str, int]:
        """Highest revision known per writer: the ``since`` map we request with."""
        return dict(self.store.seen)

    @property
    def revision(self) -> int:
        """The last local revision allocated."""
        return self.store.revision

    def get(self, key: str) -> Record | None:
        """The live record at ``key`` (the resolver's pick if several claim it)."""
        found = self.store.visible_by_key(key)
        if not found:
            return None
        return found[0] if len(found) == 1 else self._fold(found)

    def get_uuid(self, uuid: str) -> Record | None:
        """The winning version of record ``uuid`` (a tombstone when deleted)."""
        return self.store.visible(uuid)

    def versions(self, uuid: str) -> list[Record]:
        """Every stored version of ``uuid``: the winner and any concurrent siblings."""
        return self.store.versions(uuid)

    def records(self, *, include_deleted: bool = False) -> Iterator[Record]:
        """Every record's winning version, streamed."""
        return self.store.iter_visible(include_deleted=include_deleted)

    def departures(self) -> list[tuple[str, str]]:
        """``(uuid, old_key)`` of every peer's rename not yet acted on (see
        :meth:`acted_on`): at start, the ones a crash interrupted."""
        return self.store.departures()

    def acted_on(self, departures: Iterable[tuple[str, str]]) -> None:
        """The application followed these renames on its side (one transaction)."""
        items = list(departures)
        if items:
            with self.store.transaction():
                self.store.forget_departures(items)

    def take_events(self) -> list[DatabaseEvent]:
        """Events since the last call, oldest first (the runtime drains after each call)."""
        events, self._events = self._events, []
        return events


_HANDLERS: dict[str, Callable[[Replica, _Connection, Message], list[Outgoing]]] = {
    GetUpdates.TYPE: Replica._on_get_updates,
    Record.TYPE: Replica._on_update,
}

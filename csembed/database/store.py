"""SQLite storage of one share's replicated records.

Theory of operation
-------------------
One file per share (see :func:`share_database_path`), opened in WAL mode with
the board profile's durability policy: ``synchronous`` (``off``/``normal``/
``full``) and ``checkpoint_pages`` (WAL pages before an automatic checkpoint).
In WAL mode with ``normal`` a commit appends to the log without an fsync; the
log is synced and folded into the main file at checkpoints, so a flash device
sees one large write every few thousand pages instead of several small ones per
record. A committed transaction survives the process being killed at any
level; ``full`` also survives power loss at every commit.

Tables:

``records``
    One row per stored *version* (see :mod:`csembed.database.record`): the
    draft's fields as indexed columns, the exact JSON body received or written
    (``body``, so unknown fields and signatures survive), the read-write
    signature when known, ``local_only`` (a read-only peer's own change) and
    ``visible`` (this version is its record's current winner). A record whose
    versions are concurrent keeps all of them until a later write supersedes
    them. ``(last_updated_by, last_updated_rev)`` is unique.
``peer_revisions``
    Highest revision received from (or, for ourselves, written by) each peer:
    the ``since`` map of ``database.get_updates``, kept here rather than found
    by scanning.
``departures``
    ``(uuid, old_key)`` for each key a peer's update moved a record away from
    (a rename), written in the update's transaction and removed when the
    application says it acted on it (moved the file): a crash in between is
    found again at start (:meth:`Replica.departures`).
``meta``
    Schema version, this replica's peer ID and its 64-bit revision counter.

Rows are turned into :class:`Record` objects through a small memo keyed by
the version's dot (``uuid`` and ``(last_updated_by, last_updated_rev)``,
which name one version; its stored bytes, signature and flags are compared
too, since a signature can be added later): the engine asks for the same key several
times while it plans, fetches and lands one file, and parsing the JSON value
and vector clock each time was most of a lookup's cost. The memo holds at
most :data:`RECORD_MEMO` versions, dropping the oldest first. Lookups by key
(:meth:`Store.visible_by_key`, asked for one file's key as it is planned,
fetched and landed) are remembered too, at most :data:`KEY_MEMO` keys; that
memo is emptied by every write to ``records`` and by a rollback, so it never
answers from a state the table is no longer in.

Every change the replica makes for one message or one local write happens in a
single ``BEGIN IMMEDIATE`` transaction (:meth:`Store.transaction`), so a crash
leaves either all of it or none. The in-memory copies of the counter and the
``since`` map are restored if the transaction rolls back. The counter is
written to ``meta`` once, when the outermost transaction commits, however
many revisions it allocated (a scan batch writes thousands of records).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from csembed.database.errors import StoreError
from csembed.database.record import Record
from csembed.database.vector_clock import INT64_MAX, VectorClock, is_peer_id
from csembed.protocol.jsonvalues import format_timestamp, is_strict_int

__all__ = ["KEY_MEMO", "SCHEMA_VERSION", "SYNCHRONOUS_LEVELS", "Store", "share_database_path"]

SCHEMA_VERSION: Final = 1
SYNCHRONOUS_LEVELS: Final = {"off": 0, "normal": 1, "full": 2}
_ITER_BATCH: Final = 256

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    last_updated_by TEXT NOT NULL,
    last_updated_rev INTEGER NOT NULL,
    update_time TEXT NOT NULL,
    update_ns INTEGER NOT NULL,
    vector_clock TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    local_only INTEGER NOT NULL,
    visible INTEGER NOT NULL,
    body BLOB NOT NULL,
    signature BLOB,
    UNIQUE (last_updated_by, last_updated_rev)
);
CREATE INDEX IF NOT EXISTS records_uuid ON records (uuid);
CREATE INDEX IF NOT EXISTS records_visible_key ON records (key) WHERE visible = 1;
CREATE TABLE IF NOT EXISTS peer_revisions (
    peer TEXT PRIMARY KEY,
    revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS departures (
    uuid TEXT NOT NULL,
    old_key TEXT NOT NULL,
    PRIMARY KEY (uuid, old_key)
) WITHOUT ROWID;
"""

_COLUMNS: Final = (
    "key, value, uuid, last_updated_by, last_updated_rev, update_ns, vector_clock,"
    " deleted, body, signature, local_only"
)


def share_database_path(data_dir: str | Path, share_id: str) -> Path:
    """Where a share's database lives in the data directory (one file per share)."""
    if not share_id or not all(c in "0123456789abcdef" for c in share_id):
        raise ValueError("share_id must be lower-case hex")
    return Path(data_dir) / "databases" / f"{share_id}.sqlite3"


RECORD_MEMO: Final = 256
"""Parsed versions remembered by :class:`Store` (a Record is ~1 KB)."""
KEY_MEMO: Final = 512
"""Keys whose winners :class:`Store` remembers (a few hundred bytes each, sharing Records)."""


def _record_from_row(row: tuple[Any, ...]) -> Record:
    key, value, uuid, author, rev, update_ns, clock, deleted, body, signature, local = row
    return Record(
        key=key,
        value=json.loads(value),
        uuid=uuid,
        last_updated_by=author,
        last_updated_rev=rev,
        update_time=update_ns,
        vector_clock=VectorClock.from_text(clock),
        deleted=bool(deleted),
        raw=bytes(body),
        signature=None if signature is None else bytes(signature),
        local_only=bool(local),
    )


class Store:
    """One share's records in one SQLite file (or ``":memory:"``).

    ``peer_id`` is this replica's ID for the share; opening a file created for
    another peer ID raises :class:`StoreError`. ``synchronous``,
    ``checkpoint_pages`` and ``cache_size`` (bytes of SQLite page cache; its
    default when ``None``) come from the board profile's ``storage`` table
    (``db_synchronous``, ``db_checkpoint_pages``, ``db_cache``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        peer_id: str,
        synchronous: str = "normal",
        checkpoint_pages: int = 1000,
        cache_size: int | None = None,
    ) -> None:
        if not is_peer_id(peer_id):
            raise ValueError("peer_id must be 32 lower-case hex digits")
        if synchronous not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_LEVELS)}")
        if not is_strict_int(checkpoint_pages):
            raise TypeError("checkpoint_pages must be an int")
        if checkpoint_pages < 1:
            raise ValueError("checkpoint_pages must be positive")
        self.path = str(path)
        self.peer_id = peer_id
        self._depth = 0
        self._memo: dict[tuple[str, str, int], Record] = {}
        self._key_memo: dict[tuple[str, bool], tuple[Record, ...]] = {}
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        try:
            self._setup(synchronous, checkpoint_pages)
            if cache_size is not None:  # bytes (the board's storage.db_cache)
                self._db.execute(f"PRAGMA cache_size=-{max(1, int(cache_size) // 1024)}")
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot initialise database {self.path}: {exc}") from exc
        except StoreError:
            self._db.close()
            raise

    def _setup(self, synchronous: str, checkpoint_pages: int) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={SYNCHRONOUS_LEVELS[synchronous]}")
        db.execute(f"PRAGMA wal_autocheckpoint={int(checkpoint_pages)}")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
            if not meta:
                db.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    [("schema", SCHEMA_VERSION), ("peer_id", self.peer_id), ("revision", 0)],
                )
                meta = {"schema": SCHEMA_VERSION, "peer_id": self.peer_id, "revision": 0}
            if meta.get("schema") != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema {meta.get('schema')!r}, expected {SCHEMA_VERSION}"
                )
            if meta.get("peer_id") != self.peer_id:
                raise StoreError(
                    f"{self.path} belongs to peer {meta.get('peer_id')!r}, not {self.peer_id}"
                )
            self._revision = int(meta["revision"])
            self._stored_revision = self._revision  # the value in meta
            self._seen: dict[str, int] = dict(
                db.execute("SELECT peer, revision FROM peer_revisions").fetchall()
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Close the file (SQLite checkpoints the WAL when the last user closes)."""
        self._db.close()

    def checkpoint(self) -> None:
        """Fold the WAL into the database now (e.g. when the daemon goes idle)."""
        self._execute("PRAGMA wal_checkpoint(PASSIVE)")

    def pragma(self, name: str) -> Any:
        """Read a PRAGMA value (for tests and diagnostics)."""
        if not name.isidentifier():
            raise ValueError("not a pragma name")
        row = self._execute(f"PRAGMA {name}").fetchone()
        return None if row is None else row[0]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of change; rolled back (caches too) on any exception.

        Nested use is a savepoint: an inner failure undoes only the inner part,
        and nothing is durable until the outermost block commits.
        """
        revision, seen = self._revision, dict(self._seen)
        depth = self._depth
        if depth == 0:
            self._execute("BEGIN IMMEDIATE")
        else:
            self._execute(f"SAVEPOINT level{depth}")
        self._depth = depth + 1
        try:
            yield
        except BaseException:
            self._depth = depth
            self._revision, self._seen = revision, seen
            self._key_memo.clear()
            try:
                if depth == 0:
                    self._db.execute("ROLLBACK")
                else:
                    self._db.execute(f"ROLLBACK TO level{depth}")
                    self._db.execute(f"RELEASE level{depth}")
            except sqlite3.Error:
                pass
            raise
        self._depth = depth
        try:
            if depth == 0 and self._revision != self._stored_revision:
                self._db.execute("UPDATE meta SET value = ? WHERE name = 'revision'",
                                 (self._revision,))
            self._db.execute("COMMIT" if depth == 0 else f"RELEASE level{depth}")
            if depth == 0:
                self._stored_revision = self._revision
        except sqlite3.Error as exc:
            self._revision, self._seen = revision, seen
            self._key_memo.clear()
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise StoreError(f"commit failed on {self.path}: {exc}") from exc

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open."""
        return self._depth > 0

    def _record(self, row: tuple[Any, ...]) -> Record:
        """The Record of ``row``, parsed once per version while it stays in the memo."""
        name = (row[2], row[3], row[4])  # uuid, last_updated_by, last_updated_rev
        memo = self._memo
        record = memo.get(name)
        if (record is None or record.raw != row[8] or record.signature != row[9]
                or record.key != row[0] or record.deleted != bool(row[7])
                or record.local_only != bool(row[10])):
            record = _record_from_row(row)
            if len(memo) >= RECORD_MEMO:
                del memo[next(iter(memo))]
            memo[name] = record
        return record

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.path}: {exc}") from exc

    def _need_transaction(self) -> None:
        if not self._depth:
            raise StoreError("writes must happen inside Store.transaction()")

    # -- revision counter and the since map ----------------------------------

    @property
    def revision(self) -> int:
        """The last revision this replica allocated for a local write (0: none yet)."""
        return self._revision

    def allocate_revision(self) -> int:
        """Increment and return the local revision counter."""
        self._need_transaction()
        if self._revision >= INT64_MAX:
            raise StoreError("the 64-bit revision counter is exhausted")
        self._revision += 1  # written to meta when the transaction commits
        return self._revision

    def raise_revision(self, revision: int) -> None:
        """Make sure later local writes use revisions above ``revision``.

        Used when a peer hands back one of our own writes we no longer know
        about (this database was restored from an older copy).
        """
        self._need_transaction()
        if revision > self._revision:
            self._revision = revision  # written to meta when the transaction commits

    @property
    def seen(self) -> Mapping[str, int]:
        """Highest revision known per peer (read-only view; do not keep across writes)."""
        return self._seen

    def note_seen(self, peer: str, revision: int) -> None:
        """Record that ``peer``'s writes up to ``revision`` are known."""
        self._need_transaction()
        if revision > self._seen.get(peer, 0):
            self._seen[peer] = revision
            self._execute(
                "INSERT INTO peer_revisions (peer, revision) VALUES (?, ?)"
                " ON CONFLICT (peer) DO UPDATE SET revision = excluded.revision",
                (peer, revision),
            )

    # -- departures: keys a peer's update moved a record away from -------------

    def note_departure(self, uuid: str, old_key: str) -> None:
        """Record (with the update, in its transaction) that ``uuid`` left ``old_key``."""
        self._need_transaction()
        self._execute("INSERT OR IGNORE INTO departures (uuid, old_key) VALUES (?, ?)",
                      (uuid, old_key))

    def departures(self) -> list[tuple[str, str]]:
        """Every (uuid, old_key) noted and not yet forgotten."""
        return [(str(u), str(k)) for u, k in
                self._execute("SELECT uuid, old_key FROM departures").fetchall()]

    def forget_departures(self, items: Iterable[tuple[str, str]]) -> None:
        """The application acted on these departures."""
        self._need_transaction()
        self._db.executemany("DELETE FROM departures WHERE uuid = ? AND old_key = ?",
                             list(items))

    # -- versions --------------------------------------------------------------

    def has_dot(self, author: str, revision: int) -> bool:
        """Whether the version written by ``author`` at ``revision`` is stored."""
        row = self._execute(
            "SELECT 1 FROM records WHERE last_updated_by = ? AND last_updated_rev = ?",
            (author, revision),
        ).fetchone()
        return row is not None

    def versions(self, uuid: str) -> list[Record]:
        """Every stored version of the record ``uuid``, in dot order."""
        rows = self._execute(
            f"SELECT {_COLUMNS} FROM records WHERE uuid = ?"
            " ORDER BY last_updated_by, last_updated_rev",
            (uuid,),
        ).fetchall()
        return [self._record(row) for row in rows]

    def has_uuid(self, uuid: str) -> bool:
        """Whether any version of ``uuid`` is stored."""
        return self._execute("SELECT 1 FROM records WHERE uuid = ?", (uuid,)).fetchone() is not None

    def insert(
        self, record: Record, *, visible: bool = False, update_time_text: str | None = None
    ) -> None:
        """Store a new version (``update_time_text``: its canonical text, if already made)."""
        self._need_transaction()
        self._key_memo.clear()
        self._execute(
            "INSERT INTO records (uuid, key, value, last_updated_by, last_updated_rev,"
            " update_time, update_ns, vector_clock, deleted, local_only, visible, body,"
            " signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.uuid,
                record.key,
                json.dumps(record.value, ensure_ascii=True, separators=(",", ":")),
                record.last_updated_by,
                record.last_updated_rev,
                update_time_text or format_timestamp(record.update_time),
                record.update_time,
                record.vector_clock.to_text(),
                int(record.deleted),
                int(record.local_only),
                int(visible),
                record.raw,
                record.signature,
            ),
        )

    def delete(self, dots: Iterable[tuple[str, int]]) -> None:
        """Remove the versions named by their dots (superseded or dropped)."""
        self._need_transaction()
        self._key_memo.clear()
        rows = list(dots)
        if not rows:
            return
        try:
            self._db.executemany(
                "DELETE FROM records WHERE last_updated_by = ? AND last_updated_rev = ?", rows
            )
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.path}: {exc}") from exc

    def set_visible(self, uuid: str, dot: tuple[str, int]) -> None:
        """Mark the version ``dot`` as the winner of ``uuid`` and no other."""
        self._need_transaction()
        self._key_memo.clear()
        self._execute(
            "UPDATE records SET visible = (last_updated_by = ? AND last_updated_rev = ?)"
            " WHERE uuid = ?",
            (dot[0], dot[1], uuid),
        )

    def set_signature(self, dot: tuple[str, int], signature: bytes) -> None:
        """Keep a read-write signature made for ``dot`` so it is made only once."""
        self._need_transaction()
        self._key_memo.clear()
        self._execute(
            "UPDATE records SET signature = ? WHERE last_updated_by = ? AND last_updated_rev = ?",
            (signature, dot[0], dot[1]),
        )

    def visible(self, uuid: str) -> Record | None:
        """The current winner of ``uuid`` (a tombstone if it was deleted)."""
        row = self._execute(
            f"SELECT {_COLUMNS} FROM records WHERE uuid = ? AND visible = 1", (uuid,)
        ).fetchone()
        return None if row is None else self._record(row)

    def visible_by_key(self, key: str, *, live_only: bool = True) -> list[Record]:
        """Winners whose key is ``key`` (several when two records claim one key)."""
        memo = self._key_memo
        found = memo.get((key, live_only))
        if found is None:
            sql = f"SELECT {_COLUMNS} FROM records WHERE key = ? AND visible = 1"
            if live_only:
                sql += " AND deleted = 0"
            rows = self._execute(sql + " ORDER BY uuid", (key,)).fetchall()
            found = tuple(self._record(row) for row in rows)
            if len(memo) >= KEY_MEMO:
                del memo[next(iter(memo))]
            memo[(key, live_only)] = found
        return list(found)

    def pending(self, author: str, after: int, limit: int) -> list[Record]:
        """Shareable versions by ``author`` with revision above ``after``, oldest first."""
        rows = self._execute(
            f"SELECT {_COLUMNS} FROM records WHERE last_updated_by = ?"
            " AND last_updated_rev > ? AND local_only = 0"
            " ORDER BY last_updated_rev LIMIT ?",
            (author, after, limit),
        ).fetchall()
        return [self._record(row) for row in rows]

    def iter_visible(self, *, include_deleted: bool = False) -> Iterator[Record]:
        """Every record's winner, streamed in batches (never the whole table at once)."""
        return self._iter_where("visible = 1" if include_deleted else "visible = 1 AND deleted = 0")

    def iter_versions(self, *, include_local: bool = True) -> Iterator[Record]:
        """Every stored version, streamed in batches."""
        return self._iter_where("1" if include_local else "local_only = 0")

    def _iter_where(self, where: str) -> Iterator[Record]:
        """Rows matching the SQL condition ``where``, in id order, ``_ITER_BATCH`` at a time."""
        last = 0
        while True:
            rows = self._execute(
                f"SELECT id, {_COLUMNS} FROM records WHERE id > ? AND {where}"
                " ORDER BY id LIMIT ?",
                (last, _ITER_BATCH),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield self._record(row[1:])
            last = rows[-1][0]

    def count(self) -> int:
        """Number of stored versions."""
        return int(self._execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def check(self) -> list[str]:
        """Consistency problems found (an empty list when the store is sound).

        Checks SQLite's own integrity, that the counter is at least every
        revision we wrote, that ``peer_revisions`` is at least every stored
        shareable revision, and that every record has exactly one winner.
        """
        problems: list[str] = []
        integrity = self._execute("PRAGMA integrity_check").fetchall()
        if integrity != [("ok",)]:
            problems.append(f"integrity_check: {integrity[:3]}")
        own = self._execute(
            "SELECT MAX(last_updated_rev) FROM records WHERE last_updated_by = ?",
            (self.peer_id,),
        ).fetchone()[0]
        if own is not None and own > self._revision:
            problems.append(f"revision counter {self._revision} is below own write {own}")
        stored = self._execute(
            "SELECT last_updated_by, MAX(last_updated_rev) FROM records"
            " WHERE local_only = 0 GROUP BY last_updated_by"
        ).fetchall()
        for author, top in stored:
            if self._seen.get(author, 0) < top:
                problems.append(f"peer_revisions[{author}] is below stored revision {top}")
        on_disk = dict(self._execute("SELECT peer, revision FROM peer_revisions").fetchall())
        if on_disk != self._seen:
            problems.append("peer_revisions differs from its in-memory copy")
        winners = self._execute(
            "SELECT uuid, SUM(visible) FROM records GROUP BY uuid HAVING SUM(visible) != 1"
        ).fetchall()
        for uuid, count in winners[:10]:
            problems.append(f"record {uuid} has {count} winners")
        return problems

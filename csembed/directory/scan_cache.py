"""What the scanner last saw on disk: the persistent scan cache.

Theory of operation
-------------------
One row per file or directory of the local copy, keyed by record key:
kind, size, ``st_mtime_ns``, ``st_ctime_ns``, inode, permission bits and,
for files, the SHA-256. It is the scanner's memory between scans -- a path
whose stat signature matches its row is not hashed again, which makes a
rescan of an unchanged tree cost one ``lstat`` per entry -- and it is how the
rest of the engine finds content by hash (deduplication, serving
``directory.get``) and checks that a file did not change unseen before
replacing it.

The table lives in the share's local SQLite state (:mod:`.localdb`) and is
mirrored in memory (a dict; a row is ~200 bytes, so 100,000 files cost
~20 MB, well inside even the piano's budget). Every writer -- the scanner's
commit after the engine stored a batch of changes, the file store after it
renamed a download into place -- goes through this class, so the memory
view and the table never disagree. Each write bumps :attr:`ScanCache.version`
and stamps the key, so a scan pass that listed the disk before the file
store replaced or removed a file can tell (:meth:`ScanCache.touched_since`)
and leave that key to the next pass instead of reporting a stale view.
Writes join the connection's current transaction; :meth:`ScanCache.commit`
ends it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from csembed.directory.records import FileValue
from csembed.protocol.jsonvalues import format_timestamp


@dataclass(frozen=True, slots=True)
class CachedEntry:
    """One path as last recorded: stat signature plus content hash (files)."""

    key: str
    is_dir: bool
    size: int  #: 0 for directories
    mtime_ns: int
    ctime_ns: int
    inode: int
    mode: int  #: permission bits (``S_IMODE``)
    sha256: str | None  #: ``None`` for directories

    @property
    def signature(self) -> tuple[bool, int, int, int, int, int]:
        """What must be unchanged for the content to be trusted without hashing.

        Directories compare inode and mode only: their times move with every
        change inside them and mean nothing to sync.
        """
        if self.is_dir:
            return (True, 0, 0, 0, self.inode, self.mode)
        return (False, self.size, self.mtime_ns, self.ctime_ns, self.inode, self.mode)

    def value(self) -> FileValue:
        """The record value this entry stands for."""
        if self.is_dir:
            return FileValue.for_directory(self.mode)
        assert self.sha256 is not None
        return FileValue(size=self.size, sha256=self.sha256,
                         mtime=format_timestamp(self.mtime_ns), unix_mode=self.mode)


class ScanCache:
    """The ``files`` table of a share's local state, mirrored in memory."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        conn.execute("CREATE TABLE IF NOT EXISTS files (key TEXT PRIMARY KEY, "
                     "is_dir INTEGER NOT NULL, size INTEGER NOT NULL, "
                     "mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, "
                     "inode INTEGER NOT NULL, mode INTEGER NOT NULL, sha256 TEXT)")
        conn.execute("CREATE INDEX IF NOT EXISTS files_sha256 ON files (sha256)")
        conn.commit()
        self._rows: dict[str, CachedEntry] = {}
        self._by_hash: dict[str, set[str]] = {}
        self.version = 0  #: bumped by every write
        self._stamps: dict[str, int] = {}
        for row in conn.execute("SELECT key, is_dir, size, mtime_ns, ctime_ns, inode, mode, "
                                "sha256 FROM files"):
            self._remember(CachedEntry(row[0], bool(row[1]), *row[2:]))

    def _remember(self, entry: CachedEntry) -> None:
        self._forget(entry.key)
        self._rows[entry.key] = entry
        if entry.sha256 is not None:
            self._by_hash.setdefault(entry.sha256, set()).add(entry.key)

    def _forget(self, key: str) -> CachedEntry | None:
        old = self._rows.pop(key, None)
        if old is not None and old.sha256 is not None:
            keys = self._by_hash.get(old.sha256)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_hash[old.sha256]
        return old

    # -- reading -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def get(self, key: str) -> CachedEntry | None:
        """The entry recorded for ``key``."""
        return self._rows.get(key)

    def entries(self) -> dict[str, CachedEntry]:
        """A snapshot of every entry, by key."""
        return dict(self._rows)

    def find_sha256(self, sha256: str) -> list[CachedEntry]:
        """Files recorded with this content, sorted by key."""
        keys = self._by_hash.get(sha256.lower(), ())
        return [self._rows[k] for k in sorted(keys)]

    def hashes(self) -> Iterator[str]:
        """Every distinct content digest recorded (for the presence filter)."""
        return iter(list(self._by_hash))

    def file_count(self) -> int:
        """Number of distinct contents recorded."""
        return len(self._by_hash)

    def touched_since(self, version: int) -> set[str]:
        """Keys written after :attr:`version` had the given value."""
        if version >= self.version:
            return set()
        return {k for k, v in self._stamps.items() if v > version}

    def total_file_bytes(self) -> int:
        """Sum of the sizes of all recorded files (the share's footprint)."""
        return sum(e.size for e in self._rows.values() if not e.is_dir)

    # -- writing (joins the current transaction) ---------------------------------

    def put(self, entry: CachedEntry) -> None:
        """Record ``entry`` (replacing any previous row for its key)."""
        self._conn.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (entry.key, int(entry.is_dir), entry.size, entry.mtime_ns,
                            entry.ctime_ns, entry.inode, entry.mode, entry.sha256))
        self._remember(entry)
        self._stamp(entry.key)

    def delete(self, key: str) -> None:
        """Forget ``key``."""
        if self._forget(key) is not None:
            self._conn.execute("DELETE FROM files WHERE key = ?", (key,))
        self._stamp(key)

    def move_tree(self, old: str, new: str) -> None:
        """Re-key ``old`` and everything under it to ``new`` (a folder was renamed)."""
        prefix = old + "/" if old != "/" else "/"
        moving = [e for k, e in self._rows.items() if k == old or k.startswith(prefix)]
        for entry in moving:
            self.delete(entry.key)
        for entry in moving:
            key = new + entry.key[len(old):]
            self.put(CachedEntry(key, entry.is_dir, entry.size, entry.mtime_ns, entry.ctime_ns,
                                 entry.inode, entry.mode, entry.sha256))

    def _stamp(self, key: str) -> None:
        self.version += 1
        self._stamps[key] = self.version

    def commit(self) -> None:
        """End the current transaction."""
        self._conn.commit()

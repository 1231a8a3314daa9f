"""The archive: old versions of files that peers replaced or deleted.

Theory of operation
-------------------
directory.md ("Archival") lets a peer keep copies of files changed or deleted
by others, and recommends tracking their SHA-256 so they can serve for
deduplication later. The archive is a folder in the share's state directory
(``<data>/shares/<share>/archive/``, never inside the share) plus the
``archive`` table of the local state (:mod:`.localdb`): key, SHA-256, size,
mtime and the time it was archived.

Getting a file in costs no copy whenever the archive is on the same
filesystem as the share:

* a file about to be **replaced** is hard-linked into the archive; the
  rename that puts the new version in place then leaves the old inode alive
  only in the archive. Because the link is made from the very inode on
  disk, even a local write racing the replacement ends up archived, not lost;
* a **deleted** file is renamed (moved) into the archive.

Across filesystems, or where hard links are not supported (FAT), the bytes
are copied in ``io_buffer`` chunks instead.

The archive is capped (board ``storage.archive_size``): after each addition
the oldest entries are evicted until the total fits. A file larger than the
cap is not archived at all; a cap of 0 disables the archive. On start,
rows without a file and files without a row (a crash mid-way) are removed.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from csembed.directory.errors import DirectoryError

_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True)
class ArchivedFile:
    """One archived version."""

    id: int
    key: str  #: the record key the file had
    sha256: str
    size: int
    mtime_ns: int
    archived_at: float  #: seconds since the epoch
    name: str  #: file name inside the archive folder


class Archive:
    """A size-capped store of replaced and deleted files."""

    def __init__(self, directory: Path | str, conn: sqlite3.Connection, cap_bytes: int, *,
                 io_buffer: int = 1 << 20, clock: Callable[[], float] = time.time) -> None:
        if cap_bytes < 0:
            raise DirectoryError(f"archive cap cannot be negative: {cap_bytes}")
        self.directory = Path(directory)
        self.cap_bytes = cap_bytes
        self._conn = conn
        self._clock = clock
        self._io_buffer = io_buffer
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn.execute("CREATE TABLE IF NOT EXISTS archive (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "key TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, "
                     "mtime_ns INTEGER NOT NULL, archived_at REAL NOT NULL, name TEXT)")
        conn.execute("CREATE INDEX IF NOT EXISTS archive_sha256 ON archive (sha256)")
        conn.commit()
        self._reconcile()

    # -- reading -------------------------------------------------------------------

    def entries(self) -> list[ArchivedFile]:
        """Every archived file, oldest first."""
        rows = self._conn.execute("SELECT id, key, sha256, size, mtime_ns, archived_at, name "
                                  "FROM archive WHERE name IS NOT NULL ORDER BY id")
        return [ArchivedFile(*row) for row in rows]

    def total_bytes(self) -> int:
        """Bytes held by the archive."""
        row = self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM archive "
                                 "WHERE name IS NOT NULL").fetchone()
        return int(row[0])

    def find_sha256(self, sha256: str) -> list[ArchivedFile]:
        """Archived files with this content, newest first."""
        rows = self._conn.execute("SELECT id, key, sha256, size, mtime_ns, archived_at, name "
                                  "FROM archive WHERE sha256 = ? AND name IS NOT NULL "
                                  "ORDER BY id DESC", (sha256.lower(),))
        return [ArchivedFile(*row) for row in rows]

    def open(self, item: ArchivedFile) -> int:
        """A read descriptor of an archived file (close it yourself)."""
        return os.open(self.directory / item.name, _READ_FLAGS)

    # -- adding --------------------------------------------------------------------

    def take(self, dir_fd: int, name: str, *, key: str, sha256: str, size: int,
             mtime_ns: int, remove: bool) -> ArchivedFile | None:
        """Archive the file ``name`` in directory ``dir_fd``.

        ``remove`` moves it out of the share (a deletion); otherwise it stays
        in place (it is about to be replaced). Returns ``None`` when the
        archive is disabled or the file is larger than the cap; the file is
        then left where it is and the caller decides.
        """
        if self.cap_bytes == 0 or size > self.cap_bytes:
            return None
        cursor = self._conn.execute(
            "INSERT INTO archive (key, sha256, size, mtime_ns, archived_at, name) "
            "VALUES (?, ?, ?, ?, ?, NULL)", (key, sha256.lower(), size, mtime_ns, self._clock()))
        item_id = int(cursor.lastrowid or 0)
        target = f"{item_id:010d}"
        try:
            self._bring_in(dir_fd, name, target, remove)
        except BaseException:
            self._conn.execute("DELETE FROM archive WHERE id = ?", (item_id,))
            self._conn.commit()
            raise
        self._conn.execute("UPDATE archive SET name = ? WHERE id = ?", (target, item_id))
        self._conn.commit()
        self._evict()
        row = self._conn.execute("SELECT id, key, sha256, size, mtime_ns, archived_at, name "
                                 "FROM archive WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else ArchivedFile(*row)

    def _bring_in(self, dir_fd: int, name: str, target: str, remove: bool) -> None:
        archive_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                if remove:
                    os.rename(name, target, src_dir_fd=dir_fd, dst_dir_fd=archive_fd)
                else:
                    os.link(name, target, src_dir_fd=dir_fd, dst_dir_fd=archive_fd,
                            follow_symlinks=False)
                return
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
            self._copy(dir_fd, name, archive_fd, target)
            if remove:
                os.unlink(name, dir_fd=dir_fd)
        finally:
            os.close(archive_fd)

    def _copy(self, src_dir: int, name: str, dst_dir: int, target: str) -> None:
        src = os.open(name, _READ_FLAGS, dir_fd=src_dir)
        try:
            dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600, dir_fd=dst_dir)
            try:
                while chunk := os.read(src, self._io_buffer):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(dst, view):]
            except BaseException:
                os.close(dst)
                os.unlink(target, dir_fd=dst_dir)
                raise
            os.close(dst)
        finally:
            os.close(src)

    # -- upkeep --------------------------------------------------------------------

    def _evict(self) -> None:
        """Drop the oldest entries until the archive fits its cap."""
        total = self.total_bytes()
        for item in self.entries():
            if total <= self.cap_bytes:
                break
            self._remove(item)
            total -= item.size
        self._conn.commit()

    def _remove(self, item: ArchivedFile) -> None:
        try:
            os.unlink(self.directory / item.name)
        except FileNotFoundError:
            pass
        self._conn.execute("DELETE FROM archive WHERE id = ?", (item.id,))

    def remove(self, item: ArchivedFile) -> None:
        """Drop one archived file (e.g. restored by the user)."""
        self._remove(item)
        self._conn.commit()

    def _reconcile(self) -> None:
        on_disk = {p.name for p in self.directory.iterdir()}
        known = set()
        for item_id, name in self._conn.execute("SELECT id, name FROM archive").fetchall():
            if name is None or name not in on_disk:
                self._conn.execute("DELETE FROM archive WHERE id = ?", (item_id,))
            else:
                known.add(name)
        for name in on_disk - known:
            os.unlink(self.directory / name)
        self._conn.commit()
        self._evict()

"""One file being written into the share: temp file, running SHA-256, verify, place.

Theory of operation
-------------------
:meth:`FileStore.begin <csembed.directory.filestore.FileStore.begin>` makes a
:class:`Download`. Content goes to a temp file beside its target (same
filesystem, so the final rename is atomic) named deterministically
(:func:`temp_name`), so a later download of the same content finds the
partial again and resumes it: its bytes are hashed once from disk and
:attr:`Download.offset` says where to go on. A temp is never written
through a name someone else made: a new one is created with ``O_CREAT |
O_EXCL | O_NOFOLLOW``, and an existing one is resumed only if it is a
regular file with one link, owned by us -- anything else there (a symbolic
link, a hard link to another file, a folder) loses its name (nothing it
points at is touched) and the download starts afresh.

Chunks are gathered into ``io_buffer``-sized writes (a piece that fills
the buffer is written from where it is, not copied into it); a peer sending
more than the record's size is refused at once. :meth:`Download.verify` checks
size and SHA-256 and sets mode (permission bits only) and mtime;
:meth:`Download.commit` then syncs the temp, checks that the file it
replaces is still what the scan cache recorded (else
:class:`LocalChangeConflict`, nothing touched), archives the old version,
renames and syncs the folder. ``ENOSPC``/``EDQUOT`` removes the temp and
raises ``StorageLimitError("disk_full", ...)``. While open, a download holds
a space reservation in its store (released by :meth:`Download.close`).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from csembed import digests
from csembed.directory.archive import ArchivedFile
from csembed.directory.errors import (
    DirectoryError,
    PathError,
    StorageLimitError,
    VerificationError,
)
from csembed.directory.paths import Location
from csembed.directory.record_keys import TEMP_SUFFIX
from csembed.directory.records import FileValue
from csembed.directory.scan_cache import CachedEntry

if TYPE_CHECKING:
    from csembed.directory.filestore import FileStore

_DEFAULT_MODE = 0o644
_SAFE_BITS = 0o777  # never apply set-uid, set-gid or sticky bits received from a peer
_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class CommitResult:
    """A file put in place."""

    key: str
    entry: CachedEntry  #: what is now recorded for it
    archived: ArchivedFile | None  #: the replaced version, if archived


def temp_name(disk_name: str, sha256: str, name_max: int) -> str:
    """The deterministic temp name for downloading ``sha256`` into ``disk_name``."""
    tail = f".{sha256[:16]}{TEMP_SUFFIX}"
    name = f".{disk_name}{tail}"
    if len(name.encode("utf-8")) <= name_max:
        return name
    marker = "~" + digests.sha256(disk_name.encode("utf-8")).hexdigest()[:8]
    room = name_max - 1 - len(marker) - len(tail)
    head = disk_name.encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return f".{head}{marker}{tail}"


def cached_entry(key: str, info: os.stat_result, sha256: str | None) -> CachedEntry:
    """The scan-cache entry for a file or folder we just wrote."""
    is_dir = stat.S_ISDIR(info.st_mode)
    return CachedEntry(key, is_dir, 0 if is_dir else info.st_size, info.st_mtime_ns,
                       info.st_ctime_ns, info.st_ino, stat.S_IMODE(info.st_mode), sha256)


class Download:
    """One file being written: append chunks, then :meth:`commit`.

    Created by :meth:`FileStore.begin`. :attr:`offset` is where the next
    byte goes (non-zero after a resume); request the rest with ``range``.
    """

    def __init__(self, store: FileStore, location: Location, value: FileValue) -> None:
        assert value.size is not None and value.sha256 is not None
        self.store = store
        self.location = location
        self.key = location.key
        self.value = value
        self.size: int = value.size
        self.sha256: str = value.sha256
        self.temp = temp_name(location.name, value.sha256, store.mapper.rules.name_max)
        self._hasher = digests.sha256()
        self._pending = bytearray()
        self._fd = -1
        self.offset = 0
        self._open()

    def _open(self) -> None:
        # Temp first: almost every download is new, so creating is tried before
        # looking for a partial (one system call, no failed open, in the usual case).
        self._fd = self._create(exists_ok=True)
        if self._fd >= 0:
            return
        self._fd = self._open_existing()
        if self._fd < 0:
            self._fd = self._create()
            return
        info = os.fstat(self._fd)
        if info.st_size > self.size:
            os.ftruncate(self._fd, 0)
        # Resume: hash what is already there, once.
        buffer_size = self.store.io_buffer
        os.lseek(self._fd, 0, os.SEEK_SET)
        while chunk := os.read(self._fd, buffer_size):
            self._hasher.update(chunk)
            self.offset += len(chunk)
        os.lseek(self._fd, self.offset, os.SEEK_SET)

    def _open_existing(self) -> int:
        """The partial temp to resume, or -1 (none; anything unsafe there is unlinked)."""
        dir_fd = self.location.dir_fd
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(self.temp, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            return -1
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EACCES,
                                 errno.EPERM, errno.ETXTBSY):
                raise
            self._discard_temp_name()  # a symbolic link, folder or special file
            return -1
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_uid == os.geteuid():
            return fd
        os.close(fd)
        self._discard_temp_name()  # a hard link to another file, or not ours
        return -1

    def _discard_temp_name(self) -> None:
        try:
            os.unlink(self.temp, dir_fd=self.location.dir_fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise PathError(self.key, "a folder is in the way of the temp file") from None

    def _create(self, *, exists_ok: bool = False) -> int:
        """A new temp file; if its name is taken: -1 with ``exists_ok``, else PathError."""
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            return os.open(self.temp, flags, 0o600, dir_fd=self.location.dir_fd)
        except FileExistsError:
            if exists_ok:
                return -1
            raise PathError(self.key, "temp file appeared while it was being made") from None
        except OSError as exc:
            self._disk_full(exc)
            raise

    @property
    def complete(self) -> bool:
        """All bytes received."""
        return self.offset + len(self._pending) >= self.size and self.offset <= self.size

    @property
    def remaining(self) -> int:
        """Bytes still to receive."""
        return self.size - self.offset - len(self._pending)

    def restart(self) -> None:
        """Throw away a resumed partial and start from byte 0."""
        self._pending.clear()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hasher = digests.sha256()
        self.offset = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append the next chunk (refuses bytes beyond the record's size)."""
        if self._fd < 0:
            raise DirectoryError(f"download of {self.key!r} is closed")
        if len(data) > self.remaining:
            raise VerificationError(f"{self.key!r}: peer sent more than the record's "
                                    f"{self.size} bytes")
        self._hasher.update(data)
        if len(self._pending) + len(data) < self.store.io_buffer:
            self._pending += data
        else:  # a large piece goes to the file from where it is, not through _pending
            self._drain()
            self._write_all(data)

    def _write_all(self, data: bytes | bytearray | memoryview) -> None:
        written = 0
        with memoryview(data) as view:
            try:
                while written < len(view):
                    count = os.write(self._fd, view[written:])
                    written += count
                    self.offset += count
            except OSError as exc:
                self._pending += view[written:]  # kept for a retry (abort keeps partials)
                self._disk_full(exc)
                raise

    def _drain(self) -> None:
        view = memoryview(self._pending)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self.offset += written
        except OSError as exc:
            view.release()
            self._disk_full(exc)
            raise
        view.release()
        self._pending.clear()

    def _disk_full(self, exc: OSError) -> None:
        if exc.errno in _FULL:
            self.abort(keep_partial=False)
            raise StorageLimitError("disk_full", f"no space left writing {self.key!r}") \
                from None

    def commit(self, key: str | None = None) -> CommitResult:
        """Verify, then put the file in place at its key (or at ``key``).

        Raises :class:`VerificationError` (temp removed), or
        :class:`LocalChangeConflict` (nothing changed, temp kept verified).
        """
        self.verify()
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._disk_full(exc)
            raise
        store = self.store
        if key is None or key == self.key:
            return self._put_in_place(self.location)
        with store.mapper.locate(key, create_dirs=True, allocate=True) as target:
            store._record_created(target)
            return self._put_in_place(target)

    def verify(self) -> None:
        """Check size and SHA-256 and set mode and mtime; the data is not yet durable.

        The first half of :meth:`commit`, for :meth:`FileStore.commit_batch`.
        Raises :class:`VerificationError` (temp removed).
        """
        if self._fd < 0:
            raise DirectoryError(f"download of {self.key!r} is closed")
        self._drain()
        if self.offset != self.size:
            raise DirectoryError(f"{self.key!r}: only {self.offset} of {self.size} bytes "
                                 f"received")
        if self._hasher.hexdigest() != self.sha256:
            self.abort(keep_partial=False)
            raise VerificationError(f"{self.key!r}: content does not match sha256 "
                                    f"{self.sha256}")
        mode = self.value.unix_mode if self.value.unix_mode is not None else _DEFAULT_MODE
        try:
            os.fchmod(self._fd, mode & _SAFE_BITS)
            mtime = self.value.mtime_ns
            if mtime is not None:
                os.utime(self._fd, ns=(mtime, mtime))
        except OSError as exc:
            self._disk_full(exc)
            raise

    def _put_in_place(self, target: Location, *, batched: bool = False) -> CommitResult:
        """Archive the old version, rename, record; ``batched`` leaves the folder
        sync, the cache commit and closing to :meth:`FileStore.commit_batch`."""
        store = self.store
        old = store._check_unchanged(target)
        archived = None
        if old is not None and store.archive is not None:
            recorded = store.cache.get(target.key)
            assert recorded is not None and recorded.sha256 is not None
            archived = store.archive.take(target.dir_fd, target.name, key=target.key,
                                          sha256=recorded.sha256, size=recorded.size,
                                          mtime_ns=recorded.mtime_ns, remove=False)
        os.rename(self.temp, target.name, src_dir_fd=self.location.dir_fd,
                  dst_dir_fd=target.dir_fd)
        info = os.fstat(self._fd)
        entry = cached_entry(target.key, info, self.sha256)
        store.cache.put(entry)
        if batched:
            return CommitResult(key=target.key, entry=entry, archived=archived)
        store.cache.commit()
        store._sync_dir(target.dir_fd)
        self.close()
        return CommitResult(key=target.key, entry=entry, archived=archived)

    @property
    def fd(self) -> int:
        """The temp file's descriptor (-1 once closed)."""
        return self._fd

    def abort(self, keep_partial: bool = True) -> None:
        """Stop; keep the partial for a later resume unless told otherwise."""
        if self._fd >= 0 and keep_partial:
            try:
                self._drain()
            except (OSError, DirectoryError):
                keep_partial = False
        if not keep_partial and self.location.dir_fd >= 0:
            try:
                os.unlink(self.temp, dir_fd=self.location.dir_fd)
            except FileNotFoundError:
                pass
        self.close()

    def close(self) -> None:
        """Release descriptors and the space reservation (the temp file stays as it is)."""
        self.store._release(self)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.location.close()

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort(keep_partial=True)

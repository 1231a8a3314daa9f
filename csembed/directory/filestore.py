"""Writing files into the share: downloads, local copies, deletions, conflicts.

Theory of operation
-------------------
Nothing here ever leaves a half-written file where a good one was.

**Downloads** (:meth:`FileStore.begin` -> :class:`Download`). Content is
written to a temp file in the target's own folder (same filesystem, so the
final rename is atomic), named deterministically from the disk name and the
wanted SHA-256::

    .<name>.<first 16 hex digits of sha256>.!clearsky

so after a crash or a dropped connection :meth:`FileStore.begin` finds the
partial again: its bytes are hashed once from disk, :attr:`Download.offset`
says how much is there, and the engine asks the peer for ``range:
[offset, size - offset]``. (Names too long for ``NAME_MAX`` are shortened and
given a hash of the full name.) Every chunk updates a running SHA-256; a
peer sending more bytes than the record's size is refused at once.

:meth:`Download.commit` then, in order: checks size and SHA-256 (a mismatch
removes the temp -- :class:`VerificationError`, old file untouched); sets
the record's mode (permission bits only: set-uid, set-gid and sticky bits
from a peer are dropped) and mtime; ``fsync``\\ s the temp; checks that the
file it replaces is still exactly what the scan cache recorded (size, mtime
and inode) -- if not, the user changed it unseen, and it raises
:class:`LocalChangeConflict` without touching anything, keeping the verified
temp so the engine can resolve the conflict (:meth:`Download.commit` again
after the local file was moved aside with :meth:`FileStore.rename_local`,
or into another key, e.g. :meth:`FileStore.conflict_key`); archives the old
version (:mod:`.archive`); renames the temp over the target; and syncs the
folder. The new file is recorded in the scan cache, so the scanner does not
report our own write as a local change.

**Batches** (:meth:`FileStore.commit_batch`): two syncs per small file
(the temp, then its folder) dominate when many small files arrive, so the
engine may instead :meth:`Download.verify` each finished download and hand
a batch of them over at once. The order that makes a crash harmless stays
the same, only the syncs are shared (:mod:`.disk_sync`): the data of every
temp is made durable; then each file is checked against the scan cache,
archived and renamed; then the touched folders are synced (under ``flash``
deferred to :meth:`FileStore.flush`); and only then is the scan cache
committed, once for the batch. A kill or power cut anywhere in between
leaves each target either its old file or the new verified one, and
unrenamed temps that a later :meth:`FileStore.begin` finds complete.

Write policy (board ``storage.write_policy``): chunks are gathered into
``io_buffer``-sized writes in both modes. ``normal`` syncs the folder after
every rename; ``flash`` defers folder syncs to :meth:`FileStore.flush`
(called by the engine after a batch) to spare the flash. The file itself is
always synced before its rename: a rename that survives a power cut while
its data does not would leave an empty file in place of a good one.

**Limits** (:mod:`.storage_limits`) are checked before a byte is written,
counting what the other open downloads have reserved. Running out of space
anyway (``ENOSPC``/``EDQUOT``) removes the temp and raises
``StorageLimitError("disk_full", ...)``; the old file stays.

**Temp files** are never written through a name someone else made
(:mod:`.download`).

**Deduplication** (:meth:`FileStore.copy_local`): content already present
elsewhere in the share (scan cache) or in the archive is copied through the
same temp-verify-rename path instead of being downloaded.

**Adopting** (:meth:`FileStore.adopt`): a file that differs from its cache
row yet hashes to the content its record wants is recorded as in place --
a landing whose cache commit a crash cut off -- rather than taken for an edit.

**Conflicts**: :meth:`FileStore.conflict_key` names the loser
``name.CONFLICT.xxxxxxxx.ext`` with eight alphanumerics from the injected RNG.

Each file store belongs to one share and one thread (the engine's). A
download itself (temp file, running hash, verify, place) is
:class:`~.download.Download`.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import string
from collections.abc import Callable, Sequence

from csembed import digests
from csembed.directory.archive import Archive, ArchivedFile
from csembed.directory.disk_sync import DeferredDirSyncs, sync_dirs, sync_files
from csembed.directory.download import (
    _SAFE_BITS,
    CommitResult,
    Download,
    cached_entry,
    temp_name,
)
from csembed.directory.errors import (
    DirectoryError,
    LocalChangeConflict,
    PathError,
    VerificationError,
)
from csembed.directory.paths import Location, PathMapper
from csembed.directory.record_keys import TEMP_SUFFIX, join_key, parent_key, split_key
from csembed.directory.records import FileValue
from csembed.directory.scan_cache import CachedEntry, ScanCache
from csembed.directory.storage_limits import SpaceBook, StoreLimits

__all__ = ["CommitResult", "Download", "FileStore", "StoreLimits", "conflict_name",
           "temp_name"]

_CONFLICT_ALPHABET = string.ascii_letters + string.digits
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def conflict_name(name: str, rng: random.Random) -> str:
    """``foo.txt`` -> ``foo.CONFLICT.xxxxxxxx.txt`` (directory.md "Conflicts")."""
    tag = "".join(rng.choice(_CONFLICT_ALPHABET) for _ in range(8))
    stem, dot, ext = name.rpartition(".")
    if dot and stem:
        return f"{stem}.CONFLICT.{tag}.{ext}"
    return f"{name}.CONFLICT.{tag}"


def _matches(info: os.stat_result, entry: CachedEntry) -> bool:
    """Same file as recorded: regular, and size, mtime and inode unchanged."""
    return (stat.S_ISREG(info.st_mode) and info.st_size == entry.size
            and info.st_mtime_ns == entry.mtime_ns and info.st_ino == entry.inode)


class FileStore:
    """Puts content into one share's local copy, and takes it out.

    ``usage`` returns the bytes all shares hold (for the quota); by default
    this share's scan cache total. ``rng`` names conflict copies.
    """

    def __init__(self, mapper: PathMapper, cache: ScanCache, *,
                 archive: Archive | None = None, limits: StoreLimits | None = None,
                 io_buffer: int = 1 << 20, write_policy: str = "normal",
                 rng: random.Random | None = None,
                 usage: Callable[[], int] | None = None) -> None:
        if write_policy not in ("normal", "flash"):
            raise DirectoryError(f"write_policy must be normal or flash, got {write_policy!r}")
        self.mapper = mapper
        self.cache = cache
        self.archive = archive
        self.io_buffer = io_buffer
        self.write_policy = write_policy
        self.rng = rng if rng is not None else random.Random()
        self.space = SpaceBook(limits if limits is not None else StoreLimits(),
                               usage if usage is not None else cache.total_file_bytes, usage)
        self._deferred = DeferredDirSyncs()

    @property
    def limits(self) -> StoreLimits:
        """The storage limits this store obeys (may be replaced, e.g. by a new quota)."""
        return self.space.limits

    @limits.setter
    def limits(self, limits: StoreLimits) -> None:
        self.space.limits = limits

    @property
    def reserved(self) -> tuple[int, int]:
        """Bytes reserved by open downloads: (towards the quota, of disk space)."""
        return self.space.reserved

    def _reserve(self, download: Download, quota: int, disk: int) -> None:
        self.space.reserve(id(download), quota, disk)

    def _release(self, download: Download) -> None:
        self.space.release(id(download))

    def check_limits(self, size: int, *, replacing: int = 0, dir_fd: int | None = None,
                     already: int = 0) -> None:
        """Raise :class:`StorageLimitError` if writing ``size`` bytes would break a limit
        (see :meth:`SpaceBook.check`)."""
        self.space.check(size, replacing=replacing, dir_fd=dir_fd, already=already)

    # -- downloads -----------------------------------------------------------------

    def begin(self, key: str, value: FileValue) -> Download:
        """Start (or resume) writing ``value``'s content to ``key``."""
        if value.is_directory:
            raise DirectoryError(f"{key!r} is a directory record; use make_directory()")
        assert value.size is not None and value.sha256 is not None
        location = self.mapper.open_location(key, create_dirs=True, allocate=True)
        try:
            self._record_created(location)
            old = self.cache.get(key)
            replacing = old.size if old is not None and not old.is_dir else 0
            self.check_limits(value.size, replacing=replacing, dir_fd=location.dir_fd)
            download = Download(self, location, value)
        except BaseException:
            location.close()
            raise
        self._reserve(download, value.size - replacing, download.remaining)
        return download

    def _record_created(self, loc: Location) -> None:
        """Folders made on the way to a file are ours: keep the scanner from reporting them."""
        for key in loc.created_dirs:
            fd = self.mapper.open_dir(key)
            try:
                self.cache.put(cached_entry(key, os.fstat(fd), None))
            finally:
                os.close(fd)
        if loc.created_dirs:
            self.cache.commit()

    def _check_unchanged(self, location: Location,
                         expect_file: bool = True) -> os.stat_result | None:
        """The target's status, if it is still what the cache recorded; else a conflict."""
        key = location.key
        info = location.lstat()
        recorded = self.cache.get(key)
        if info is None:
            return None
        if recorded is None:
            raise LocalChangeConflict(key, "a local file exists that was never recorded")
        if recorded.is_dir or stat.S_ISDIR(info.st_mode):
            if recorded.is_dir and stat.S_ISDIR(info.st_mode) and not expect_file:
                return info
            raise LocalChangeConflict(key, "a directory is in the way")
        if not _matches(info, recorded):
            raise LocalChangeConflict(key, "size, mtime or inode differ from the record")
        return info

    def changed_unseen(self, key: str) -> bool:
        """Whether the file at ``key`` differs from what the scan cache recorded
        (the user changed it and no scan has reported it yet). Absent counts as
        unchanged."""
        try:
            with self.mapper.locate(key) as location:
                self._check_unchanged(location)
        except LocalChangeConflict:
            return True
        except (DirectoryError, OSError):
            return False
        return False

    def adopt(self, key: str, value: FileValue) -> bool:
        """Whether the file at ``key``, though not what the scan cache recorded,
        already holds ``value``'s content; if so it is recorded now.

        The content hash tells the truth where the cache cannot: a download
        renamed into place just before a crash, its cache row not yet
        committed, is the record's version -- not a local edit to keep aside.
        Only a regular file of the right size that differs from its cache row
        is hashed (one ``io_buffer`` at a time).
        """
        if value.is_directory or value.sha256 is None or value.size is None:
            return False
        try:
            with self.mapper.locate(key) as loc:
                info = loc.lstat()
                recorded = self.cache.get(key)
                if info is None or not stat.S_ISREG(info.st_mode) \
                        or info.st_size != value.size \
                        or (recorded is not None and _matches(info, recorded)):
                    return False
                fd = os.open(loc.name, _READ_FLAGS, dir_fd=loc.dir_fd)
                try:
                    digest = digests.sha256()
                    while chunk := os.read(fd, self.io_buffer):
                        digest.update(chunk)
                    after = os.fstat(fd)
                finally:
                    os.close(fd)
        except (DirectoryError, OSError):
            return False
        if digest.hexdigest() != value.sha256 or (after.st_size, after.st_mtime_ns,
                                                   after.st_ino) != (info.st_size,
                                                                     info.st_mtime_ns,
                                                                     info.st_ino):
            return False
        self.cache.put(cached_entry(key, after, value.sha256))
        self.cache.commit()
        return True

    def _sync_dir(self, dir_fd: int) -> None:
        if self.write_policy == "normal":
            os.fsync(dir_fd)
        else:
            self._deferred.add(dir_fd)

    def flush(self) -> None:
        """Sync folders whose renames were deferred (``flash`` write policy)."""
        self._deferred.flush()

    def commit_batch(self, downloads: Sequence[Download]
                     ) -> list[CommitResult | DirectoryError | OSError]:
        """Put many verified downloads (:meth:`Download.verify`) in place, with few syncs.

        Same guarantees as :meth:`Download.commit` at each download's own
        key, but the syncs are shared: the data of every temp is made durable
        first (one ``syncfs`` per filesystem, or one ``fsync`` per file where
        ``syncfs`` is missing), then all are renamed, then the touched
        folders are synced (``normal``: now, one ``syncfs`` or one ``fsync``
        per folder; ``flash``: at :meth:`flush`), and only then the scan
        cache is committed, once. Returns one result per download, in order:
        its :class:`CommitResult`, or the error that kept it out
        (:class:`LocalChangeConflict`: temp kept verified and open; an
        ``OSError`` or :class:`DirectoryError`: partial kept). A download
        that failed stays open for the caller to retry or abort; the others
        are closed.
        """
        results: list[CommitResult | DirectoryError | OSError] = []
        durable = sync_files([d.fd for d in downloads])
        placed: list[Download] = []
        for download, error in zip(downloads, durable, strict=True):
            if error is not None:
                results.append(error)
                continue
            try:
                results.append(download._put_in_place(download.location, batched=True))
                placed.append(download)
            except (DirectoryError, OSError) as exc:
                results.append(exc)
        try:
            if placed:
                dirs = [d.location.dir_fd for d in placed]
                if self.write_policy == "normal":
                    sync_dirs(dirs)
                else:
                    for fd in dirs:
                        self._sync_dir(fd)
        finally:
            self.cache.commit()
            for download in placed:
                download.close()
        return results

    # -- local copies (deduplication) ----------------------------------------------

    def copy_local(self, key: str, value: FileValue) -> CommitResult | None:
        """Fill ``key`` from identical content already held locally, if any.

        Sources are files in the share with that SHA-256 (checked against
        the scan cache before use) and archived versions. Returns ``None``
        when none is usable; the engine then downloads.
        """
        if value.is_directory or value.sha256 is None:
            return None
        sources: list[CachedEntry | ArchivedFile] = [
            e for e in self.cache.find_sha256(value.sha256) if e.key != key]
        if self.archive is not None:
            sources += self.archive.find_sha256(value.sha256)
        for source in sources:
            fd = (self._open_recorded(source) if isinstance(source, CachedEntry)
                  else self._open_archived(source))
            if fd is None:
                continue
            try:
                download = self.begin(key, value)
                try:
                    download.restart()
                    while chunk := os.read(fd, self.io_buffer):
                        download.write(chunk)
                    return download.commit()
                except VerificationError:
                    continue
                finally:
                    download.close()
            finally:
                os.close(fd)
        return None

    def _open_recorded(self, entry: CachedEntry) -> int | None:
        try:
            with self.mapper.locate(entry.key) as loc:
                fd = os.open(loc.name, _READ_FLAGS, dir_fd=loc.dir_fd)
        except (OSError, PathError):
            return None
        if not _matches(os.fstat(fd), entry):
            os.close(fd)
            return None
        return fd

    def _open_archived(self, item: ArchivedFile) -> int | None:
        assert self.archive is not None
        try:
            return self.archive.open(item)
        except OSError:
            return None

    # -- other changes from peers --------------------------------------------------

    def make_directory(self, key: str, value: FileValue) -> None:
        """Create directory ``key`` (and its parents) with the record's mode."""
        if not value.is_directory:
            raise DirectoryError(f"{key!r} is a file record; use begin()")
        if not self.mapper.local_parts(key):
            return  # the local root exists already
        with self.mapper.locate(key, create_dirs=True, allocate=True) as loc:
            self._record_created(loc)
            # Owner rwx is kept so we can fill the folder; the cache records the
            # mode as set, so the scanner sees no change to report.
            mode = _SAFE_BITS & (value.unix_mode if value.unix_mode is not None else 0o755)
            try:
                os.mkdir(loc.name, 0o700, dir_fd=loc.dir_fd)
            except FileExistsError:
                info = loc.lstat()
                if info is None or not stat.S_ISDIR(info.st_mode):
                    raise LocalChangeConflict(key, "a file is in the way of the directory") \
                        from None
            fd = os.open(loc.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=loc.dir_fd)
            try:
                os.fchmod(fd, mode | 0o700)
                info = os.fstat(fd)
            finally:
                os.close(fd)
            self.cache.put(cached_entry(key, info, None))
            self.cache.commit()
            self._sync_dir(loc.dir_fd)

    def delete(self, key: str) -> bool:
        """Remove ``key`` because a peer deleted it; archive the old file.

        Returns False when the entry was already gone or is a directory that
        still holds files we do not sync. Raises :class:`LocalChangeConflict`
        if the file changed locally since it was recorded.
        """
        with self.mapper.locate(key) as loc:
            info = self._check_unchanged(loc, expect_file=False)
            if info is None:
                self.cache.delete(key)
                self.cache.commit()
                return False
            if stat.S_ISDIR(info.st_mode):
                try:
                    os.rmdir(loc.name, dir_fd=loc.dir_fd)
                except OSError as exc:
                    if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        return False
                    raise
            else:
                recorded = self.cache.get(key)
                assert recorded is not None and recorded.sha256 is not None
                archived = None
                if self.archive is not None:
                    archived = self.archive.take(loc.dir_fd, loc.name, key=key,
                                                 sha256=recorded.sha256, size=recorded.size,
                                                 mtime_ns=recorded.mtime_ns, remove=True)
                if archived is None:
                    os.unlink(loc.name, dir_fd=loc.dir_fd)
            self.cache.delete(key)
            self.mapper.names.forget(key)
            self.cache.commit()
            self._sync_dir(loc.dir_fd)
            return True

    def rename_local(self, old_key: str, new_key: str) -> CachedEntry:
        """Move a recorded local file or folder to ``new_key``.

        For a conflict's losing local copy, or to follow a peer's rename
        (records under a moved folder are re-keyed with it, so their own
        moves then find them already in place). The entry must still match
        its record. Returns the new cache entry.
        """
        with self.mapper.locate(old_key) as src:
            if self._check_unchanged(src, expect_file=False) is None:
                raise DirectoryError(f"{old_key!r} is not present to be renamed")
            recorded = self.cache.get(old_key)
            assert recorded is not None
            with self.mapper.locate(new_key, create_dirs=True, allocate=True) as dst:
                self._record_created(dst)
                if dst.lstat() is not None:
                    raise LocalChangeConflict(new_key, "the new name is already taken")
                os.rename(src.name, dst.name, src_dir_fd=src.dir_fd, dst_dir_fd=dst.dir_fd)
                info = dst.lstat()
                assert info is not None
                if recorded.is_dir:
                    self.cache.move_tree(old_key, new_key)
                    self.mapper.names.move_tree(old_key, new_key)
                else:
                    self.cache.delete(old_key)
                    self.mapper.names.forget(old_key)
                entry = cached_entry(new_key, info, recorded.sha256)
                self.cache.put(entry)
                self.cache.commit()
                self._sync_dir(dst.dir_fd)
                self._sync_dir(src.dir_fd)
        return entry

    def conflict_key(self, key: str) -> str:
        """A free ``name.CONFLICT.xxxxxxxx.ext`` key beside ``key``."""
        split_key(key)
        parent, name = parent_key(key), key.rsplit("/", 1)[1]
        for _ in range(100):
            candidate = join_key(parent, conflict_name(name, self.rng))
            if candidate in self.cache:
                continue
            try:
                with self.mapper.locate(candidate) as loc:
                    if loc.lstat() is not None:
                        continue
            except FileNotFoundError:
                pass
            return candidate
        raise DirectoryError(f"no free conflict name for {key!r}")

    def remove_stale_temp(self, path: str, *, older_than_ns: int) -> bool:
        """Remove our temp file ``path`` (as in ``ScanResult.temp_files``) if old enough.

        The engine calls this for temps that belong to no live download.
        """
        folder, name = parent_key(path), path.rsplit("/", 1)[1]
        if not name.endswith(TEMP_SUFFIX):
            raise PathError(path, "not one of our temp files")
        try:
            fd = self.mapper.open_dir(folder)
        except FileNotFoundError:
            return False
        try:
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if not stat.S_ISREG(info.st_mode) or info.st_mtime_ns >= older_than_ns:
                return False
            os.unlink(name, dir_fd=fd)
            return True
        finally:
            os.close(fd)

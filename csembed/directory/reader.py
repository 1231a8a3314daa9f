"""Serving content by SHA-256 (``directory.get`` / ``directory.data``).

Theory of operation
-------------------
Peers ask for content by hash, never by path (directory.md "Retrieving
Files"). :meth:`ContentReader.open` looks the hash up in the scan cache
(files in the share) and then in the archive, opens the first candidate
without following links, and checks with ``fstat`` that it is still exactly
the file that was hashed (size, mtime, inode); a file changed since its scan
is skipped -- the scanner will pick the change up -- and if nothing usable
is left the answer is ``None`` (the engine sends ``directory.not_present``).

:meth:`ContentSource.chunks` then streams a ``range`` (``[start, count]`` as
in the draft; the whole file by default) in chunks of the caller's size,
never holding more than one chunk. Files are not locked while they are read
(the draft asks not to), so before each chunk the descriptor is checked
again; if the file changed, :class:`ContentChanged` stops the stream (the
engine sends ``directory.get_error``; the receiver's SHA-256 check would
have caught it anyway). A range outside the file is a :class:`DirectoryError`
raised before any byte is read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from csembed.directory.archive import Archive
from csembed.directory.errors import ContentChanged, DirectoryError, PathError
from csembed.directory.paths import PathMapper
from csembed.directory.scan_cache import ScanCache
from csembed.protocol.jsonvalues import is_strict_int

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class ContentSource:
    """An open, verified file holding the wanted content. Close it when done."""

    def __init__(self, fd: int, sha256: str, origin: str) -> None:
        self._fd = fd
        info = os.fstat(fd)
        self.sha256 = sha256
        self.origin = origin  #: the key it was found at, or ``archive:<name>``
        self.size = info.st_size
        self._signature = (info.st_size, info.st_mtime_ns, info.st_ino)

    def _check(self) -> None:
        info = os.fstat(self._fd)
        if (info.st_size, info.st_mtime_ns, info.st_ino) != self._signature:
            raise ContentChanged(f"{self.origin} changed while being sent")

    def chunks(self, start: int = 0, count: int | None = None,
               chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """Yield bytes ``start .. start + count`` in pieces of at most ``chunk_size``."""
        if count is None:
            count = self.size - start
        if (not is_strict_int(start) or not is_strict_int(count) or start < 0 or count < 0
                or start + count > self.size):
            raise DirectoryError(f"range [{start!r}, {count!r}] is outside "
                                 f"{self.size}-byte content {self.sha256}")
        if chunk_size < 1:
            raise DirectoryError(f"chunk size must be positive, got {chunk_size}")
        offset, end = start, start + count
        while offset < end:
            self._check()
            data = os.pread(self._fd, min(chunk_size, end - offset), offset)
            if not data:
                raise ContentChanged(f"{self.origin} shrank while being sent")
            offset += len(data)
            yield data

    def close(self) -> None:
        """Release the descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ContentSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ContentReader:
    """Finds local content by SHA-256 for serving to peers."""

    def __init__(self, mapper: PathMapper, cache: ScanCache,
                 archive: Archive | None = None) -> None:
        self.mapper = mapper
        self.cache = cache
        self.archive = archive

    def has(self, sha256: str) -> bool:
        """Whether content with this hash is recorded (unverified; for presence)."""
        return bool(self.cache.find_sha256(sha256))

    def open(self, sha256: str) -> ContentSource | None:
        """A verified source for ``sha256``, or ``None`` if none is usable."""
        for entry in self.cache.find_sha256(sha256):
            try:
                with self.mapper.locate(entry.key) as loc:
                    fd = os.open(loc.name, _READ_FLAGS, dir_fd=loc.dir_fd)
            except (OSError, PathError):
                continue
            info = os.fstat(fd)
            if (stat.S_ISREG(info.st_mode) and info.st_size == entry.size
                    and info.st_mtime_ns == entry.mtime_ns and info.st_ino == entry.inode):
                return ContentSource(fd, entry.sha256 or sha256, entry.key)
            os.close(fd)
        if self.archive is not None:
            for item in self.archive.find_sha256(sha256):
                try:
                    fd = self.archive.open(item)
                except OSError:
                    continue
                if os.fstat(fd).st_size == item.size:
                    return ContentSource(fd, item.sha256, f"archive:{item.name}")
                os.close(fd)
        return None

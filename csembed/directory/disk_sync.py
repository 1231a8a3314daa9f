"""Making written files and renames durable, with as few syncs as possible.

Theory of operation
-------------------
A file's data must be on disk before the rename that puts it in place (or a
power cut could leave an empty file where a good one was), and a rename is
only durable once its folder is synced. Done per file that is two syncs,
which dominate when many small files land. So a batch shares them:

* :func:`sync_files` makes the data of many open files durable with one
  ``syncfs`` per filesystem (it flushes every file written there), or, where
  libc has no ``syncfs``, one ``fsync`` per file;
* :func:`sync_dirs` does the same for the folders renames went into: one
  ``syncfs``, or one ``fsync`` per distinct folder;
* :class:`DeferredDirSyncs` holds folders whose sync the ``flash`` write
  policy postpones, and syncs them at :meth:`~DeferredDirSyncs.flush` (or
  when :data:`DIRTY_DIRS_MAX` are waiting), to spare the flash.

``syncfs`` also flushes other programs' pending writes on that filesystem:
cheap on a quiet device, slower beside a large copy. Python 3.11 lacks
``os.syncfs``; :func:`load_syncfs` finds libc's (:mod:`csembed.libc_calls`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from csembed import libc_calls

__all__ = ["DIRTY_DIRS_MAX", "DeferredDirSyncs", "load_syncfs", "sync_dirs", "sync_files",
           "syncfs_all"]

DIRTY_DIRS_MAX = 32  #: deferred folder syncs (descriptors held) before they are flushed


def load_syncfs() -> Callable[[int], int] | None:
    """libc ``syncfs(fd)`` (Python 3.11 has no ``os.syncfs``), if present."""
    return libc_calls.function("syncfs", "int", "int")


_syncfs: Callable[[int], int] | None = load_syncfs()


def syncfs_all(fds: Sequence[int]) -> bool:
    """``syncfs`` each filesystem holding one of ``fds``; False if unavailable or failed.

    One ``syncfs`` costs about one ``fsync`` but covers every file written
    on that filesystem. (Callers fall back to ``fsync`` on False.)
    """
    if _syncfs is None:
        return False
    devices: dict[int, int] = {}
    for fd in fds:
        devices.setdefault(os.fstat(fd).st_dev, fd)
    for fd in devices.values():
        if _syncfs(fd) != 0:
            return False
    return True


def sync_files(fds: Sequence[int]) -> list[OSError | None]:
    """Make the data of ``fds`` durable; per descriptor, the error if that failed."""
    if len(fds) > 1 and syncfs_all(fds):
        return [None] * len(fds)
    errors: list[OSError | None] = []
    for fd in fds:
        try:
            os.fsync(fd)
            errors.append(None)
        except OSError as exc:
            errors.append(exc)
    return errors


def sync_dirs(dir_fds: Sequence[int]) -> None:
    """Make renames in these folders durable: one ``syncfs``, or one ``fsync`` per folder."""
    unique: dict[tuple[int, int], int] = {}
    for fd in dir_fds:
        info = os.fstat(fd)
        unique.setdefault((info.st_dev, info.st_ino), fd)
    if len(unique) > 1 and syncfs_all(list(unique.values())):
        return
    for fd in unique.values():
        os.fsync(fd)


class DeferredDirSyncs:
    """Folders whose renames wait for one later sync (write policy ``flash``)."""

    def __init__(self) -> None:
        self._dirty: dict[tuple[int, int], int] = {}  #: (st_dev, st_ino) -> our dup'ed fd

    def __len__(self) -> int:
        return len(self._dirty)

    def add(self, dir_fd: int) -> None:
        """Remember folder ``dir_fd`` (a copy of the descriptor is kept) for :meth:`flush`."""
        info = os.fstat(dir_fd)
        ident = (info.st_dev, info.st_ino)
        if ident not in self._dirty:
            self._dirty[ident] = os.dup(dir_fd)
        if len(self._dirty) >= DIRTY_DIRS_MAX:
            self.flush()

    def flush(self) -> None:
        """Sync every folder waiting, and let go of their descriptors."""
        dirty, self._dirty = self._dirty, {}
        for fd in dirty.values():
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

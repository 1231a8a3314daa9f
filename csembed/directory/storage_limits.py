"""Storage limits: what a download may add before a byte of it is written.

Theory of operation
-------------------
Three limits, each named in the error it raises (:class:`StorageLimitError`):
``max_file_size``; ``quota``, the bytes all shares may hold (from an injected
usage function); and ``free_space_reserve``, the free space that must stay
on the target filesystem after the write.

A download checked now still has its bytes to write, so every open download
*reserves* what it will add -- towards the quota its size less the file it
replaces, of the disk the bytes still to write -- until it is closed, and
:meth:`SpaceBook.check` counts the reservations of the others. Two
downloads started together therefore cannot both fit a space only one fits.
Books made with the same usage function (the daemon gives one to all its
shares) share their quota reservations through one ledger.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from csembed.board_profile import StorageLimits
from csembed.directory.errors import StorageLimitError

__all__ = ["SpaceBook", "StoreLimits"]


@dataclass(frozen=True)
class StoreLimits:
    """Storage limits in bytes; 0 means no limit (reserve: none kept)."""

    max_file_size: int = 0
    quota: int = 0
    free_space_reserve: int = 0

    @classmethod
    def from_board(cls, storage: StorageLimits) -> StoreLimits:
        """The limits of a board profile's ``[storage]`` table."""
        return cls(storage.max_file_size, storage.quota, storage.free_space_reserve)


class _Ledger(dict[int, int]):
    """Quota bytes reserved by open downloads (reservation id -> bytes)."""


_LEDGERS: weakref.WeakValueDictionary[Callable[[], int], _Ledger] = \
    weakref.WeakValueDictionary()


def _quota_ledger(usage: Callable[[], int] | None) -> _Ledger:
    """The reservation ledger of the books sharing ``usage`` (a new one if ``None``)."""
    if usage is None:
        return _Ledger()
    ledger = _LEDGERS.get(usage)
    if ledger is None:
        ledger = _LEDGERS[usage] = _Ledger()
    return ledger


class SpaceBook:
    """One store's limits, and the bytes its open downloads have reserved.

    ``usage`` returns the bytes all shares hold; ``shared_usage`` is that
    function when it is shared between stores (its ledger is shared too),
    ``None`` when it is this store's own.
    """

    def __init__(self, limits: StoreLimits, usage: Callable[[], int],
                 shared_usage: Callable[[], int] | None) -> None:
        self.limits = limits
        self._usage = usage
        self._quota_reserved = _quota_ledger(shared_usage)
        self._disk_reserved: dict[int, int] = {}  #: reservation id -> bytes still to write

    @property
    def reserved(self) -> tuple[int, int]:
        """Bytes reserved by open downloads: (towards the quota, of disk space)."""
        return sum(self._quota_reserved.values()), sum(self._disk_reserved.values())

    def reserve(self, ident: int, quota: int, disk: int) -> None:
        """Reserve for the download ``ident`` (e.g. its ``id()``) until :meth:`release`."""
        self._quota_reserved[ident] = max(0, quota)
        self._disk_reserved[ident] = max(0, disk)

    def release(self, ident: int) -> None:
        """The download ``ident`` is closed: its reservation goes."""
        self._quota_reserved.pop(ident, None)
        self._disk_reserved.pop(ident, None)

    def check(self, size: int, *, replacing: int = 0, dir_fd: int | None = None,
              already: int = 0) -> None:
        """Raise :class:`StorageLimitError` if writing ``size`` bytes would break a limit.

        ``replacing`` is the size of the file it replaces, ``already`` the
        bytes of it already on disk (a resumed partial), ``dir_fd`` the
        folder it goes to (for free space).
        """
        limits = self.limits
        if limits.max_file_size and size > limits.max_file_size:
            raise StorageLimitError("max_file_size", f"file of {size} bytes is larger than "
                                    f"the limit of {limits.max_file_size} bytes")
        quota_reserved, disk_reserved = self.reserved
        if limits.quota:
            after = self._usage() + quota_reserved - replacing + size
            if after > limits.quota:
                held = f" ({quota_reserved} reserved by downloads)" if quota_reserved else ""
                raise StorageLimitError("quota", f"shares would hold {after} bytes{held}, "
                                        f"over the quota of {limits.quota} bytes")
        if dir_fd is not None:
            vfs = os.fstatvfs(dir_fd)
            free = vfs.f_bavail * vfs.f_frsize - disk_reserved
            needed = max(0, size - already)
            if free - needed < limits.free_space_reserve:
                raise StorageLimitError(
                    "free_space_reserve", f"writing needs {needed} bytes; {free} bytes are "
                    f"free (less downloads under way) and {limits.free_space_reserve} must "
                    f"stay free")

"""Phase 1 of a scan: list a share's tree with ``lstat`` only.

:func:`list_tree` walks the whole tree from the identity-checked root
descriptor (:meth:`csembed.directory.paths.PathMapper.open_root`), one
directory descriptor at a time (``O_NOFOLLOW``, ``openat``), never following
a link, and returns a :class:`Listing`: an :class:`Entry` per path with its
stat signature and its disk names, our own temp files, and the keys that are
*unknown* -- a folder that could not be read, or one not crossed (another
filesystem, too deep). Nothing under an unknown key may be taken as deleted.

Left out, each with a ``notice(key, reason)``: names that cannot be keys
(not UTF-8, a backslash...), symbolic links and special files (a link's
target may lie outside the share, and no peer could reproduce it
faithfully), and folders on another filesystem (a removable disk mounted
inside the share must not make its files look deleted when it goes away).
Ignored paths (:mod:`.selection`) are left out silently, and an ignored
folder is not entered. The walk reads no content: hashing is phase 2, in
:mod:`csembed.directory.scanner`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from csembed.directory.errors import PathError
from csembed.directory.paths import PathMapper
from csembed.directory.record_keys import MAX_DEPTH, is_temp_name, join_key, parent_key
from csembed.directory.scan_cache import CachedEntry
from csembed.directory.selection import Selection

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Entry:
    """One listed path: its stat signature and where it is on disk."""

    key: str
    is_dir: bool
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    mode: int
    disk_parent: tuple[str, ...]  #: disk names from the local root to the parent
    disk_name: str

    @property
    def signature(self) -> tuple[bool, int, int, int, int, int]:
        """Same meaning as :attr:`CachedEntry.signature`."""
        if self.is_dir:
            return (True, 0, 0, 0, self.inode, self.mode)
        return (False, self.size, self.mtime_ns, self.ctime_ns, self.inode, self.mode)

    @property
    def changed_at(self) -> float:
        """Seconds since the epoch of the last change to the entry itself."""
        return max(self.mtime_ns, self.ctime_ns) / 1e9

    def cached(self, sha256: str | None) -> CachedEntry:
        """The cache row recording this entry with its content hash."""
        return CachedEntry(self.key, self.is_dir, 0 if self.is_dir else self.size,
                           self.mtime_ns, self.ctime_ns, self.inode, self.mode, sha256)


def entry_of(key: str, info: os.stat_result, disk_parent: tuple[str, ...],
           disk_name: str) -> Entry:
    return Entry(key, stat.S_ISDIR(info.st_mode), info.st_size, info.st_mtime_ns,
                 info.st_ctime_ns, info.st_ino, stat.S_IMODE(info.st_mode),
                 disk_parent, disk_name)


@dataclass
class Listing:
    """One walk's result. The caller owns ``root_fd`` (and closes it)."""

    root_fd: int
    entries: dict[str, Entry] = field(default_factory=dict)
    temp: list[str] = field(default_factory=list)  #: keys of our temp files
    unknown: set[str] = field(default_factory=set)

    def is_unknown(self, key: str) -> bool:
        """Whether ``key`` is, or lies under, a folder the walk could not see into."""
        if not self.unknown:
            return False
        probe = key
        while True:
            if probe in self.unknown:
                return True
            if probe == "/":
                return False
            probe = parent_key(probe)


def list_tree(mapper: PathMapper, selection: Selection,
              notice: Callable[[str, str], None]) -> Listing:
    """Walk the share under ``mapper``'s root (raises :class:`ShareUnavailable`
    for a missing or replaced root)."""
    listing = Listing(mapper.open_root())
    try:
        info = os.fstat(listing.root_fd)
        root_key = mapper.root_key()
        listing.entries[root_key] = entry_of(root_key, info, (), "")
        _Walk(mapper, selection, notice, listing, info.st_dev).walk(
            listing.root_fd, root_key, (), 1)
    except BaseException:
        os.close(listing.root_fd)
        raise
    return listing


class _Walk:
    def __init__(self, mapper: PathMapper, selection: Selection,
                 notice: Callable[[str, str], None], listing: Listing, root_dev: int) -> None:
        self.mapper = mapper
        self.selection = selection
        self.notice = notice
        self.listing = listing
        self.root_dev = root_dev

    def walk(self, fd: int, key: str, disk: tuple[str, ...], depth: int) -> None:
        listing = self.listing
        subdirs: list[tuple[str, str]] = []
        try:
            entries = list(os.scandir(fd))
        except OSError as exc:
            listing.unknown.add(key)
            self.notice(key, f"folder cannot be read: {exc.strerror}")
            return
        for item in entries:
            name = item.name
            if is_temp_name(name):
                listing.temp.append(join_key(key, name))
                continue
            try:
                child = self.mapper.child_key(key, name)
            except PathError as exc:
                self.notice(exc.key, exc.reason)
                continue
            try:
                info = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                listing.unknown.add(child)
                self.notice(child, f"cannot stat: {exc.strerror}")
                continue
            mode = info.st_mode
            if stat.S_ISLNK(mode):
                self.notice(child, "symbolic link not followed")
                continue
            is_dir = stat.S_ISDIR(mode)
            if not is_dir and not stat.S_ISREG(mode):
                self.notice(child, "special file (device, pipe or socket)")
                continue
            if self.selection.ignore.excludes_entry(child, is_dir):
                continue
            if is_dir and info.st_dev != self.root_dev:
                listing.unknown.add(child)
                self.notice(child, "another filesystem is mounted here; "
                          "not crossed")
                continue
            listing.entries[child] = entry_of(child, info, disk, name)
            if is_dir:
                subdirs.append((name, child))
        for name, child in subdirs:
            if depth >= MAX_DEPTH:
                listing.unknown.add(child)
                self.notice(child, f"deeper than {MAX_DEPTH} levels")
                continue
            try:
                sub = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                del listing.entries[child]
                continue
            except OSError as exc:
                listing.unknown.add(child)
                self.notice(child, f"folder cannot be opened: {exc.strerror}")
                continue
            try:
                self.walk(sub, child, disk + (name,), depth + 1)
            finally:
                os.close(sub)

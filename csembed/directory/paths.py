"""Mapping record keys to places on disk, safely.

Theory of operation
-------------------
A record key comes from a peer and is checked first (:mod:`.record_keys`).

Disk access never resolves a path string. :class:`ShareRoot` opens the share
root once (checking it is still the directory, on the same device, that the
share was created on) and every lookup walks down from that descriptor one
component at a time with ``os.open(name, O_DIRECTORY | O_NOFOLLOW,
dir_fd=parent)``. A component that is a symbolic link fails with ``ELOOP``
and becomes a :class:`PathError`; the final name is then used only through
its parent's descriptor (``dir_fd=``, ``O_NOFOLLOW``,
``follow_symlinks=False``). So a symlink planted anywhere in the share, even
between our check and our use, cannot make us read or write outside the
share: there is no check-then-use window on path resolution because nothing
is resolved by path. What remains is the ordinary race with the user: a
directory we hold open may be renamed meanwhile, and we then write into it
where it now is -- the user's own doing, and never through a link.

Which name a key gets on disk, where the filesystem cannot store it as it
is, is :mod:`.disk_names`' rule; every disk name that differs from its key
is kept in the :class:`NameTable`, so the way back is exact.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from csembed.directory.disk_names import NameRules, lexists, natural_name, probe_rules
from csembed.directory.errors import PathError, ShareUnavailable
from csembed.directory.localdb import get_meta, set_meta
from csembed.directory.record_keys import check_name, join_key, parent_key, split_key

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_VARIANTS = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


class ShareRoot:
    """The share's top directory: its path, recorded identity and name rules.

    The identity (``st_dev``, ``st_ino``) is recorded when the share is
    created (:meth:`initialize`). :meth:`open_fd` refuses a root that is
    missing, not a directory, or a different directory (an unmounted mount
    point, a replaced removable device): :class:`ShareUnavailable`, so the
    engine goes to an error state instead of seeing every file deleted.
    """

    def __init__(self, path: Path, device: int, inode: int, rules: NameRules) -> None:
        self.path = Path(path)
        self.device = device
        self.inode = inode
        self.rules = rules

    @classmethod
    def initialize(cls, path: Path | str, conn: sqlite3.Connection,
                   rules: NameRules | None = None) -> ShareRoot:
        """Record ``path`` as a new share's root; probe its name rules unless given."""
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise ShareUnavailable(f"share root {str(path)!r} cannot be opened: "
                                   f"{exc.strerror}") from None
        try:
            info = os.fstat(fd)
            rules = rules if rules is not None else probe_rules(fd)
        finally:
            os.close(fd)
        set_meta(conn, "root_identity", f"{info.st_dev}:{info.st_ino}")
        set_meta(conn, "name_rules", rules.encode())
        conn.commit()
        return cls(path, info.st_dev, info.st_ino, rules)

    @classmethod
    def load(cls, path: Path | str, conn: sqlite3.Connection) -> ShareRoot:
        """The root recorded by :meth:`initialize` (``ShareUnavailable`` if never recorded)."""
        identity = get_meta(conn, "root_identity")
        rules = get_meta(conn, "name_rules")
        if identity is None or rules is None:
            raise ShareUnavailable(f"share root {str(path)!r} was never initialised")
        device, inode = (int(x) for x in identity.split(":"))
        return cls(Path(path), device, inode, NameRules.decode(rules))

    def open_fd(self) -> int:
        """Open the root directory after checking it is still the share's root."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ShareUnavailable(f"share root {str(self.path)!r} is missing "
                                   f"(not mounted?)") from None
        except OSError as exc:
            raise ShareUnavailable(f"share root {str(self.path)!r} cannot be opened: "
                                   f"{exc.strerror}") from None
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (self.device, self.inode):
            os.close(fd)
            raise ShareUnavailable(
                f"share root {str(self.path)!r} is not the directory the share was created on "
                f"(device/inode {info.st_dev}/{info.st_ino}, expected "
                f"{self.device}/{self.inode}): unmounted or replaced")
        return fd


class NameTable:
    """Disk names that differ from their record names, per parent directory key.

    Kept in memory and mirrored to the ``names`` table of the local state.
    Each change is committed at once: a name is reserved before a file may
    be created under it, so the mapping must never be lost in a rollback.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        conn.execute("CREATE TABLE IF NOT EXISTS names (parent TEXT NOT NULL, "
                     "disk_name TEXT NOT NULL, key_name TEXT NOT NULL, "
                     "PRIMARY KEY (parent, disk_name), UNIQUE (parent, key_name))")
        conn.commit()
        self._by_disk: dict[tuple[str, str], str] = {}
        self._by_key: dict[tuple[str, str], str] = {}
        for parent, disk, name in conn.execute("SELECT parent, disk_name, key_name FROM names"):
            self._by_disk[(parent, disk)] = name
            self._by_key[(parent, name)] = disk

    def __len__(self) -> int:
        return len(self._by_disk)

    def key_name(self, parent: str, disk_name: str) -> str | None:
        """The record name stored under ``disk_name`` in ``parent``, if mapped."""
        return self._by_disk.get((parent, disk_name))

    def disk_name(self, parent: str, key_name: str) -> str | None:
        """The disk name used for ``key_name`` in ``parent``, if mapped."""
        return self._by_key.get((parent, key_name))

    def add(self, parent: str, disk_name: str, key_name: str) -> None:
        """Record that ``key_name`` is stored as ``disk_name`` in ``parent``."""
        self.forget(join_key(parent, key_name))
        self._conn.execute("INSERT OR REPLACE INTO names VALUES (?, ?, ?)",
                           (parent, disk_name, key_name))
        self._conn.commit()
        self._by_disk[(parent, disk_name)] = key_name
        self._by_key[(parent, key_name)] = disk_name

    def forget(self, key: str) -> None:
        """Drop the mapping of ``key`` itself (not of its children)."""
        parent, name = parent_key(key), key.rsplit("/", 1)[1]
        disk = self._by_key.pop((parent, name), None)
        if disk is not None:
            del self._by_disk[(parent, disk)]
            self._conn.execute("DELETE FROM names WHERE parent = ? AND key_name = ?",
                               (parent, name))
            self._conn.commit()

    def forget_tree(self, key: str) -> None:
        """Drop the mappings of ``key`` and of everything under it."""
        self.forget(key)
        for parent, name in [p for p in self._by_key if _under(p[0], key)]:
            self.forget(join_key(parent, name))

    def move_tree(self, old: str, new: str) -> None:
        """A directory was renamed: re-home the mappings of everything under it."""
        moved = [(p, n, d) for (p, n), d in self._by_key.items() if _under(p, old)]
        self.forget(old)
        for parent, name, _disk in moved:
            self.forget(join_key(parent, name))
        for parent, name, disk in moved:
            self.add(new + parent[len(old):], disk, name)


def _under(key: str, top: str) -> bool:
    return key == top or key.startswith(top + "/") or (top == "/" and key.startswith("/"))


@dataclass
class Location:
    """An open parent directory and the disk name of an entry in it.

    Use only through ``dir_fd`` (never as a path string). Close with
    :meth:`close`, or use the owning :meth:`PathMapper.locate` context.
    """

    key: str
    parent_key: str
    dir_fd: int
    name: str
    created_dirs: list[str] = field(default_factory=list)  #: directory keys made on the way

    def lstat(self) -> os.stat_result | None:
        """The entry's own status (not following a link), or ``None`` if absent."""
        try:
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def close(self) -> None:
        """Release the directory descriptor."""
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1


class PathMapper:
    """Turns keys into open, safe disk locations under a share root, and back.

    ``subtree`` (a key, default ``/``) makes the local root hold only that
    directory of the share ("Subtree Copy"): key ``/Music/a.mp3`` is then
    ``<root>/a.mp3`` and keys outside ``/Music`` are a :class:`PathError`.
    """

    def __init__(self, root: ShareRoot, names: NameTable, subtree: str = "/") -> None:
        self.root = root
        self.names = names
        self.rules = root.rules
        split_key(subtree)
        self.subtree = subtree
        self._prefix = () if subtree == "/" else tuple(subtree[1:].split("/"))

    # -- keys ------------------------------------------------------------------

    def local_parts(self, key: str) -> tuple[str, ...]:
        """The names of ``key`` below the local root (validated)."""
        parts = split_key(key)
        if parts[: len(self._prefix)] != self._prefix:
            raise PathError(key, f"outside the synced subtree {self.subtree!r}")
        return parts[len(self._prefix):]

    def root_key(self) -> str:
        """The key of the local root directory (``/`` or the subtree)."""
        return self.subtree

    def child_key(self, parent: str, disk_name: str) -> str:
        """The key of disk entry ``disk_name`` inside directory key ``parent``.

        Raises :class:`PathError` for names that cannot be keys (not valid
        UTF-8 on disk, a backslash, a control character).
        """
        mapped = self.names.key_name(parent, disk_name)
        if mapped is not None:
            return join_key(parent, mapped)
        if _SURROGATE.search(disk_name):
            shown = disk_name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            raise PathError(join_key(parent, shown), "the name on disk is not valid UTF-8")
        check_name(disk_name, join_key(parent, disk_name))
        return join_key(parent, disk_name)

    # -- disk ------------------------------------------------------------------

    def open_root(self) -> int:
        """A descriptor of the local root, identity-checked (close it yourself)."""
        return self.root.open_fd()

    @contextmanager
    def locate(self, key: str, *, create_dirs: bool = False,
               allocate: bool = False) -> Iterator[Location]:
        """:meth:`open_location` as a context that closes the descriptor."""
        location = self.open_location(key, create_dirs=create_dirs, allocate=allocate)
        try:
            yield location
        finally:
            location.close()

    def open_location(self, key: str, *, create_dirs: bool = False,
                      allocate: bool = False) -> Location:
        """Open the parent directory of ``key`` and give the entry's disk name.

        With ``create_dirs`` missing parent directories are made (mode 0o755
        less the umask); otherwise a missing one raises ``FileNotFoundError``.
        With ``allocate`` the entry's name is chosen for creating it (clashes
        resolved and remembered in the :class:`NameTable`); otherwise it is the
        name the key currently has, whether or not the entry exists, and
        ``FileNotFoundError`` if another key holds that name. The key ``/``
        (or the subtree root) has no parent and is a :class:`PathError`. The
        caller closes the returned :class:`Location`.
        """
        parts = self.local_parts(key)
        if not parts:
            raise PathError(key, "the share root has no parent directory")
        fd = self.open_root()
        current = self.subtree
        created: list[str] = []
        try:
            for part in parts[:-1]:
                name = self._allocate(current, fd, part) if create_dirs else self._name(
                    current, fd, part)
                if name is None:
                    raise FileNotFoundError(errno.ENOENT, "no such directory",
                                            join_key(current, part))
                child = self._open_dir(fd, name, key, part, missing_ok=create_dirs)
                if child < 0:  # Open first: the folder is there for all but the first file.
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)
                        created.append(join_key(current, part))
                    except FileExistsError:
                        pass
                    child = self._open_dir(fd, name, key, part)
                os.close(fd)
                fd = child
                current = join_key(current, part)
            last = parts[-1]
            name = self._allocate(current, fd, last) if allocate else self._name(
                current, fd, last)
            if name is None:
                raise FileNotFoundError(errno.ENOENT, "name held by another key", key)
        except BaseException:
            os.close(fd)
            raise
        return Location(key=key, parent_key=current, dir_fd=fd, name=name,
                        created_dirs=created)

    def open_dir(self, key: str) -> int:
        """A descriptor of directory ``key`` (no links followed; close it yourself)."""
        parts = self.local_parts(key)
        fd = self.open_root()
        current = self.subtree
        try:
            for part in parts:
                name = self._name(current, fd, part)
                if name is None:
                    raise FileNotFoundError(errno.ENOENT, "no such directory", key)
                child = self._open_dir(fd, name, key, part)
                os.close(fd)
                fd = child
                current = join_key(current, part)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_dir(self, parent_fd: int, name: str, key: str, part: str, *,
                  missing_ok: bool = False) -> int:
        """Open folder ``name``; -1 if it is missing and ``missing_ok``."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if missing_ok:
                return -1
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PathError(key, f"component {part!r} is a symbolic link") from None
            if exc.errno == errno.ENOTDIR:
                info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a directory"
                raise PathError(key, f"component {part!r} is {what}") from None
            raise

    def _name(self, parent: str, fd: int, part: str) -> str | None:
        """The disk name ``part`` currently has, or ``None`` if another key holds it."""
        mapped = self.names.disk_name(parent, part)
        if mapped is not None:
            return mapped
        natural = natural_name(part, self.rules)
        owner = self._owner(parent, fd, natural)
        if owner is not None and owner != part:
            return None
        return natural

    def _allocate(self, parent: str, fd: int, part: str) -> str:
        """Choose (and remember) the disk name for creating ``part`` in ``parent``."""
        mapped = self.names.disk_name(parent, part)
        if mapped is not None:
            return mapped
        for variant in range(_MAX_VARIANTS):
            candidate = natural_name("_" * variant + part, self.rules)
            owner = self._owner(parent, fd, candidate)
            if owner is None or owner == part:
                if candidate != part:
                    self.names.add(parent, candidate, part)
                return candidate
        raise PathError(join_key(parent, part), "no free disk name after "
                        f"{_MAX_VARIANTS} variants")

    def _owner(self, parent: str, fd: int, disk_name: str) -> str | None:
        """The record name that occupies ``disk_name`` in ``parent``, if any."""
        mapped = self.names.key_name(parent, disk_name)
        if mapped is not None:
            return mapped
        exact = self._exact_entry(fd, disk_name)
        if exact is None:
            return None
        mapped = self.names.key_name(parent, exact)
        return mapped if mapped is not None else exact

    def _exact_entry(self, fd: int, disk_name: str) -> str | None:
        """The exact on-disk spelling of the entry the filesystem finds for ``disk_name``.

        On a case-insensitive filesystem the folder is listed and names are
        compared folded, so the answer does not depend on what ``lstat``
        does with case (and the logic can be exercised on any filesystem).
        """
        if not self.rules.case_insensitive:
            return disk_name if lexists(fd, disk_name) else None
        folded = self.rules.fold(disk_name)
        matches = [e for e in os.listdir(fd) if self.rules.fold(e) == folded]
        if disk_name in matches:
            return disk_name
        return matches[0] if matches else None

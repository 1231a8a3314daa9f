"""Archived versions of a share's files: list them, put one back.

Theory of operation
-------------------
The directory engine keeps every version a peer replaced or deleted in the
share's archive (:mod:`csembed.directory.archive`, keyed by record key). This
module is what the ``versions`` and ``restore`` control commands do with it,
using only the archive's and the path mapper's public API:

* :func:`locate_file` turns an absolute path the user typed
  (``/home/me/Piano/takes/a.mid``) into the share holding it and the file's
  record key, mapping each disk name back through the share's name table, so
  an encoded or renamed-for-case file still finds its key. The file need not
  exist any more (a deleted file's versions are listed too).
* :func:`pick_version` chooses which archived version is meant: a version
  number (the archive's stable row id, as ``versions`` lists it), the one in
  place at a given time (the first one archived *after* that time -- it was
  the file until then), or the newest.
* :func:`restore_version` copies the version out crash-safely: into a
  ``.!clearsky`` temp beside the target (the scanner never reads those), in
  ``io_buffer`` chunks off the event loop, hashing as it goes; ``fsync``; the
  SHA-256 must equal the archived one, else the temp is removed and nothing
  changes; then the current file, if any and different, is archived itself
  (a restore never loses the version it replaces) and the temp renamed over
  it; the folder is synced. The share is then asked to rescan, so the
  restored content becomes an ordinary local change that syncs to peers.

A target (``to``) outside every share is written the same way but never
overwrites anything there. Restoring into a share this device holds
read-only is refused (the engine would revert the change); restoring out of
one to a path outside the shares is allowed.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from csembed import digests
from csembed.control.errors import ControlRequestError
from csembed.directory.archive import Archive, ArchivedFile
from csembed.directory.errors import DirectoryError
from csembed.directory.paths import PathMapper
from csembed.directory.record_keys import TEMP_SUFFIX
from csembed.security.keys import READ_WRITE

if TYPE_CHECKING:
    from csembed.directory.local_share import LocalShare
    from csembed.runtime.daemon import Daemon, OpenShare

__all__ = ["list_versions", "locate_file", "pick_version", "restore_version"]

_WRITE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True)
class FileInShare:
    """A path resolved to its share and record key."""

    share: OpenShare
    local: LocalShare
    key: str


def locate_file(daemon: Daemon, path: str) -> FileInShare | None:
    """The share holding absolute ``path`` and the file's key; ``None`` if in no share.

    Raises ``ControlRequestError`` when the path names a share itself, or a
    share that cannot be opened.
    """
    parent, name = os.path.split(os.path.normpath(path))
    real = os.path.join(os.path.realpath(parent), name)
    for share in daemon.shares.values():
        root = share.entry.path.rstrip("/")
        if real == root or path.rstrip("/") == root:
            raise ControlRequestError("invalid_argument",
                                      f"{path} is a share; name a file inside it")
        for candidate in (real, os.path.normpath(path)):
            if candidate.startswith(root + "/"):
                if share.local is None:
                    raise ControlRequestError("share_unavailable", f"the share at {root} "
                                              f"cannot be opened: {share.error}")
                rel = candidate[len(root) + 1:].split("/")
                return FileInShare(share, share.local, _key_of(share.local.mapper, rel, path))
    return None


def _key_of(mapper: PathMapper, parts: Sequence[str], path: str) -> str:
    key = mapper.root_key()
    try:
        for part in parts:
            key = mapper.child_key(key, part)
    except DirectoryError as exc:
        raise ControlRequestError("invalid_argument", f"{path}: {exc}") from None
    return key


def versions_of(archive: Archive, key: str) -> list[ArchivedFile]:
    """The archived versions of ``key``, newest first."""
    return sorted((item for item in archive.entries() if item.key == key),
                  key=lambda item: item.id, reverse=True)


def describe(item: ArchivedFile) -> dict[str, Any]:
    """One version as the control protocol shows it."""
    return {"version": item.id, "archived_at": item.archived_at,
            "mtime": item.mtime_ns / 1e9, "size": item.size, "sha256": item.sha256}


def pick_version(versions: Sequence[ArchivedFile], *, version: int | None = None,
                 at: float | None = None) -> ArchivedFile:
    """The version meant by ``version`` or ``at`` (else the newest); see the module
    docstring. ``versions`` is newest first. Raises ``ControlRequestError``."""
    if not versions:
        raise ControlRequestError("no_versions", "no archived versions of this file")
    if version is not None and at is not None:
        raise ControlRequestError("invalid_argument", "give a version or a time, not both")
    if version is not None:
        for item in versions:
            if item.id == version:
                return item
        numbers = ", ".join(str(item.id) for item in versions[:20])
        raise ControlRequestError("no_such_version",
                                  f"no version {version} of this file; there are: {numbers}")
    if at is not None:
        later = [item for item in versions if item.archived_at > at]
        if not later:
            raise ControlRequestError("no_such_version", "every archived version was "
                                      "replaced before that time; the file as it is now "
                                      "was already in place")
        return min(later, key=lambda item: (item.archived_at, item.id))
    return versions[0]


def list_versions(daemon: Daemon, path: str) -> dict[str, Any]:
    """The ``versions`` command: the archived versions of the file at ``path``."""
    found = locate_file(daemon, path)
    if found is None:
        raise ControlRequestError("no_such_share", f"{path} is not inside a share")
    items = versions_of(found.local.archive, found.key)
    return {"path": path, "share": found.share.entry.path, "file": found.key,
            "versions": [describe(item) for item in items]}


async def restore_version(daemon: Daemon, path: str, *, version: int | None = None,
                          at: float | None = None, to: str | None = None) -> dict[str, Any]:
    """The ``restore`` command: put a version of ``path`` back (at ``to`` if given)."""
    source = locate_file(daemon, path)
    if source is None:
        raise ControlRequestError("no_such_share", f"{path} is not inside a share")
    item = pick_version(versions_of(source.local.archive, source.key), version=version, at=at)
    target = source if to is None else locate_file(daemon, to)
    io_buffer = daemon.board.memory.io_buffer
    src = source.local.archive.open(item)
    try:
        if target is None:
            assert to is not None
            await _restore_outside(src, item, to, io_buffer)
            written = to
        else:
            if target.share.entry.access_level != READ_WRITE:
                raise ControlRequestError(
                    "not_permitted", f"this device holds {target.share.entry.path} read-only: "
                    "a restored file there would be reverted; restore it with --to a path "
                    "outside the share")
            await _restore_into(src, item, target, io_buffer)
            written = to or path
            if target.share.runtime is not None:
                target.share.runtime.request_scan()
    finally:
        os.close(src)
    return {"path": written, **describe(item)}


def _temp_for(name: str) -> str:
    temp = f".{name}.restore-{os.urandom(4).hex()}{TEMP_SUFFIX}"
    if len(temp.encode("utf-8")) > 255:
        temp = f".{digests.sha256(name.encode()).hexdigest()[:16]}.restore{TEMP_SUFFIX}"
    return temp


async def _restore_into(src: int, item: ArchivedFile, target: FileInShare,
                        io_buffer: int) -> None:
    local = target.local
    try:
        loc = local.mapper.open_location(target.key, create_dirs=True, allocate=True)
    except DirectoryError as exc:
        raise ControlRequestError("invalid_argument", f"{target.key}: {exc}") from None
    try:
        current = loc.lstat()
        if current is not None and not stat.S_ISREG(current.st_mode):
            raise ControlRequestError("not_a_file", f"{target.key} exists and is not a "
                                      "regular file; not replacing it")
        temp = _temp_for(loc.name)
        await _write_verified(src, item, loc.dir_fd, temp, io_buffer)
        try:
            if current is not None:
                now_sha = await asyncio.to_thread(_hash_at, loc.dir_fd, loc.name, io_buffer)
                if now_sha == item.sha256:
                    os.unlink(temp, dir_fd=loc.dir_fd)
                    return  # already this version: nothing to change
                # keep what is there now: a restore must not lose the version it replaces
                kept = local.archive.take(loc.dir_fd, loc.name, key=target.key,
                                          sha256=now_sha, size=current.st_size,
                                          mtime_ns=current.st_mtime_ns, remove=False)
                if kept is None:
                    raise ControlRequestError(
                        "archive_full", f"{target.key} as it is now cannot be archived (the "
                        "archive is off or smaller than the file), so restoring over it "
                        "would lose it; restore with --to another path")
            os.rename(temp, loc.name, src_dir_fd=loc.dir_fd, dst_dir_fd=loc.dir_fd)
        except BaseException:
            _unlink_quietly(temp, loc.dir_fd)
            raise
        os.fsync(loc.dir_fd)
    finally:
        loc.close()


async def _restore_outside(src: int, item: ArchivedFile, to: str, io_buffer: int) -> None:
    parent, name = os.path.split(os.path.normpath(to))
    if not name:
        raise ControlRequestError("invalid_argument", f"{to} names no file")
    try:
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ControlRequestError("not_found", f"no folder {parent}") from None
    try:
        temp = _temp_for(name)
        await _write_verified(src, item, dir_fd, temp, io_buffer)
        try:
            # link, not rename: it fails instead of replacing a file that is there
            os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            raise ControlRequestError("exists", f"{to} already exists; not replacing "
                                      "it") from None
        finally:
            _unlink_quietly(temp, dir_fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def _write_verified(src: int, item: ArchivedFile, dir_fd: int, temp: str,
                          io_buffer: int) -> None:
    """Copy the archived file into ``temp`` and check its SHA-256 (off the event loop)."""
    dst = os.open(temp, _WRITE_FLAGS, 0o644, dir_fd=dir_fd)
    try:
        digest = await asyncio.to_thread(_copy, src, dst, io_buffer)
    except BaseException:
        os.close(dst)
        _unlink_quietly(temp, dir_fd)
        raise
    os.close(dst)
    if digest != item.sha256:
        _unlink_quietly(temp, dir_fd)
        raise ControlRequestError("corrupt_version", f"archived version {item.id} no longer "
                                  f"has its SHA-256 ({digest[:12]}… instead of "
                                  f"{item.sha256[:12]}…); nothing was changed")


def _copy(src: int, dst: int, io_buffer: int) -> str:
    digest = digests.sha256()
    os.lseek(src, 0, os.SEEK_SET)
    while chunk := os.read(src, io_buffer):
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view):]
    os.fsync(dst)
    return digest.hexdigest()


def _hash_at(dir_fd: int, name: str, io_buffer: int) -> str:
    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    try:
        digest = digests.sha256()
        while chunk := os.read(fd, io_buffer):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise

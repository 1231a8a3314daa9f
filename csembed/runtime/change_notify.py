"""inotify for one share: the thin asyncio adapter around :class:`ChangeWatch`.

Theory of operation
-------------------
:meth:`ChangeNotifier.start` opens an inotify descriptor through libc
(``inotify_init1``/``inotify_add_watch``, :mod:`csembed.libc_calls`; Linux only -- elsewhere,
or when the kernel refuses, it returns ``None`` and the periodic scan
remains the only way changes are found) and watches every folder of the
local copy that the scanner would enter. The event loop reads the
descriptor when it is readable and feeds :class:`ChangeWatch`; new folders
are watched as they appear, and what is already inside them is reported as
settled. When the watch's debounce deadline passes, the batch is filtered
-- a path whose ``lstat`` matches the scan cache exactly is our own write
(a download renamed into place) or a change already recorded, and needs no
scan -- and the rest becomes one full-speed scan request on the share
runtime. Running out of watches (``ENOSPC``: ``fs.inotify.max_user_watches``)
or a queue overflow asks for a full rescan, and the periodic scan stays the
safety net.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import sys
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from csembed import libc_calls
from csembed.directory.change_watch import WATCH_MASK, ChangeWatch, ScanRequest
from csembed.directory.errors import PathError
from csembed.directory.record_keys import MAX_DEPTH, is_temp_name
from csembed.directory.scan_cache import ScanCache
from csembed.directory.scanner import Scanner

log = logging.getLogger(__name__)

_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_READ_SIZE = 64 * 1024


class ScanRequester(Protocol):
    def request_scan(self, settled: list[str] | None = None) -> None: ...


class _Inotify(NamedTuple):
    inotify_init1: Callable[[int], int]
    inotify_add_watch: Callable[[int, bytes, int], int]


def _libc() -> _Inotify | None:
    if not sys.platform.startswith("linux"):
        return None
    init = libc_calls.function("inotify_init1", "int", "int")
    add = libc_calls.function("inotify_add_watch", "int", "int", "char *", "uint32_t")
    return None if init is None or add is None else _Inotify(init, add)


def _signature(info: os.stat_result) -> tuple[bool, int, int, int, int, int]:
    if stat.S_ISDIR(info.st_mode):
        return (True, 0, 0, 0, info.st_ino, stat.S_IMODE(info.st_mode))
    return (False, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino,
            stat.S_IMODE(info.st_mode))


def already_known(cache: ScanCache, key: str, path: str) -> bool:
    """True when ``path`` is exactly as the scan cache has ``key`` (nothing to scan)."""
    entry = cache.get(key)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return entry is None
    except OSError:
        return False
    return entry is not None and entry.signature == _signature(info)


class ChangeNotifier:
    """Watches one share's local copy and asks its runtime to scan what changed."""

    def __init__(self, libc: _Inotify, fd: int, scanner: Scanner, runtime: ScanRequester,
                 clock: Callable[[], float]) -> None:
        self._libc = libc
        self._fd = fd
        self._scanner = scanner
        self._runtime = runtime
        self._clock = clock
        self.watch = ChangeWatch(self._child_key)
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._exhausted = False
        self.requests = 0  #: scan requests made

    @classmethod
    def start(cls, scanner: Scanner, runtime: ScanRequester,
              clock: Callable[[], float] = time.monotonic) -> ChangeNotifier | None:
        """Watch the share's tree; None where inotify is unavailable."""
        libc = _libc()
        if libc is None:
            return None
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            log.info("change notification unavailable: %s", os.strerror(libc_calls.last_errno()))
            return None
        notifier = cls(libc, fd, scanner, runtime, clock)
        try:
            root_fd = scanner.mapper.open_root()
            try:
                root = os.readlink(f"/proc/self/fd/{root_fd}")
            finally:
                os.close(root_fd)
            notifier._watch_tree(scanner.mapper.root_key(), root, 1, root=True, report=False)
            notifier._loop.add_reader(fd, notifier._readable)
        except (OSError, PathError) as exc:
            log.info("change notification not started: %s", exc)
            notifier.close()
            return None
        return notifier

    def close(self) -> None:
        """Stop watching (safe to call more than once)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _child_key(self, parent: str, name: str) -> str:
        return self._scanner.mapper.child_key(parent, name)

    def _add_watch(self, key: str, path: str, *, root: bool = False) -> bool:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), WATCH_MASK)
        if wd >= 0:
            self.watch.watching(wd, key, path, root=root)
            return True
        err = libc_calls.last_errno()
        if err == errno.ENOSPC and not self._exhausted:
            self._exhausted = True
            log.warning("out of inotify watches (fs.inotify.max_user_watches) at %s: "
                        "changes below it are found by the periodic scan", path)
        elif root:
            raise OSError(err, os.strerror(err), path)
        return False

    def _watch_tree(self, key: str, path: str, depth: int, *, root: bool = False,
                    report: bool = True) -> None:
        """Watch ``path`` and the folders under it; ``report`` what is inside as settled."""
        if not self._add_watch(key, path, root=root):
            return
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        selection = self._scanner.selection
        now = self._clock()
        for item in entries:
            if is_temp_name(item.name):
                continue
            try:
                is_dir = item.is_dir(follow_symlinks=False)
                if not (report or is_dir):
                    continue  # the first walk only looks for folders to watch
                child = self._child_key(key, item.name)
            except (PathError, OSError):
                continue
            if selection.ignore.excludes_entry(child, is_dir):
                continue
            if report:
                self.watch.settle(child, item.path, now)
            if is_dir and depth < MAX_DEPTH:
                self._watch_tree(child, item.path, depth + 1, report=report)

    def _readable(self) -> None:
        now = self._clock()
        while self._fd >= 0:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("change notification failed: %s", exc)
                self.close()
                return
            if not data:
                break
            try:
                self.watch.receive(data, now)
            except ValueError as exc:  # pragma: no cover - the kernel writes whole events
                log.warning("bad inotify data: %s", exc)
                self.watch.lost(now)
        folders, self.watch.new_folders = self.watch.new_folders, []
        for folder in folders:
            if not self._scanner.selection.ignore.excludes_entry(folder.key, True):
                self._watch_tree(folder.key, folder.path, folder.key.count("/") + 1)
        self._arm()

    def _arm(self) -> None:
        due = self.watch.due()
        if due is None or self._fd < 0:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(max(0.0, due - self._clock()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        request = self.watch.take(self._clock())
        if request is None:
            self._arm()
            return
        self._request(request)

    def _request(self, request: ScanRequest) -> None:
        cache = self._scanner.cache
        settled = [key for key, path in request.settled if not already_known(cache, key, path)]
        touched = [key for key, path in request.touched if not already_known(cache, key, path)]
        if not (request.full or settled or touched):
            return
        self.requests += 1
        self._runtime.request_scan(settled=sorted(settled))

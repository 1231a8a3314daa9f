"""Change notification, sans I/O: inotify events in, debounced scan requests out.

Theory of operation
-------------------
Scanning finds every change, but only when it runs; the periodic scan is
the safety net (its interval comes from the board). On Linux the runtime
adapter (:mod:`csembed.runtime.change_notify`) also asks the kernel for
inotify events on every folder of the local copy and feeds the bytes it
reads to a :class:`ChangeWatch`, which

* parses ``struct inotify_event`` records (:func:`parse_events`) and maps
  each to a share key through the watched folder's key and the share's name
  mapping (``child_key``); our own ``.!clearsky`` temp files and names that
  cannot be keys are ignored;
* sorts the keys: a file closed after writing, anything renamed or
  removed, a new folder and a permission change are *settled* (the writer is
  done, so the next scan may report them without the settle wait); a file
  created or modified but not yet closed is only *touched* (the scan sees it
  and its normal settle time applies);
* queues new folders (:attr:`ChangeWatch.new_folders`) for the adapter to
  watch too -- recursively, since files may land in them before the watch
  exists;
* debounces: a batch is due :attr:`quiet` seconds after the last event, but
  never more than :attr:`longest` after the first, so a busy tree still
  gets scanned and a file saved is announced within a second;
* turns a queue overflow (``IN_Q_OVERFLOW``) or the loss of the root's
  watch into a *full* rescan request: events were lost, only a scan can
  tell what changed.

The adapter asks the share runtime for a full-speed scan with the settled
keys (:meth:`csembed.runtime.share_runtime.ShareRuntime.request_scan`).
``now`` is passed in; nothing here reads a clock or a file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from csembed.directory.errors import PathError
from csembed.directory.record_keys import is_temp_name

# <sys/inotify.h> (Linux uapi), stable kernel ABI.
IN_MODIFY: Final = 0x00000002
IN_ATTRIB: Final = 0x00000004
IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_FROM: Final = 0x00000040
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200
IN_DELETE_SELF: Final = 0x00000400
IN_MOVE_SELF: Final = 0x00000800
IN_Q_OVERFLOW: Final = 0x00004000
IN_IGNORED: Final = 0x00008000
IN_ONLYDIR: Final = 0x01000000
IN_DONT_FOLLOW: Final = 0x02000000
IN_EXCL_UNLINK: Final = 0x04000000
IN_ISDIR: Final = 0x40000000

WATCH_MASK: Final = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
                     | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
                     | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)
"""What the adapter asks ``inotify_add_watch`` for on each folder."""

_SETTLED: Final = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_ATTRIB
_HEADER = struct.Struct("=iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One ``struct inotify_event``."""

    wd: int
    mask: int
    cookie: int
    name: bytes


def parse_events(data: bytes) -> list[RawEvent]:
    """Every whole event in ``data`` (one ``read`` from an inotify descriptor).

    The kernel only returns whole events, so a truncated tail is an error.
    """
    events: list[RawEvent] = []
    at = 0
    while at < len(data):
        if len(data) - at < _HEADER.size:
            raise ValueError(f"truncated inotify event header at byte {at}")
        wd, mask, cookie, length = _HEADER.unpack_from(data, at)
        at += _HEADER.size
        if len(data) - at < length:
            raise ValueError(f"truncated inotify event name at byte {at}")
        name = data[at:at + length].rstrip(b"\0")
        at += length
        events.append(RawEvent(wd, mask, cookie, name))
    return events


@dataclass(frozen=True)
class ScanRequest:
    """What a debounced batch of events asks for."""

    settled: frozenset[tuple[str, str]]  #: (key, disk path) whose writer is done
    touched: frozenset[tuple[str, str]]  #: (key, disk path) changed, perhaps still being written
    full: bool  #: events were lost: rescan everything


@dataclass(frozen=True, slots=True)
class NewFolder:
    """A folder that appeared (made or moved in): watch it and what it holds."""

    key: str
    path: str


@dataclass
class ChangeWatch:
    """Maps watch descriptors to folders and batches their events.

    ``child_key(parent_key, disk_name)`` is the share's name mapping (it may
    raise :class:`PathError` for names that cannot be keys).
    """

    child_key: Callable[[str, str], str]
    quiet: float = 0.15
    longest: float = 0.6
    new_folders: list[NewFolder] = field(default_factory=list)
    _folders: dict[int, tuple[str, str]] = field(default_factory=dict)  # wd -> (key, path)
    _root_wd: int | None = None
    _settled: dict[tuple[str, str], None] = field(default_factory=dict)
    _touched: dict[tuple[str, str], None] = field(default_factory=dict)
    _full: bool = False
    _first: float | None = None
    _last: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.quiet <= self.longest:
            raise ValueError("need 0 <= quiet <= longest")

    def watching(self, wd: int, key: str, path: str, *, root: bool = False) -> None:
        """The adapter added watch ``wd`` on folder ``key`` at ``path``."""
        self._folders[wd] = (key, path)
        if root:
            self._root_wd = wd

    @property
    def folders(self) -> int:
        """How many folders are watched."""
        return len(self._folders)

    def lost(self, now: float) -> None:
        """Events were or will be missed (a watch could not be added): rescan all."""
        self._full = True
        self._stamp(now)

    def receive(self, data: bytes, now: float) -> None:
        """Bytes read from the inotify descriptor."""
        for event in parse_events(data):
            self._event(event, now)

    def _event(self, event: RawEvent, now: float) -> None:
        mask = event.mask
        if mask & IN_Q_OVERFLOW:
            self.lost(now)
            return
        folder = self._folders.get(event.wd)
        if mask & IN_IGNORED:
            self._folders.pop(event.wd, None)
            if event.wd == self._root_wd:
                self.lost(now)
            return
        if folder is None:
            return
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            if event.wd == self._root_wd:
                self.lost(now)
            else:
                # Its old name no longer applies; if it moved within the share the
                # adapter watches it again (same wd) under the new name.
                self._folders.pop(event.wd, None)
            return  # the parent's event names it
        if not event.name:
            return
        name = os.fsdecode(event.name)
        if is_temp_name(name):
            return
        parent_key, parent_path = folder
        try:
            key = self.child_key(parent_key, name)
        except PathError:
            return
        item = (key, os.path.join(parent_path, name))
        is_dir = bool(mask & IN_ISDIR)
        if is_dir and mask & (IN_CREATE | IN_MOVED_TO):
            self.new_folders.append(NewFolder(*item))
        if mask & _SETTLED or (is_dir and mask & IN_CREATE):
            self._settled[item] = None
            self._touched.pop(item, None)
        elif mask & (IN_MODIFY | IN_CREATE):
            self._settled.pop(item, None)
            self._touched[item] = None
        else:
            return
        self._stamp(now)

    def _stamp(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now

    def settle(self, key: str, path: str, now: float) -> None:
        """Report ``key`` as settled (the adapter found it inside a new folder)."""
        self._settled[(key, path)] = None
        self._stamp(now)

    def due(self) -> float | None:
        """When the pending batch should be taken, or None if nothing is pending."""
        if self._first is None:
            return None
        return min(self._last + self.quiet, self._first + self.longest)

    def take(self, now: float) -> ScanRequest | None:
        """The pending batch if it is due at ``now`` (and forget it)."""
        due = self.due()
        if due is None or now < due:
            return None
        request = ScanRequest(frozenset(self._settled), frozenset(self._touched), self._full)
        self._settled, self._touched, self._full = {}, {}, False
        self._first = None
        return request

"""Finding local changes: list, settle, hash, pair moves, report.

Theory of operation
-------------------
A scan is a :class:`ScanPass` in three phases.

1. **List** (:meth:`Scanner.start`, :mod:`.tree_listing`). The whole tree
   is walked first, with ``lstat`` only, from the identity-checked root
   descriptor: a missing or replaced root is :class:`ShareUnavailable`,
   never "everything was deleted". The listing is available at once
   (:attr:`ScanPass.listing`), before any file is hashed, so change tracking
   works while a first scan of a large tree is still checksumming
   (directory.md "First Sync"). What is left out of it, and what is
   *unknown* (nothing under it is reported deleted), is the listing's to say.

2. **Settle and hash** (:meth:`ScanPass.step`). Each listed path is compared
   with the :class:`ScanCache` by stat signature (size, mtime, ctime, inode,
   mode; inode and mode only for directories). Unchanged paths cost nothing
   more. Changed, new and missing paths go through the :class:`Debouncer`;
   only settled ones are hashed (SHA-256, in ``io_buffer`` chunks, through a
   descriptor opened without following links). A file whose signature moves
   while it is hashed is put back to settle. Files that vanish or cannot be
   read are skipped without crashing. ``step`` stops at a deadline from an
   injected clock, in the middle of a file if need be, so the caller can
   pace the work with :class:`csembed.directory.pacing.ScanBudget` -- or
   after a number of files, since what a slice hashed is then written to
   the database and sent before the next slice, and thousands of small
   files hash in a few milliseconds but take far longer to record.

   Two things skip the settle wait: :meth:`Scanner.settle_next_pass` (an
   explicit ``rescan`` settles everything it sees; a change notification
   settles the paths whose writer closed them), and a file hashed while its
   signature held still is checked once more by that very hashing.

   **Early reports** (:meth:`ScanPass.take_early`). Between slices the
   caller may take what has been hashed so far, so transfers start while the
   scan goes on. That is only done while the pass has seen nothing vanish:
   with no vanished path there is no move to pair, and a new or changed
   file's event is final. Taken keys are left out of :meth:`finish`.

3. **Report** (:meth:`ScanPass.finish`). Settled changes form one batch, and
   moves are found in the whole batch before anything is reported
   (directory.md "File Change Notification"; :mod:`.move_pairing`). A
   half-seen move (one side settled, the other not yet) is held back for up
   to two more settle periods so both sides land in one batch. The result
   is a list of :data:`~.scan_events.ChangeEvent` -- added, modified,
   deleted, moved -- with record values, ordered so that parents are created
   before children and removed after them.

A name mapping (an encoded or ``_``-prefixed disk name, :mod:`.paths`) does
not follow a file or folder the user moves: the new key is the name as it is
on disk, as if the user had chosen it.

The cache is updated only by :meth:`Scanner.commit`, which the engine calls
after it has written the events to the database: a crash in between means
the next scan finds the same changes again, never loses them. A change of
mtime alone (``touch``) updates the cache silently; it is not an event.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from collections.abc import Callable, Iterable

from csembed import digests
from csembed.directory.debounce import Debouncer
from csembed.directory.move_pairing import pair_moves
from csembed.directory.paths import PathMapper
from csembed.directory.record_keys import parent_key
from csembed.directory.records import FileValue
from csembed.directory.scan_cache import CachedEntry, ScanCache
from csembed.directory.scan_events import (
    Added,
    ChangeEvent,
    Deleted,
    Modified,
    Moved,
    Notice,
    ScanResult,
    event_order,
    key_depth,
)
from csembed.directory.selection import Selection
from csembed.directory.tree_listing import DIR_FLAGS, Entry, entry_of, list_tree

log = logging.getLogger(__name__)

_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_MISSING = ("missing",)
_HOLD_SETTLES = 2  # extra settle periods a half-seen move may wait for its other side


def _file_signature(info: os.stat_result) -> tuple[bool, int, int, int, int, int]:
    """:attr:`Entry.signature` of a regular file, straight from its status."""
    return (False, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino,
            stat.S_IMODE(info.st_mode))


# -- the scanner ------------------------------------------------------------------------


class Scanner:
    """Scans one share's local copy; keeps the debounce and hash memory between passes.

    ``mapper`` says where the share is and how names map; ``cache`` is the
    share's :class:`ScanCache`; ``selection`` its ignore/subtree settings
    (the subtree itself is the mapper's); ``io_buffer`` the read size for
    hashing (board ``memory.io_buffer``); ``settle`` the debounce time in
    seconds.
    """

    def __init__(self, mapper: PathMapper, cache: ScanCache, *,
                 selection: Selection | None = None, io_buffer: int = 1 << 20,
                 settle: float = 2.0) -> None:
        if io_buffer < 512:
            raise ValueError(f"io_buffer too small: {io_buffer}")
        self.mapper = mapper
        self.cache = cache
        self.selection = selection if selection is not None else Selection()
        self.io_buffer = io_buffer
        self.debouncer = Debouncer(settle)
        self._memo: dict[str, tuple[tuple[bool, int, int, int, int, int], str]] = {}
        self._noticed: set[tuple[str, str]] = set()
        self._settle_all = False
        self._settle_keys: set[str] = set()

    def settle_next_pass(self, keys: Iterable[str] | None = None) -> None:
        """Treat changes seen by the next pass as settled: all (``None``, a rescan
        the user asked for) or just ``keys`` (files whose writer closed them)."""
        if keys is None:
            self._settle_all = True
        else:
            self._settle_keys.update(keys)

    def start(self, now: float) -> ScanPass:
        """List the tree (phase 1); raises :class:`ShareUnavailable` for a bad root."""
        scan = ScanPass(self, now)
        try:
            scan._list()
        except BaseException:
            scan.close()
            raise
        return scan

    def scan(self, now: float) -> ScanResult:
        """One whole pass without pacing: list, settle, hash, report."""
        scan = self.start(now)
        try:
            scan.run()
            return scan.finish()
        finally:
            scan.close()

    def commit(self, result: ScanResult) -> None:
        """Record a pass's findings in the cache (after the database has them)."""
        for key in result._deletes:
            self.cache.delete(key)
        for entry in result._puts:
            self.cache.put(entry)
        # The walk named everything under a moved folder by its disk names,
        # so the old folder's name mappings no longer apply to anything.
        names = self.mapper.names
        for event in result.events:
            if isinstance(event, Moved):
                names.forget_tree(event.old_key)
            elif isinstance(event, Deleted):
                names.forget_tree(event.key)
        self.cache.commit()
        for key in result._reported:
            self.debouncer.forget(key)
            self._memo.pop(key, None)

    def _notice(self, notices: list[Notice], key: str, reason: str) -> None:
        notices.append(Notice(key, reason))
        if (key, reason) not in self._noticed:
            self._noticed.add((key, reason))
            log.info("skipping %s: %s", key, reason)


class ScanPass:
    """One scan in progress. Created by :meth:`Scanner.start`."""

    def __init__(self, scanner: Scanner, now: float) -> None:
        self._s = scanner
        self.now = now
        self.listing: dict[str, Entry] = {}
        self.notices: list[Notice] = []
        self._temp: list[str] = []
        self._root_fd = -1
        self._mark = scanner.cache.version
        # phase 2 state
        self._queue: list[Entry] = []
        self._hashed: dict[str, str] = {}
        self._ready_missing: dict[str, CachedEntry] = {}
        self._pending_present: set[str] = set()
        self._pending_missing: set[str] = set()
        self._drops: list[str] = []
        self._job: tuple[Entry, io.FileIO, digests.Hash, int] | None = None
        self._dir_cache: tuple[tuple[str, ...], int] | None = None
        self._buffer = bytearray(scanner.io_buffer)
        self._settle_all, scanner._settle_all = scanner._settle_all, False
        self._settle_keys, scanner._settle_keys = scanner._settle_keys, set()
        self.hashed_files = 0
        self.hashed_bytes = 0

    # -- phase 1: listing ------------------------------------------------------

    def _list(self) -> None:
        s = self._s
        listing = list_tree(s.mapper, s.selection,
                            lambda key, reason: s._notice(self.notices, key, reason))
        self._root_fd = listing.root_fd
        self.listing = listing.entries
        self._temp = listing.temp
        self._classify(listing.is_unknown)

    def _classify(self, is_unknown: Callable[[str], bool]) -> None:
        """Compare the listing with the cache and settle what changed."""
        s = self._s
        cached = s.cache.entries()
        selection = s.selection
        for key, old in cached.items():
            if key in self.listing or is_unknown(key):
                continue
            if not selection.in_subtree(key) or selection.ignore.excludes(key, old.is_dir):
                self._drops.append(key)  # now outside what we sync: forget, do not delete
                continue
            if self._settles_now(key) or s.debouncer.observe(key, _MISSING, self.now):
                self._ready_missing[key] = old
            else:
                self._pending_missing.add(key)
        for key, entry in self.listing.items():
            known = cached.get(key)
            if known is not None and known.signature == entry.signature:
                s.debouncer.forget(key)
                continue
            if self._settles_now(key):
                s.debouncer.forget(key)
            elif not s.debouncer.observe(key, entry.signature, self.now, entry.changed_at):
                self._pending_present.add(key)
                continue
            memo = s._memo.get(key)
            if entry.is_dir:
                self._hashed[key] = ""
            elif memo is not None and memo[0] == entry.signature:
                self._hashed[key] = memo[1]
            else:
                self._queue.append(entry)
        for key in s.debouncer.keys():  # changes that came and went unreported
            if key not in self.listing and key not in cached:
                s.debouncer.forget(key)
                s._memo.pop(key, None)
        # Hash folder by folder so one directory descriptor serves many files.
        self._queue.sort(key=lambda e: (e.disk_parent, e.disk_name), reverse=True)

    def _settles_now(self, key: str) -> bool:
        return self._settle_all or key in self._settle_keys

    # -- phase 2: hashing --------------------------------------------------------

    @property
    def pending_files(self) -> int:
        """Files still to hash in this pass."""
        return len(self._queue) + (self._job is not None)

    def run(self) -> None:
        """Hash everything that is due, without pausing."""
        while not self.step():
            pass

    def step(self, *, until: float | None = None,
             clock: Callable[[], float] | None = None, max_files: int | None = None) -> bool:
        """Hash until done (True), or until ``clock() >= until`` or ``max_files``
        files were finished (False)."""
        finished = 0
        while True:
            if self._job is None:
                if not self._queue:
                    self._close_dir()
                    return True
                self._open_job(self._queue.pop())
                continue
            entry, handle, hasher, done = self._job
            try:
                count = handle.readinto(self._buffer)
            except OSError as exc:
                self._end_job()
                self._s._notice(self.notices, entry.key, f"read error: {exc.strerror}")
                self._pending_present.add(entry.key)
                continue
            if count:
                hasher.update(memoryview(self._buffer)[:count])
                self._job = (entry, handle, hasher, done + count)
                self.hashed_bytes += count
            else:
                self._finish_job()
                finished += 1
                if max_files is not None and finished >= max_files:
                    return False
            if until is not None and clock is not None and clock() >= until:
                return False

    def _open_job(self, entry: Entry) -> None:
        try:
            dir_fd = self._open_parent(entry.disk_parent)
            fd = os.open(entry.disk_name, _FILE_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            self._vanished(entry.key)
            return
        except OSError as exc:
            self._s._notice(self.notices, entry.key, f"cannot open: {exc.strerror}")
            self._pending_present.add(entry.key)
            return
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or _file_signature(info) != entry.signature:
            os.close(fd)
            self._restart_settle(entry.key, info)
            return
        self._job = (entry, io.FileIO(fd, "rb", closefd=True), digests.sha256(), 0)

    def _finish_job(self) -> None:
        assert self._job is not None
        entry, handle, hasher, done = self._job
        info = os.fstat(handle.fileno())
        self._end_job()
        if _file_signature(info) != entry.signature or done != entry.size:
            self._restart_settle(entry.key, info)
            return
        digest = hasher.hexdigest()
        self._hashed[entry.key] = digest
        self._s._memo[entry.key] = (entry.signature, digest)
        self.hashed_files += 1

    def _end_job(self) -> None:
        if self._job is not None:
            self._job[1].close()
            self._job = None

    def _restart_settle(self, key: str, info: os.stat_result) -> None:
        """The file changed while we looked at it: settle again from now."""
        entry = self.listing[key]
        changed = entry_of(key, info, entry.disk_parent, entry.disk_name)
        self._s.debouncer.observe(key, changed.signature, self.now)
        self._pending_present.add(key)

    def _vanished(self, key: str) -> None:
        self.listing.pop(key, None)
        if key in self._s.cache:
            self._s.debouncer.observe(key, _MISSING, self.now)
            self._pending_missing.add(key)

    def _open_parent(self, disk_parent: tuple[str, ...]) -> int:
        if self._dir_cache is not None and self._dir_cache[0] == disk_parent:
            return self._dir_cache[1]
        self._close_dir()
        fd = os.dup(self._root_fd)
        try:
            for name in disk_parent:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        self._dir_cache = (disk_parent, fd)
        return fd

    def _close_dir(self) -> None:
        if self._dir_cache is not None:
            os.close(self._dir_cache[1])
            self._dir_cache = None

    def close(self) -> None:
        """Release descriptors (safe to call more than once)."""
        self._end_job()
        self._close_dir()
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    # -- early reports ----------------------------------------------------------------

    def take_early(self) -> ScanResult | None:
        """Events for what is hashed so far, if they are final; None if nothing is.

        Final means the pass has seen nothing vanish (no move can pair with
        them). A file is taken only once its folder is known to the cache or
        taken in the same batch. Hand the result to the database, then
        :meth:`Scanner.commit`, as for :meth:`finish`.
        """
        if self._ready_missing or self._pending_missing or not self._hashed:
            return None
        s = self._s
        cache = s.cache
        stale = cache.touched_since(self._mark)
        events: list[ChangeEvent] = []
        puts: list[CachedEntry] = []
        taken: list[str] = []
        # Folders first (shallowest first), so their files can follow in this batch.
        for key in sorted(self._hashed, key=key_depth):
            entry = self.listing.get(key)
            if entry is None or key in self._pending_present or key in stale:
                continue
            if key != "/" and parent_key(key) not in cache and parent_key(key) not in taken:
                continue
            sha = self._hashed[key] or None
            prior = cache.get(key)
            value = (FileValue.for_directory(entry.mode) if entry.is_dir else
                     FileValue.for_file(entry.size, self._hashed[key], entry.mtime_ns, entry.mode))
            if prior is None:
                events.append(Added(key, value))
            elif prior.is_dir != entry.is_dir or prior.sha256 != sha or prior.mode != entry.mode:
                events.append(Modified(key, value, prior.value()))
            puts.append(entry.cached(sha))
            taken.append(key)
        if not taken:
            return None
        for key in taken:
            del self._hashed[key]
        events.sort(key=event_order)
        return ScanResult(events=events, notices=[], pending=0, next_check=None, temp_files=[],
                          listed=len(self.listing), hashed_files=0, hashed_bytes=0,
                          _puts=puts, _deletes=[], _reported=taken)

    # -- phase 3: report -----------------------------------------------------------

    def finish(self) -> ScanResult:
        """Pair moves and build the batch of events (call after :meth:`run`)."""
        if self._job is not None or self._queue:
            raise RuntimeError("finish() before hashing is done")
        self.close()
        s = self._s
        cache = s.cache
        # Keys the file store wrote while we scanned: our view of them is stale.
        stale = cache.touched_since(self._mark)
        self._pending_present -= stale
        self._pending_missing -= stale
        ready: dict[str, Entry] = {k: self.listing[k] for k in self._hashed
                                   if k in self.listing and k not in self._pending_present
                                   and k not in stale}
        additions = {k: e for k, e in ready.items() if k not in cache}
        missing = {k: e for k, e in self._ready_missing.items() if k not in stale}
        self._hold_half_moves(additions, missing)

        events: list[ChangeEvent] = []
        puts: list[CachedEntry] = []
        deletes: list[str] = list(self._drops)
        reported: list[str] = []

        def value_of(entry: Entry) -> FileValue:
            if entry.is_dir:
                return FileValue.for_directory(entry.mode)
            return FileValue.for_file(entry.size, self._hashed[entry.key], entry.mtime_ns,
                                      entry.mode)

        for old_key, new_key in pair_moves(additions, missing, self._hashed):
            entry = additions.pop(new_key)
            gone = missing.pop(old_key)
            events.append(Moved(old_key, new_key, value_of(entry), gone.value()))
            deletes.append(old_key)
            puts.append(entry.cached(self._hashed[new_key] or None))
            reported += [old_key, new_key]
        for key, entry in ready.items():
            prior = cache.get(key)
            if key in self._pending_present or (prior is None and key not in additions):
                continue  # held back, or already reported as a move's new side
            sha = self._hashed[key] or None
            puts.append(entry.cached(sha))
            reported.append(key)
            if prior is None:
                events.append(Added(key, value_of(entry)))
            elif prior.is_dir != entry.is_dir or prior.sha256 != sha or prior.mode != entry.mode:
                events.append(Modified(key, value_of(entry), prior.value()))
        for key, old in missing.items():
            events.append(Deleted(key, old.value()))
            deletes.append(key)
            reported.append(key)
        events.sort(key=event_order)
        pending = len(self._pending_present) + len(self._pending_missing)
        return ScanResult(
            events=events, notices=self.notices, pending=pending,
            next_check=s.debouncer.next_due() if pending else None,
            temp_files=self._temp, listed=len(self.listing),
            hashed_files=self.hashed_files, hashed_bytes=self.hashed_bytes,
            _puts=puts, _deletes=deletes, _reported=reported)

    def _hold_half_moves(self, additions: dict[str, Entry],
                         missing: dict[str, CachedEntry]) -> None:
        """Keep back one side of a move whose other side has not settled yet."""
        s = self._s
        limit = _HOLD_SETTLES * s.debouncer.settle

        def may_hold(key: str, signature: object) -> bool:
            if s.debouncer.due(key) is None:  # settled at first sight: start the clock now
                s.debouncer.observe(key, signature, self.now)  # type: ignore[arg-type]
            due = s.debouncer.due(key)
            return due is not None and self.now < due + limit

        waiting_inodes = {self.listing[k].inode for k in self._pending_present
                          if k in self.listing and k not in s.cache}
        waiting_sizes = {self.listing[k].size for k in self._pending_present
                         if k in self.listing and not self.listing[k].is_dir}
        for key, old in list(missing.items()):
            if (old.inode in waiting_inodes or (not old.is_dir and old.size > 0
                                                and old.size in waiting_sizes)) \
                    and may_hold(key, _MISSING):
                del missing[key]
                self._pending_missing.add(key)
        gone = [s.cache.get(k) for k in self._pending_missing]
        gone_inodes = {e.inode for e in gone if e is not None}
        gone_content = {(e.size, e.sha256) for e in gone if e is not None and e.size > 0}
        for key, entry in list(additions.items()):
            content = (entry.size, self._hashed.get(key) or None)
            if (entry.inode in gone_inodes or content in gone_content) \
                    and may_hold(key, entry.signature):
                del additions[key]
                self._pending_present.add(key)
        for key in self._pending_present:
            additions.pop(key, None)

"""Local changes: scan passes, and what the share's records make of them.

Theory of operation
-------------------
A scan pass (:meth:`LocalChanges.scan`, paced by the runtime) reports
``Added``/``Modified``/``Deleted``/``Moved``; on a read-write share they are
written to the database (one transaction per ``SCAN_BATCH`` changes) -- a
move as a re-keying of the same record (same ``uuid``), unknown fields of the
old value kept -- and only then is the scan committed to the scan cache, so
a crash in between repeats the changes rather than losing them. New content
is announced with ``directory.present``. A change that follows a remote
version still on its way is deferred (:mod:`.conflicts`): it is not written,
and its scan-cache entry is put back so the next pass reports it again.
Deletions free space, so downloads held back by a limit are tried again.

A read-only share sends nothing: a local edit of a synced file is moved
aside to ``name.CONFLICT.xxxxxxxx.ext`` (so the user's work stays) and the
share's version is restored; local additions stay local. Both are reported
in ``status()["notices"]``. Our own temp files are cleaned up here too: a
partial download of a version no longer wanted goes at once, one still
wanted stays for resuming (unless untouched for ``STALE_TEMP_SECONDS``).

The share's mode (:mod:`.share_policy`) decides the rest. A receive-only
share commits its scans but writes no record: the keys that then differ
from their records are kept in :class:`~.unsent_changes.UnsentChanges` and
written as ordinary changes once the mode sends again
(:meth:`LocalChanges.set_mode`) or given up (:meth:`LocalChanges.revert`).
A send-only share writes every local change at once, even over a peer's
version this disk never had (that version is never fetched here, so waiting
for it would hold the change forever); :meth:`LocalChanges.override` writes
this disk's state over the peers' changes it holds back.

Each pass starts by reading the ignore file (:mod:`.ignore_file`); when its
patterns changed, the new selection is in force for that pass and every
record is planned again once it ended. An unusable ignore file is the
share's error: no pass runs until it is fixed.
"""

from __future__ import annotations

from collections.abc import Callable

from csembed.database import LocalWriteError
from csembed.directory.errors import (
    DirectoryError,
    RecordError,
    SelectionError,
    ShareUnavailable,
)
from csembed.directory.ignore_file import IgnoreFile, ignore_limit
from csembed.directory.pacing import next_scan_delay
from csembed.directory.record_keys import TEMP_SUFFIX
from csembed.directory.records import FileValue, merge_value
from csembed.directory.scan_cache import CachedEntry
from csembed.directory.scan_events import Added, Deleted, Modified, Moved, ScanResult
from csembed.directory.scanner import ScanPass
from csembed.directory.selection import Selection
from csembed.directory.share_policy import SyncMode
from csembed.directory.sync_context import SyncContext
from csembed.directory.unsent_changes import UnsentChanges, record_version

SCAN_BATCH = 512  #: local changes written per database transaction
#: Files a time-sliced scan step hashes at most before its early changes are
#: written and sent, so the peers start fetching while the scan goes on (and
#: the slice stays short when the files are small and hash in no time).
EARLY_FILES = 256
STALE_TEMP_SECONDS = 24 * 3600.0

Change = Added | Modified | Deleted | Moved


class LocalChanges:
    """Scan passes and the records they write."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.pass_: ScanPass | None = None
        self.began = 0.0
        self.next_scan: float | None = 0.0
        self.last_scan_seconds = 0.0
        self.last_scan: ScanResult | None = None
        self.unsent = UnsentChanges(ctx.local.conn)
        self.ignore = IgnoreFile(ctx.local.selection)
        self._replan = False  #: the selection changed: plan every record after the pass
        try:
            self._refresh_ignore()
        except (SelectionError, ShareUnavailable, OSError) as exc:
            ctx.report.set_error(str(exc))  # the first scan pass tries again
        self._replan = False  # nothing was planned before this first reading

    def due(self, now: float) -> bool:
        """Whether a scan pass is running or should start now."""
        return self.pass_ is not None or (self.next_scan is not None and now >= self.next_scan)

    def request_scan(self) -> None:
        """Scan at the next opportunity."""
        if self.pass_ is None:
            self.next_scan = 0.0

    def run(self, now: float, until: float | None,
            clock: Callable[[], float] | None = None) -> tuple[bool, ScanResult | None]:
        """Run the pass until done or ``clock() >= until`` (to the end without both).

        Returns (ended, its result); an unavailable share sets the share's
        error and ends the pass without a result. A pass that has not ended
        may return what it has hashed so far (final events, for
        :meth:`apply_early`), so that transfers start while it goes on.
        """
        ctx = self.ctx
        interval = ctx.board.cpu.scan_interval
        if self.pass_ is None:
            try:
                self._refresh_ignore()
                self.pass_ = ctx.local.scanner.start(now)
            except (ShareUnavailable, SelectionError) as exc:
                ctx.report.set_error(str(exc))
                self.next_scan = now + interval
                return True, None
            self.began = now
        try:
            if until is None or clock is None:
                self.pass_.run()
            elif not self.pass_.step(until=until, clock=clock, max_files=EARLY_FILES):
                return False, self.pass_.take_early()
        except (ShareUnavailable, OSError) as exc:
            self.pass_.close()
            self.pass_ = None
            ctx.report.set_error(str(exc))
            self.next_scan = now + interval
            return True, None
        scan, self.pass_ = self.pass_, None
        try:
            return True, scan.finish()
        finally:
            scan.close()

    def apply(self, result: ScanResult, now: float) -> None:
        """Write a finished pass's changes, commit it, and pace the next one."""
        ctx = self.ctx
        ctx.report.error = None
        self._apply(result, now)
        ctx.planner.scanned()
        if self._replan:
            self._replan = False
            ctx.planner.replan_all()
        self.last_scan = result
        self.last_scan_seconds = max(0.0, now - self.began)
        cpu = ctx.board.cpu
        due = now + next_scan_delay(self.last_scan_seconds, cpu.scan_interval, cpu.scan_budget)
        if result.pending and result.next_check is not None:
            due = min(due, result.next_check)
        self.next_scan = due
        ctx.report.count("scans")

    def apply_early(self, result: ScanResult, now: float) -> None:
        """Write the changes a pass still in progress has already settled."""
        self._apply(result, now)

    def close(self) -> None:
        """Stop a pass in progress."""
        if self.pass_ is not None:
            self.pass_.close()
            self.pass_ = None

    # -- writing the changes -------------------------------------------------------------

    def _apply(self, result: ScanResult, now: float) -> None:
        ctx = self.ctx
        for notice in result.notices:
            ctx.report.notice(notice.key, notice.reason)
        if any(isinstance(e, Deleted | Modified) for e in result.events) and \
                ctx.report.held_back:
            ctx.planner.retry_held_back()  # space may have freed
        if ctx.read_only:
            ctx.local.scanner.commit(result)
            for event in result.events:
                self._read_only_change(event)
            self._clean_temps(result, now)
            return
        if not ctx.mode.sends:
            ctx.local.scanner.commit(result)
            self._keep_unsent(result.events)
            self._clean_temps(result, now)
            return
        now_ns = int(now * 1e9)
        fresh: list[str] = []
        deferred: dict[str, CachedEntry | None] = {}
        events = result.events
        for first in range(0, len(events), SCAN_BATCH):
            # One transaction per slice: bounded memory for the replica's events.
            with ctx.replica.batch() as batch:
                for event in events[first:first + SCAN_BATCH]:
                    key = event.new_key if isinstance(event, Moved) else event.key
                    try:
                        written = self._write(event, now_ns)
                    except (LocalWriteError, RecordError) as exc:
                        self._unwant(event)
                        ctx.report.notice(key, f"local change not recorded: {exc}")
                        continue
                    if not written:  # the remote version it follows is still wanted
                        deferred[key] = ctx.local.cache.get(key)
                        continue
                    ctx.conflicts.deferred.pop(key, None)
                    self._unwant(event)
                    ctx.report.count("local_changes")
                    if isinstance(event, Added | Modified | Moved) and event.value.sha256:
                        fresh.append(event.value.sha256)
            ctx.route(batch.outgoing)
            ctx.planner.drain_events()
        ctx.local.scanner.commit(result)
        self._unrecord(deferred)
        ctx.announce_many(list(dict.fromkeys(fresh)))
        self._clean_temps(result, now)

    def _unwant(self, event: Change) -> None:
        """The local version supersedes what we were fetching for these keys."""
        keys = (event.old_key, event.new_key) if isinstance(event, Moved) else (event.key,)
        for key in keys:
            self.ctx.planner.unwant(key)
            self.ctx.planner.out_of_sync.discard(key)  # the record is ours now

    def _unrecord(self, deferred: dict[str, CachedEntry | None]) -> None:
        """Put back the scan-cache entries of deferred changes: they are reported again."""
        cache = self.ctx.local.cache
        for key, entry in deferred.items():
            if entry is None:
                cache.delete(key)
            else:
                cache.put(entry)
        if deferred:
            cache.commit()

    def _write(self, event: Change, now_ns: int) -> bool:
        """Write one change to the database; False when it is deferred."""
        replica = self.ctx.replica
        conflicts = self.ctx.conflicts
        if isinstance(event, Added | Modified):
            current = replica.get(event.key)
            if current is not None and merge_value(current.value, event.value) == current.value:
                # The record already says exactly this (a landing whose cache row
                # a crash lost): no edit to write, nothing to keep aside.
                return True
            previous = event.previous if isinstance(event, Modified) else None
            unseen = conflicts.unseen_remote(event.key, previous) \
                if self.ctx.mode.receives else None
            if unseen is not None and str(unseen.value.get("sha256")).lower() \
                    != event.value.sha256 and not conflicts.keep_unseen(unseen):
                return False
            replica.local_put(event.key, merge_value(current.value if current else None,
                                                     event.value), now_ns)
        elif isinstance(event, Deleted):
            if self.ctx.mode.receives and \
                    conflicts.unseen_remote(event.key, event.previous) is not None:
                self.ctx.dirty.add(event.key)  # a newer version exists: fetch it, not delete
            elif replica.get(event.key) is not None:
                replica.local_delete(event.key, now_ns)
        else:
            current = replica.get(event.old_key)
            taken = replica.get(event.new_key)
            if current is None:
                replica.local_put(event.new_key, merge_value(taken.value if taken else None,
                                                             event.value), now_ns)
            elif taken is not None and taken.uuid != current.uuid:
                replica.local_put(event.new_key, merge_value(taken.value, event.value), now_ns)
                replica.local_delete(event.old_key, now_ns, uuid=current.uuid)
            else:
                replica.local_put(event.new_key, merge_value(current.value, event.value),
                                  now_ns, uuid=current.uuid)
        return True

    # -- ignore file and mode ------------------------------------------------------------

    def _refresh_ignore(self) -> None:
        """Read the ignore file; put a changed selection in force (:mod:`.ignore_file`)."""
        local = self.ctx.local
        selection = self.ignore.refresh(local.mapper, ignore_limit(self.ctx.board.memory.io_buffer))
        if selection is not None:
            self._use(selection)

    def _use(self, selection: Selection) -> None:
        local = self.ctx.local
        if selection != local.selection:
            local.selection = selection
            local.scanner.selection = selection
            self._replan = True

    def _keep_unsent(self, events: list[Change]) -> None:
        """Receive-only: remember the keys whose disk now differs from their record."""
        for event in events:
            keys = (event.old_key, event.new_key) if isinstance(event, Moved) else (event.key,)
            for key in keys:
                self._note_unsent(key)
        self.unsent.commit()

    def _note_unsent(self, key: str) -> None:
        ctx = self.ctx
        record = ctx.replica.get(key)
        cached = ctx.local.cache.get(key)
        if record is None:
            agrees = cached is None
        else:
            try:
                value = FileValue.from_json(record.value)
            except RecordError:
                return
            agrees = cached is not None and cached.is_dir == value.is_directory and (
                cached.is_dir or cached.sha256 == value.sha256)
        if agrees:
            self.unsent.drop(key)
        else:
            self.unsent.note(key, record_version(record))

    def set_mode(self, mode: SyncMode, now: float) -> None:
        """Change the share's mode (the caller has stored it).

        Leaving receive-only writes the changes kept so far as ordinary local
        changes; leaving send-only plans every record again, so the peers'
        changes held back come in now.
        """
        ctx = self.ctx
        before, ctx.mode = ctx.mode, mode
        if mode.sends and not before.sends and not ctx.read_only:
            self._send_unsent(now)
        if mode.receives and not before.receives:
            ctx.planner.replan_all()

    def _send_unsent(self, now: float) -> None:
        self._record_disk(self.unsent.keys(), now)
        self.unsent.clear()
        self.unsent.commit()

    def override(self, now: float) -> int:
        """Send-only: make the peers' records say what this disk holds at every key
        listed out of sync (Syncthing's "override changes"). Returns how many."""
        planner = self.ctx.planner
        keys = sorted(planner.out_of_sync)
        written = self._record_disk(keys, now)
        planner.out_of_sync.difference_update(keys)
        return written

    def revert(self) -> int:
        """Receive-only: give up the local changes kept back; the share's versions
        come back (local files archived first, as for any replaced file)."""
        ctx = self.ctx
        keys = self.unsent.keys()
        for key in keys:
            self.unsent.drop(key)
        self.unsent.commit()
        for key in keys:
            if ctx.replica.get(key) is None:
                ctx.planner.delete_local(key)  # added here: archived, then removed
            else:
                ctx.dirty.add(key)
        return len(keys)

    def _record_disk(self, keys: list[str], now: float) -> int:
        """Write what the scan cache holds at ``keys`` as local changes; how many."""
        ctx = self.ctx
        now_ns = int(now * 1e9)
        fresh: list[str] = []
        written = 0
        with ctx.replica.batch() as batch:
            for key in keys:
                cached = ctx.local.cache.get(key)
                current = ctx.replica.get(key)
                try:
                    if cached is None:
                        if current is None:
                            continue
                        ctx.replica.local_delete(key, now_ns)
                    else:
                        value = (FileValue.for_directory(cached.mode) if cached.is_dir else
                                 FileValue.for_file(cached.size, cached.sha256 or "",
                                                    cached.mtime_ns, cached.mode))
                        ctx.replica.local_put(key, merge_value(
                            current.value if current else None, value), now_ns)
                        if value.sha256:
                            fresh.append(value.sha256)
                except (LocalWriteError, RecordError) as exc:
                    ctx.report.notice(key, f"local change not recorded: {exc}")
                    continue
                written += 1
                ctx.report.count("local_changes")
        ctx.route(batch.outgoing)
        ctx.planner.drain_events()
        ctx.announce_many(list(dict.fromkeys(fresh)))
        return written

    def _read_only_change(self, event: Change) -> None:
        """A local change on a read-only share: keep the user's file aside, restore ours."""
        ctx = self.ctx
        notice = ctx.report.notice
        if isinstance(event, Moved):
            if ctx.replica.get(event.old_key) is not None:
                notice(event.old_key, "moved locally on a read-only share; restored "
                                      f"(the moved copy stays at {event.new_key})")
                ctx.dirty.add(event.old_key)
            self._read_only_change(Added(event.new_key, event.value))
            return
        key = event.key
        record = ctx.replica.get(key)
        if isinstance(event, Deleted):
            if record is not None:
                notice(key, "deleted locally on a read-only share; restored")
                ctx.dirty.add(key)
            return
        if record is None:
            if not event.value.is_directory:
                notice(key, "local file on a read-only share is not sent to peers")
            return
        try:
            value = FileValue.from_json(record.value)
        except RecordError:
            return
        if value.is_directory or event.value.is_directory or \
                value.sha256 == event.value.sha256:
            return
        try:
            aside = ctx.local.store.conflict_key(key)
            ctx.local.store.rename_local(key, aside)
        except (DirectoryError, OSError) as exc:
            notice(key, f"changed locally on a read-only share; could not keep it aside: {exc}")
            return
        notice(key, f"changed locally on a read-only share; the change was kept as {aside} "
                    f"and the share's version restored")
        ctx.dirty.add(key)

    def _clean_temps(self, result: ScanResult, now: float) -> None:
        """Remove partial downloads of versions no longer wanted (superseded,
        deleted); keep the wanted ones for resuming unless untouched for
        ``STALE_TEMP_SECONDS``."""
        planner = self.ctx.planner
        planner.start()  # after a restart: know what is wanted before judging
        wanted = {sha[:16] for sha in planner.wants}
        older = int((now - STALE_TEMP_SECONDS) * 1e9)
        for path in result.temp_files:
            cutoff = older if _temp_sha_prefix(path) in wanted else int(now * 1e9)
            try:
                self.ctx.local.store.remove_stale_temp(path, older_than_ns=cutoff)
            except (DirectoryError, OSError):
                pass


def _temp_sha_prefix(path: str) -> str:
    """The SHA-256 prefix in a temp name (``.<name>.<16 hex digits>.!clearsky``)."""
    return path[:-len(TEMP_SUFFIX)].rsplit(".", 1)[-1] if path.endswith(TEMP_SUFFIX) else ""


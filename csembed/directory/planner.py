"""Planning: from the records, what the disk should hold, and what content to want.

Theory of operation
-------------------
Each ``RecordChanged`` from the replica is checked (key and value; a bad one
is *rejected*: logged with the reason, listed in ``status()["rejected"]``,
nothing on disk touched) and acted on: a rename moves the local file or
folder (:meth:`FileStore.rename_local`), a deletion archives and removes it
unless it changed locally unseen (then it stays and the next scan sends it
again), and the key is marked *dirty*. Planning a dirty key makes the disk
agree with its record: a folder is created, a mode-only change applied, and
content we lack is copied from an identical local file or archived version
when there is one (deduplication), else *wanted*.

A want is by SHA-256 (:class:`~.transfer_fetch.Want`, one for all keys with
that content) and waits in the :class:`~.transfer_fetch.PickQueue` for the
fetcher; after a failure it sits in ``delayed`` until its retry time; when
every peer refused it, in ``refused``. Content that a storage limit keeps
out is *held back* (``status()["held_back"]``) and planned again when space
may have freed: every ``HELD_BACK_RETRY`` seconds and after local deletions.
Conflict copies are tracked by key for ``status()["conflicts"]``.

**Modes and ignore rules** (:mod:`.share_policy`, :mod:`.ignore_file`). On
a send-only share nothing a peer changed is applied: the key is listed in
:attr:`Planner.out_of_sync` instead of being fetched, deleted, moved or
created, and a peer's rename is left unacknowledged so that it is followed
once the mode receives again (:meth:`replan_all`). On a receive-only share
a key with a local change kept back (:class:`~.unsent_changes.UnsentChanges`)
is left alone until a peer changes its record. An ignored path is never
touched, whatever a peer did to it; until the ignore file has been read
once, nothing is planned at all.

**Crashes.** Records are committed before the disk is changed to match, so
a kill in between must be made good at the next start (:meth:`Planner.start`,
run before any peer's change is applied): every key is planned again
(content wanted, folders made), every tombstone deleted locally, and every
peer's rename not yet acknowledged (:meth:`Replica.departures`, written with
the update) is followed then. A file that differs from its scan-cache row
but hashes to the record's content is a landing the kill cut short: it is
recorded (:meth:`FileStore.adopt`), not taken for a local edit.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat

from csembed.database import Conflict, Record, RecordChanged, UpdateRejected
from csembed.directory.errors import (
    DirectoryError,
    LocalChangeConflict,
    PathError,
    RecordError,
    StorageLimitError,
)
from csembed.directory.record_keys import split_key
from csembed.directory.records import FileValue, is_file_key
from csembed.directory.scan_cache import CachedEntry
from csembed.directory.sync_context import SyncContext
from csembed.directory.transfer_fetch import PickQueue, Want

log = logging.getLogger("csembed.sync")

VALUE_CACHE = 1024  #: parsed record values kept (by uuid and version)
RETRY_BASE = 5.0  #: first delay after a failed transfer; doubles per failure
RETRY_MAX = 3600.0
HELD_BACK_RETRY = 10.0  #: seconds between re-checks of downloads held back by a limit
_MODE_BITS = 0o777  # permission bits a peer may set here (filestore applies the same)


class Planner:
    """Records -> disk: renames, deletions, folders, modes, and the wanted contents."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.wants: dict[str, Want] = {}
        self.key_want: dict[str, str] = {}
        self.queue = PickQueue(ctx.rng)
        self.delayed: dict[str, float] = {}  #: after a failure: retry time
        self.refused: dict[str, float] = {}  #: every peer said not_present: retry time
        self.conflict_keys: set[str] = set()
        self.after_scan: set[str] = set()  #: keys to plan again once a scan pass ended
        self._values: dict[tuple[str, tuple[str, int]], tuple[str, FileValue]] = {}
        self._full_plan = True
        self._held_retry_at: float | None = None
        self._followed: list[tuple[str, str]] = []  #: departures acted on, to acknowledge
        self.out_of_sync: set[str] = set()  #: send-only: keys a peer changed, not applied

    # -- database events ---------------------------------------------------------------

    def drain_events(self) -> None:
        """Act on what the replica reports (remote changes, conflicts, refusals)."""
        ctx = self.ctx
        while True:
            events = ctx.replica.take_events()
            if not events:
                self._acknowledge()
                return
            for event in events:
                if isinstance(event, Conflict):
                    ctx.conflicts.on_conflict(event)
                elif isinstance(event, RecordChanged):
                    if event.conn_id is not None:
                        self._on_record_changed(event.record, event.previous)
                elif isinstance(event, UpdateRejected):
                    ctx.report.reject_update(event.reason, event.conn_id)

    def check_record(self, record: Record) -> FileValue | None:
        """The record's value if the directory engine may act on it; logs a rejection."""
        if record.deleted:
            try:
                split_key(record.key)
            except PathError as exc:
                self.ctx.report.reject(record, str(exc))
            return None
        version = (record.uuid, record.dot)
        cached = self._values.get(version)
        if cached is not None and cached[0] == record.key:
            return cached[1]
        try:
            split_key(record.key)
            value = FileValue.from_json(record.value)
        except (PathError, RecordError) as exc:
            self.ctx.report.reject(record, str(exc))
            return None
        if len(self._values) >= VALUE_CACHE:  # the oldest goes: the newest are wanted next
            del self._values[next(iter(self._values))]
        self._values[version] = (record.key, value)
        return value

    def reject_key(self, key: str, reason: str) -> None:
        """Reject the record at ``key`` (its content or path cannot be taken)."""
        record = self.ctx.replica.get(key)
        if record is not None:
            self.ctx.report.reject(record, reason)

    def _on_record_changed(self, record: Record, previous: Record | None) -> None:
        if not self._act_on_change(record, previous) and previous is not None \
                and previous.live and previous.key != record.key:
            self._followed.append((record.uuid, previous.key))  # nothing to do on disk

    def _act_on_change(self, record: Record, previous: Record | None) -> bool:
        """Follow a peer's change on disk; True when a rename was handed to
        :meth:`_follow_rename` (which acknowledges it once done)."""
        if not is_file_key(record.key) and (previous is None or not is_file_key(previous.key)):
            return False  # another extension's record
        value = self.check_record(record)
        if record.live and value is None:
            return False
        followed = False
        if previous is not None and previous.live and is_file_key(previous.key):
            if record.live and previous.key != record.key:
                if self.ctx.mode.receives:
                    self._follow_rename(previous.key, record.key, record.uuid)
                else:  # send-only: followed (and acknowledged) once the mode receives
                    self.out_of_sync.update((previous.key, record.key))
                followed = True
            elif record.deleted:
                self.delete_local(previous.key)
        if is_file_key(record.key):
            self.ctx.dirty.add(record.key)
        if previous is not None and previous.key != record.key:
            self.ctx.dirty.add(previous.key)
        return followed

    def _follow_rename(self, old: str, new: str, uuid: str) -> None:
        """A peer renamed record ``uuid`` from ``old`` to ``new``: move the file too.

        Acknowledged to the replica once done (:meth:`Replica.acted_on`); a
        crash before that is followed at the next start (:meth:`_plan_everything`).
        """
        local = self.ctx.local
        cached = local.cache.get(old)
        try:
            if cached is None or local.selection.ignore.excludes(old, cached.is_dir):
                return  # nothing here, or a local-only file: a peer's rename leaves it be
            if new in local.cache or not local.selection.fetches(new, cached.is_dir) \
                    or not local.selection.in_subtree(new):
                # Nothing to move it to (the new name is filled already, or not
                # kept here): the record left ``old``, so its file goes.
                self.delete_local(old)
                return
            try:
                local.store.rename_local(old, new)
            except (DirectoryError, OSError) as exc:
                log.info("could not follow the rename of %s to %s: %s", old, new, exc)
        finally:
            self._followed.append((uuid, old))

    def _follow_departures(self) -> None:
        """At start: follow the peers' renames a crash kept us from acting on."""
        replica = self.ctx.replica
        if not self.ctx.mode.receives:
            return  # send-only: left for when the mode receives again
        for uuid, old in replica.departures():
            current = replica.get_uuid(uuid)
            if current is not None and current.live and current.key != old \
                    and is_file_key(old) and is_file_key(current.key) \
                    and self.check_record(current) is not None:
                self._follow_rename(old, current.key, uuid)
                continue
            if is_file_key(old):
                self.delete_local(old)  # renamed, then deleted or renamed back: checked there
            self._followed.append((uuid, old))
        self._acknowledge()

    def _acknowledge(self) -> None:
        """Tell the replica which departures were acted on (one transaction)."""
        if self._followed:
            followed, self._followed = self._followed, []
            self.ctx.replica.acted_on(followed)

    def delete_local(self, key: str) -> None:
        """A record went: archive and remove its file, unless it changed unseen."""
        local = self.ctx.local
        cached = local.cache.get(key)
        if self.ctx.replica.get(key) is not None or cached is None:
            return
        if not local.selection.in_subtree(key) or key == local.mapper.root_key() \
                or local.selection.ignore.excludes(key, cached.is_dir) or not self._may_plan(key):
            return
        if self._held(key, None):
            return
        if not self.ctx.mode.receives:
            self.out_of_sync.add(key)
            return
        try:
            local.store.delete(key)
            if self.ctx.report.held_back:
                self.retry_held_back()  # the deletion freed space
        except LocalChangeConflict as exc:
            self.ctx.report.notice(key, f"not deleted: {exc.reason} (it will be sent as a "
                                        f"new file)")
        except (DirectoryError, OSError) as exc:
            log.warning("could not delete %s: %s", key, exc)

    # -- planning ----------------------------------------------------------------------

    def start(self) -> None:
        """Reconcile the disk with the records as they stand before any peer's change
        is applied (the first full plan: crashes cut short renames and landings)."""
        if self._full_plan:
            self.plan_dirty()

    def plan_dirty(self) -> None:
        """Plan every dirty key (all of them once, at start)."""
        ctx = self.ctx
        if self._full_plan:
            self._full_plan = False
            self._plan_everything()
        while ctx.dirty:
            keys = sorted(ctx.dirty)  # parents before children, and a fixed order
            ctx.dirty.clear()
            for key in keys:
                self._plan(key)

    def _plan_everything(self) -> None:
        self._follow_departures()  # first: a move, not a copy, fills the new names
        deleted: list[str] = []
        for record in self.ctx.replica.records(include_deleted=True):
            if not is_file_key(record.key):
                continue
            if record.deleted:
                deleted.append(record.key)
            else:
                self.ctx.dirty.add(record.key)
        for key in sorted(deleted, key=lambda k: -k.count("/")):
            if key not in self.ctx.dirty:
                self.delete_local(key)

    def replan_all(self) -> None:
        """Plan every record again (the selection or the mode changed)."""
        self._full_plan = True
        self.out_of_sync.clear()

    def _may_plan(self, key: str) -> bool:
        """False (and ``key`` planned after the next scan) while no ignore file was read."""
        if not self.ctx.changes.ignore.loaded:
            self.after_scan.add(key)
            return False
        return True

    def _held(self, key: str, record: Record | None) -> bool:
        """Receive-only: a local change at ``key`` is kept until a peer changes the record."""
        return self.ctx.changes.unsent.holds(key, record)

    def _frozen(self, key: str) -> bool:
        """Send-only: ``key`` is not made to match its record; listed as out of sync."""
        if self.ctx.mode.receives:
            return False
        self.out_of_sync.add(key)
        return True

    def _plan(self, key: str) -> None:
        ctx = self.ctx
        sel = ctx.local.selection
        if not is_file_key(key) or not sel.in_subtree(key):
            return
        record = ctx.replica.get(key)
        value = self.check_record(record) if record is not None else None
        if record is None or value is None or not sel.fetches(key, value.is_directory):
            self.conflict_keys.discard(key)
            if record is not None or key not in ctx.local.cache or ctx.mode.receives:
                self.out_of_sync.discard(key)  # else: a peer deleted it, send-only kept it
            ctx.report.release(key)
            self.unwant(key)
            return
        if not self._may_plan(key) or self._held(key, record):
            self.unwant(key)
            return
        if record.value.get("conflict_source"):
            self.conflict_keys.add(key)
        else:
            self.conflict_keys.discard(key)
        cached = ctx.local.cache.get(key)
        if value.is_directory:
            self.unwant(key)
            if cached is not None and cached.is_dir:
                self.out_of_sync.discard(key)
            elif not self._frozen(key):
                try:
                    ctx.local.store.make_directory(key, value)
                except PathError as exc:
                    ctx.report.reject(record, str(exc))
                except (DirectoryError, OSError) as exc:
                    ctx.report.fail(key, str(exc))
            return
        if cached is not None and not cached.is_dir and cached.sha256 == value.sha256:
            self.unwant(key)
            self.out_of_sync.discard(key)
            ctx.report.release(key)
            if ctx.mode.receives and value.unix_mode is not None and (
                    value.unix_mode & _MODE_BITS) != (cached.mode & _MODE_BITS) \
                    and record.last_updated_by != ctx.replica.peer_id:
                self._apply_mode(key, value.unix_mode & _MODE_BITS, cached)
            return
        if ctx.local.store.adopt(key, value):
            # Already here, unrecorded: a landing a crash cut short (or the same
            # bytes put there by hand). Not a local edit, nothing to fetch.
            self.unwant(key)
            ctx.report.release(key)
            return
        if self._frozen(key):
            self.unwant(key)
            return
        if (record.uuid, record.dot) in ctx.conflicts.kept and \
                ctx.local.store.changed_unseen(key):
            # Kept aside (or given up): the user's change, not yet scanned,
            # supersedes it. Planned again after the next scan pass.
            self.unwant(key)
            self.after_scan.add(key)
            return
        self._want(key, value, record)

    def _apply_mode(self, key: str, mode: int, cached: CachedEntry) -> None:
        """A peer changed only the permission bits: set them (never set-uid/gid/sticky)."""
        local = self.ctx.local
        try:
            with local.mapper.locate(key) as loc:
                fd = os.open(loc.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                             | os.O_NONBLOCK, dir_fd=loc.dir_fd)
                try:
                    info = os.fstat(fd)
                    if not stat.S_ISREG(info.st_mode) or (
                            info.st_size, info.st_mtime_ns, info.st_ino) != (
                            cached.size, cached.mtime_ns, cached.inode):
                        return  # changed locally: the scan will report it
                    os.fchmod(fd, mode)
                    info = os.fstat(fd)
                finally:
                    os.close(fd)
        except (DirectoryError, OSError) as exc:
            log.info("could not set the mode of %s: %s", key, exc)
            return
        local.cache.put(dataclasses.replace(
            cached, mode=stat.S_IMODE(info.st_mode), ctime_ns=info.st_ctime_ns))
        local.cache.commit()

    def _want(self, key: str, value: FileValue, record: Record) -> None:
        assert value.sha256 is not None and value.size is not None
        ctx = self.ctx
        sha = value.sha256
        if self.key_want.get(key) not in (None, sha):
            self.unwant(key)
        cached = ctx.local.cache.get(key)
        try:
            ctx.local.store.check_limits(value.size, replacing=cached.size if cached else 0)
        except StorageLimitError as exc:
            ctx.landing.failed(exc, key, sha)
            return
        ctx.report.held_back.pop(key, None)
        if value.size == 0 or self.copy_local(key, value):
            if value.size == 0:
                ctx.landing.put_empty(key, value)
            return
        want = self.wants.get(sha)
        if want is None:
            want = self.wants[sha] = Want(sha, value.size)
        want.keys[key] = None
        self.key_want[key] = sha
        if not ctx.fetcher.is_active(sha) and sha not in self.delayed:
            self.queue.add(sha)

    def unwant(self, key: str) -> None:
        """``key`` no longer needs the content it wanted."""
        sha = self.key_want.pop(key, None)
        if sha is None:
            return
        want = self.wants.get(sha)
        if want is None:
            return
        want.keys.pop(key, None)
        if not want.keys and not self.ctx.fetcher.is_active(sha):
            self.drop_want(sha)

    def drop_want(self, sha: str) -> None:
        """Forget content ``sha`` altogether (placed, or no key needs it)."""
        want = self.wants.pop(sha, None)
        if want is not None:
            for key in want.keys:
                if self.key_want.get(key) == sha:
                    del self.key_want[key]
        self.queue.discard(sha)
        self.delayed.pop(sha, None)
        self.refused.pop(sha, None)

    def wanted_value(self, key: str, sha: str) -> FileValue | None:
        """The record's value at ``key`` if it still wants content ``sha``."""
        record = self.ctx.replica.get(key)
        if record is None or not self.ctx.local.selection.fetches(key, False):
            return None
        value = self.check_record(record)
        return value if value is not None and value.sha256 == sha else None

    def still_wants(self, key: str, sha: str) -> bool:
        """Whether the record at ``key`` still wants content ``sha``."""
        return self.wanted_value(key, sha) is not None

    def copy_local(self, key: str, value: FileValue) -> bool:
        """Deduplication: fill ``key`` from identical content already held here.

        True when done, or when it failed for a reason a download would hit too.
        """
        assert value.sha256 is not None
        local = self.ctx.local
        if not [e for e in local.cache.find_sha256(value.sha256) if e.key != key] and \
                not local.archive.find_sha256(value.sha256):
            return False
        try:
            result = local.store.copy_local(key, value)
        except (PathError, StorageLimitError) as exc:
            self.ctx.landing.failed(exc, key, value.sha256)
            return True
        except (DirectoryError, OSError) as exc:
            log.info("local copy into %s failed: %s", key, exc)
            return False
        if result is None:
            return False
        self.ctx.report.count("files_copied")
        return True

    # -- retries -----------------------------------------------------------------------

    def retry_later(self, sha: str, delay: float | None = None) -> None:
        """Do not fetch ``sha`` again before a back-off delay (doubling per failure)."""
        want = self.wants.get(sha)
        if want is None:
            return
        want.failures += 1
        if delay is None:
            delay = min(RETRY_MAX, RETRY_BASE * 2 ** (want.failures - 1))
        want.not_before = self.ctx.now + delay
        self.queue.discard(sha)
        self.delayed[sha] = want.not_before

    def requeue(self, sha: str, at: float | None = None) -> None:
        """Make a want ready again (now, or at ``at``) if it is still wanted."""
        if sha not in self.wants:
            return
        if at is None or at <= self.ctx.now:
            self.queue.add(sha)
        else:
            self.delayed[sha] = at

    def presence_changed(self) -> None:
        """A peer's presence changed: wants waiting for a peer may now be fetched."""
        self.queue.wake()
        for sha in self.refused:
            if sha in self.wants and not self.ctx.fetcher.is_active(sha):
                self.queue.add(sha)
        self.refused.clear()

    def due(self, now: float) -> None:
        """Move the delayed and refused wants whose time came back to the queue."""
        for book in (self.refused, self.delayed):
            for sha, at in list(book.items()):
                if at <= now:
                    del book[sha]
                    if sha in self.wants and not self.ctx.fetcher.is_active(sha):
                        self.queue.add(sha)
        if self._held_retry_at is not None and self._held_retry_at <= now:
            self.retry_held_back()

    def scanned(self) -> None:
        """A scan pass ended: plan again the keys that waited for it."""
        self.ctx.dirty.update(self.after_scan)
        self.after_scan.clear()

    def retry_held_back(self) -> None:
        """Space may have freed: plan the held-back downloads again."""
        self._held_retry_at = None
        self.ctx.dirty.update(self.ctx.report.held_back)

    def held_back(self) -> None:
        """A download was held back by a limit: look again in ``HELD_BACK_RETRY`` seconds."""
        if self._held_retry_at is None:
            self._held_retry_at = self.ctx.now + HELD_BACK_RETRY

    def deadline(self) -> float | None:
        """The earliest retry time, or ``None``."""
        times = list(self.delayed.values()) + list(self.refused.values())
        if self._held_retry_at is not None:
            times.append(self._held_retry_at)
        return min(times) if times else None

    # -- status ------------------------------------------------------------------------

    def unavailable(self) -> list[dict[str, str]]:
        """Wanted files that no connected peer claims, with the reason."""
        out: list[dict[str, str]] = []
        for sha in sorted(self.queue.waiting | set(self.refused)):
            want = self.wants.get(sha)
            reason = ("every connected peer said it does not have it"
                      if sha in self.refused else "no connected peer has it")
            for key in (want.keys if want is not None else ()):
                out.append({"key": key, "sha256": sha, "reason": reason})
        return out

"""Conflicts: keeping both versions when two peers changed the same file.

Theory of operation
-------------------
**Concurrent writes.** The database picks a winner by its rule; the peer that
wrote the losing version keeps the loser's content as a ``CONFLICT`` copy
with ``conflict_source`` (the original ``uuid``) and syncs it like any file.
Only that peer acts (``loser.last_updated_by`` is our peer ID), so the copy
is made once, not once per peer.

**A remote version arriving over an unseen local change.** When a download
is about to replace a file the user changed since the last scan, the remote
version is kept as a ``CONFLICT`` copy instead (the draft: "this would result
in a conflict being created once the remote file has finally downloaded");
the user's change is sent by the next scan. The copy is announced to every
peer, the one it came from included (that peer may have overwritten its own
copy meanwhile).

**A local change scanned while a newer remote version is still on its way.**
Writing the change at once would silently supersede that version; writing a
conflict record for it would promise content we do not hold (a peer that
then overwrites it leaves everyone waiting for bytes nobody has). So a
conflict copy is only ever recorded with its content in hand: if the remote
content is already here (an identical file or an archived version) it is
copied aside now; otherwise the local change is *deferred* -- not recorded,
and left unrecorded in the scan cache so the download meets it as a local
change and keeps the remote version as above, after which the next scan
records the user's change. If no connected peer can provide that version,
it is *given up*: a notice names it, and the user's change is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from csembed.database import Conflict, ConflictKind, LocalWriteError, Record
from csembed.directory.errors import DirectoryError, PathError, RecordError, StorageLimitError
from csembed.directory.filestore import Download
from csembed.directory.record_keys import split_key
from csembed.directory.records import FileValue, is_file_key
from csembed.directory.sync_context import SyncContext

log = logging.getLogger("csembed.sync")

MAX_DEFERRED = 4096  #: local changes waiting for the remote version they follow
REFUSED_GIVE_UP = 600.0  #: seconds a deferred change waits for a version peers refuse


class Conflicts:
    """Conflict copies: made after a database conflict, or around an unseen change."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.kept: set[tuple[str, tuple[str, int]]] = set()  #: remote versions settled
        #: key -> (uuid, dot, sha256, since): the version a deferred local change follows
        self.deferred: dict[str, tuple[str, tuple[str, int], str, float]] = {}

    def local_write(self, write: Callable[[], Any]) -> bool:
        """Run one replica write and route its messages; False if the replica refused."""
        try:
            written = write()
        except LocalWriteError as exc:
            log.warning("local write failed: %s", exc)
            return False
        self.ctx.route(written.outgoing)
        return True

    # -- concurrent writes ---------------------------------------------------------------

    def on_conflict(self, event: Conflict) -> None:
        """The database resolved a conflict: keep our losing content as a copy."""
        ctx = self.ctx
        ctx.report.count("conflicts")
        winner, loser = event.winner, event.loser
        if ctx.read_only or loser.last_updated_by != ctx.replica.peer_id:
            return  # the peer that wrote the loser keeps it
        if loser.deleted or not is_file_key(loser.key):
            return
        try:
            split_key(loser.key)
            lost = FileValue.from_json(loser.value)
        except (PathError, RecordError):
            return
        now_ns = ctx.now_ns
        won: FileValue | None = None
        if winner.live:
            try:
                won = FileValue.from_json(winner.value)
            except RecordError:
                won = None
        same_key = event.kind is ConflictKind.SAME_KEY
        if lost.is_directory or (won is not None and won.same_content(lost)
                                 and winner.key == loser.key):
            if same_key:  # two records for one folder or one content: drop ours
                self.local_write(lambda: ctx.replica.local_delete(
                    loser.key, now_ns, uuid=loser.uuid))
            return
        key = loser.key
        cached = ctx.local.cache.get(key)
        if cached is None or cached.is_dir or cached.sha256 != lost.sha256:
            return  # the losing content is no longer here to keep
        store = ctx.local.store
        try:
            aside = store.conflict_key(key)
            store.rename_local(key, aside)
        except (DirectoryError, OSError) as exc:
            log.warning("conflict on %s: could not keep our version: %s", key, exc)
            return
        value = dict(loser.value)
        value["conflict_source"] = winner.uuid if same_key else loser.uuid
        log.info("conflict on %s: our version kept as %s", key, aside)
        ctx.report.notice(key, f"conflict: the other version won; ours was kept as {aside}")
        if same_key:
            self.local_write(lambda: ctx.replica.local_put(aside, value, now_ns,
                                                           uuid=loser.uuid))
        else:
            self.local_write(lambda: ctx.replica.local_put(aside, value, now_ns))
        ctx.dirty.add(key)

    # -- a remote version over an unseen local change ------------------------------------

    def keep_remote(self, download: Download, key: str) -> bool:
        """The target changed unseen: keep the verified remote version as a CONFLICT copy.

        True when it is in place (under another name); False when it waits.
        """
        ctx = self.ctx
        if ctx.read_only:
            # The scan will move the user's change aside; the verified temp waits.
            download.abort(keep_partial=True)
            ctx.report.notice(key, "changed locally while a new version was downloading")
            ctx.planner.retry_later(download.sha256,
                                    delay=2 * ctx.local.scanner.debouncer.settle + 1)
            ctx.changes.request_scan()
            return False
        record = ctx.replica.get(key)
        try:
            aside = ctx.local.store.conflict_key(key)
            download.commit(aside)
        except (DirectoryError, OSError) as exc:
            download.abort(keep_partial=False)
            ctx.report.fail(key, f"could not keep the remote version: {exc}")
            return False
        if record is not None:
            self._record_copy(record, aside)
        ctx.report.notice(key, f"changed locally while a new version was downloading; the "
                               f"new version was kept as {aside}")
        ctx.planner.after_scan.add(key)  # if the scan finds no change there after all
        ctx.changes.request_scan()
        return True

    def _record_copy(self, record: Record, aside: str) -> None:
        """Record ``aside`` as the conflict copy of ``record`` (its content is held)."""
        ctx = self.ctx
        self.kept.add((record.uuid, record.dot))
        self.deferred.pop(record.key, None)
        value = dict(record.value)
        value["conflict_source"] = record.uuid
        now_ns = ctx.now_ns
        self.local_write(lambda: ctx.replica.local_put(aside, value, now_ns))

    # -- a local change scanned while a remote version is on its way ---------------------

    def unseen_remote(self, key: str, previous: FileValue | None) -> Record | None:
        """The record at ``key`` if it holds remote content this disk never had."""
        ctx = self.ctx
        current = ctx.replica.get(key)
        if current is None or current.last_updated_by == ctx.replica.peer_id:
            return None
        value = ctx.planner.check_record(current)
        if value is None or value.is_directory or value.size == 0:
            return None
        if previous is not None and previous.sha256 == value.sha256:
            return None
        if (current.uuid, current.dot) in self.kept:
            return None  # kept as a conflict copy already, or given up
        return current

    def keep_unseen(self, record: Record) -> bool:
        """A local change follows ``record``'s unseen version: True when it may be written.

        The version is copied aside now when its content is here; else the
        change is deferred (False) until the download keeps it, or until no
        peer can provide it.
        """
        ctx = self.ctx
        value = ctx.planner.check_record(record)
        assert value is not None and value.sha256 is not None
        version = (record.uuid, record.dot)
        local = ctx.local
        if [e for e in local.cache.find_sha256(value.sha256) if e.key != record.key] or \
                local.archive.find_sha256(value.sha256):
            try:
                aside = local.store.conflict_key(record.key)
                if local.store.copy_local(aside, value) is not None:
                    self._record_copy(record, aside)
                    ctx.announce(value.sha256)
                    ctx.report.notice(record.key, f"changed here before the version from a "
                                                  f"peer arrived; that version is kept as "
                                                  f"{aside}")
                    return True
            except (DirectoryError, StorageLimitError, OSError) as exc:
                log.info("could not copy the peer's version of %s aside: %s", record.key, exc)
        earlier = self.deferred.get(record.key)
        if earlier is None or earlier[:3] != (*version, value.sha256):
            ctx.report.notice(record.key, "changed here while a newer version from a peer "
                                          "was on its way; the change is recorded once that "
                                          "version is kept as a conflict copy")
            earlier = (*version, value.sha256, ctx.now)
        self.deferred[record.key] = earlier
        while len(self.deferred) > MAX_DEFERRED:
            self._give_up(next(iter(self.deferred)), "too many changes waiting")
        sha, planner = value.sha256, ctx.planner
        if sha in planner.refused:
            self.unobtainable(sha, refused=True)
            return record.key not in self.deferred
        if ctx.fetcher.is_active(sha) or ctx.landing.holds(sha) or sha in planner.delayed or (
                sha in planner.queue and sha not in planner.queue.waiting):
            return False  # on its way
        self._give_up(record.key, "no connected peer has it")
        return True

    def unobtainable(self, sha: str, *, refused: bool) -> None:
        """No connected peer has ``sha`` (or all said so): give up the deferred versions
        that need it -- at once when no peer claims it, after ``REFUSED_GIVE_UP``
        seconds of refusals."""
        for key, (_uuid, _dot, wanted, since) in list(self.deferred.items()):
            if wanted != sha:
                continue
            if not refused:
                self._give_up(key, "no connected peer has it")
            elif self.ctx.now - since >= REFUSED_GIVE_UP:
                self._give_up(key, f"the peers said they do not have it for "
                                   f"{REFUSED_GIVE_UP:.0f} s")

    def _give_up(self, key: str, reason: str) -> None:
        uuid, dot, _sha, _since = self.deferred.pop(key)
        self.kept.add((uuid, dot))
        log.warning("the peer's version of %s was given up: %s", key, reason)
        self.ctx.report.notice(key, f"the version from a peer that this change followed "
                                    f"could not be fetched ({reason}); it was given up and "
                                    f"the local change recorded over it")
        self.ctx.planner.after_scan.add(key)
        self.ctx.changes.request_scan()

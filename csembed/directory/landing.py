"""Landing: verify a finished download, put it in place (in batches), and the failure ladder.

Theory of operation
-------------------
Every file is verified against its SHA-256 before it replaces anything, and
before it is put in place the record is looked up again, so a download made
stale by a newer change is never committed (it goes to another key that
wants the same content, or is dropped).

**Batches.** A verified download for its own key waits briefly to be put in
place together with others (:meth:`FileStore.commit_batch`: one data sync
and one folder sync for the lot instead of two per file): the batch lands
when it holds ``LANDING[write_policy][0]`` files, when no other transfer is
running, or ``LANDING[write_policy][1]`` seconds after its first file
(:meth:`Landing.deadline`); ``flash`` boards wait longer. Until then the file
counts as still syncing. Folder syncs deferred by ``flash`` are flushed
``FLUSH_DELAY`` seconds after a file landed.

**One failure ladder** (:meth:`Landing.failed`) for every way beginning,
writing, verifying or placing a download can fail: content that does not
match (the peer is not asked again for it, the want retried elsewhere); a
path that cannot be taken (the record is rejected); a storage limit (the
key is *held back* and retried when space frees); any other disk error
(partial kept, retried with back-off). A target the user changed unseen
(:class:`LocalChangeConflict`) is not a failure: :mod:`.conflicts` keeps
the remote version as a conflict copy.
"""

from __future__ import annotations

import logging

from csembed.directory.errors import (
    DirectoryError,
    LocalChangeConflict,
    PathError,
    StorageLimitError,
    VerificationError,
)
from csembed.directory.filestore import CommitResult, Download
from csembed.directory.records import FileValue
from csembed.directory.sync_context import SyncContext
from csembed.directory.transfer_fetch import Transfer

log = logging.getLogger("csembed.sync")

FLUSH_DELAY = 1.0  #: seconds a deferred folder sync may wait (write policy ``flash``)
#: verified downloads put in place together (shared syncs), by write policy:
#: (most at once, longest wait in seconds while other transfers still run)
#: Each waiting file holds two descriptors (its temp and its folder), so a
#: batch is capped at 128 files; past about a hundred the shared syncs cost
#: little per file anyway.
LANDING = {"normal": (128, 0.1), "flash": (128, 0.25)}


class Landing:
    """Verified downloads waiting to be placed, and placing them."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self._waiting: list[tuple[Download, Transfer | None]] = []
        self._shas: set[str] = set()
        self._land_at: float | None = None
        self._flush_at: float | None = None

    def holds(self, sha: str) -> bool:
        """Whether content ``sha`` is verified and waiting to land."""
        return sha in self._shas

    def __len__(self) -> int:
        return len(self._waiting)

    def keys(self) -> list[str]:
        """Keys of the verified downloads waiting to land."""
        return [download.key for download, _ in self._waiting]

    # -- the failure ladder --------------------------------------------------------------

    def failed(self, exc: Exception, key: str, sha: str, *, download: Download | None = None,
               transfer: Transfer | None = None) -> None:
        """Handle a failure to begin, write, verify or place ``sha`` at ``key``."""
        ctx = self.ctx
        if transfer is not None:
            ctx.fetcher.stop(transfer)
        if isinstance(exc, VerificationError):
            if download is not None:
                download.abort(keep_partial=False)
            ctx.fetcher.verification_failed(sha, transfer, str(exc))
        elif isinstance(exc, PathError):
            if download is not None:
                download.abort(keep_partial=False)
            ctx.planner.reject_key(key, str(exc))
            ctx.planner.unwant(key)
            ctx.planner.requeue(sha)  # for the other keys with this content, if any
        elif isinstance(exc, StorageLimitError):
            if download is not None:
                download.abort(keep_partial=False)
            ctx.report.hold_back(key, exc)
            ctx.planner.held_back()
            ctx.planner.unwant(key)
            ctx.planner.requeue(sha)
        else:
            if download is not None:
                download.abort(keep_partial=True)
            ctx.report.fail(key, str(exc))
            ctx.planner.retry_later(sha)

    def _placed_or_failed(self, result: CommitResult | Exception, download: Download,
                          key: str, sha: str, targets: list[str],
                          transfer: Transfer | None) -> bool:
        """The outcome of placing ``download`` at ``key``: True when it is in place."""
        conflict = False
        if isinstance(result, LocalChangeConflict):
            if not self.ctx.conflicts.keep_remote(download, key):
                return False
            conflict = True
        elif isinstance(result, Exception):
            self.failed(result, key, sha, download=download)
            return False
        self._placed(key, sha, targets, transfer, announce_to_source=conflict)
        if transfer is not None:
            self.ctx.fetcher.count_fetched(transfer)
        return True

    # -- placing -------------------------------------------------------------------------

    def commit(self, download: Download, sha: str, keys: list[str],
               transfer: Transfer | None) -> None:
        """Verify and put the file in place at a key that still wants it.

        A download for its own key is only verified here and joins the
        landing batch (:meth:`land`).
        """
        planner = self.ctx.planner
        if download.key in keys and sha not in self._shas:
            self._queue(download, sha, transfer)  # land() looks the record up again
            return
        targets = [k for k in keys if planner.still_wants(k, sha)]
        if not targets:
            download.abort(keep_partial=False)
            planner.drop_want(sha)
            return
        key = download.key if download.key in targets else targets[0]
        result: CommitResult | Exception
        try:
            result = download.commit(None if key == download.key else key)
        except (DirectoryError, OSError) as exc:
            result = exc
        self._placed_or_failed(result, download, key, sha, targets, transfer)

    def put_empty(self, key: str, value: FileValue) -> None:
        """An empty file needs no transfer: write it in place."""
        sha = value.sha256 or ""
        try:
            download = self.ctx.local.store.begin(key, value)
        except (DirectoryError, OSError) as exc:
            self.failed(exc, key, sha)
            return
        self.commit(download, sha, [key], None)

    def _queue(self, download: Download, sha: str, transfer: Transfer | None) -> None:
        """Verify now; put in place with the next batch (shared syncs)."""
        try:
            download.verify()
        except (DirectoryError, OSError) as exc:
            self.failed(exc, download.key, sha, download=download, transfer=transfer)
            return
        self._waiting.append((download, transfer))
        self._shas.add(sha)
        most, wait = LANDING.get(self.ctx.local.store.write_policy, LANDING["normal"])
        if len(self._waiting) >= most or not self.ctx.fetcher.active:
            self.land()
        elif self._land_at is None:
            self._land_at = self.ctx.now + wait

    def land(self) -> None:
        """Put the verified downloads waiting in place, as one batch."""
        ctx, planner = self.ctx, self.ctx.planner
        self._land_at = None
        if not self._waiting:
            return
        batch, self._waiting = self._waiting, []
        self._shas.clear()
        ready: list[tuple[Download, Transfer | None]] = []
        for download, transfer in batch:
            sha = download.sha256
            if planner.still_wants(download.key, sha):
                ready.append((download, transfer))
                continue
            # The record moved on while the batch waited: another key, or nowhere.
            want = planner.wants.get(sha)
            others = [k for k in (want.keys if want is not None else ()) if k != download.key]
            self.commit(download, sha, others, transfer)
        if not ready:
            return
        results: list[CommitResult | DirectoryError | OSError]
        try:
            results = ctx.local.store.commit_batch([d for d, _ in ready])
        except OSError as exc:  # syncing the folders failed: retry them all
            results = [exc] * len(ready)
        for (download, transfer), result in zip(ready, results, strict=True):
            sha, key = download.sha256, download.key
            want = planner.wants.get(sha)
            targets = [key] + [k for k in (want.keys if want is not None else ())
                               if k != key and planner.still_wants(k, sha)]
            self._placed_or_failed(result, download, key, sha, targets, transfer)

    def _placed(self, key: str, sha: str, targets: list[str], transfer: Transfer | None,
                *, announce_to_source: bool = False) -> None:
        """``sha`` is in place at ``key``: announce it, fill the other keys wanting it.

        A conflict copy is announced to the peer the content came from too:
        that peer may no longer hold the version it sent (it is the one peer
        whose copy of this record the copy stands for).
        """
        ctx = self.ctx
        ctx.report.failures.pop(key, None)
        if self._flush_at is None:
            self._flush_at = ctx.now + FLUSH_DELAY  # flash boards: folder syncs batched
        ctx.planner.drop_want(sha)
        source = transfer.conn_id if transfer is not None and not announce_to_source else None
        ctx.announce(sha, source)
        for other in targets:
            if other != key:
                value = ctx.planner.wanted_value(other, sha)
                if value is not None and not ctx.planner.copy_local(other, value):
                    ctx.dirty.add(other)

    # -- timers --------------------------------------------------------------------------

    def due(self, now: float) -> None:
        """Land a batch whose wait is over; flush deferred folder syncs."""
        if self._land_at is not None and self._land_at <= now:
            self.land()
        if self._flush_at is not None and self._flush_at <= now:
            self._flush_at = None
            self.ctx.local.store.flush()

    def deadline(self) -> float | None:
        """When :meth:`due` should next run."""
        times = [t for t in (self._land_at, self._flush_at) if t is not None]
        return min(times) if times else None

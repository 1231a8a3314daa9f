"""What the sync engine tells the user: its state, and every file it could not sync and why.

Theory of operation
-------------------
The engine's parts record what went wrong as it happens (a :class:`SyncReport`
is shared by all of them); :meth:`ShareEngine.status` then adds the live
figures (wants, transfers, peers) through :func:`status_view`. Every list is
bounded (``MAX_REPORTED`` entries, oldest dropped), so a hostile peer cannot
grow the report.

``status()`` keys (the daemon's ``status`` command shows them; a share is
*synced* only when ``complete`` is true):

``state``
    ``error`` (``reason`` says why), ``scanning``, ``syncing`` (files are
    being fetched or wait for a peer that may have them), ``incomplete``
    (nothing is moving, but files are held back by a limit or no connected
    peer has them) or ``idle`` (holds everything it should).
``reason``
    The share-wide error, or ``None``.
``complete``
    True when the share holds every file its records and selection call
    for: nothing wanted, fetched, waiting to land, held back or unavailable.
``files_to_sync`` / ``bytes_to_sync`` / ``transfers`` / ``waiting_for_peers`` / ``peers``
    Files wanted (all keys), bytes still to fetch, transfers running,
    wanted contents no connected peer claims, connected peers.
``held_back``
    Files not downloaded because of a storage limit: ``key``, ``limit``
    (``max_file_size``, ``quota``, ``free_space_reserve``, ``disk_full``) and
    ``message``. They are retried when space frees (a timer, and after local
    deletions). ``limits`` is the same list, kept under its older name.
``unavailable``
    Keys of wanted files that no connected peer has (``key``, ``sha256``,
    ``reason``), and versions given up: a version that no peer could provide
    is named here with a notice, never waited for in silence.
``conflicts``
    Keys of the conflict copies (``*.CONFLICT.*``) the share holds.
``rejected``
    Records from peers that were refused (``uuid``, ``key``, ``reason``,
    ``peer``); nothing on disk was touched for them.
``failures``
    Files whose last attempt failed (``key``, ``reason``); retried.
``notices``
    Things the user should know (``key``, ``reason``): local changes on a
    read-only share, conflict copies made, versions given up, skipped files.
``last_scan_seconds``
    Wall time of the last scan pass.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from csembed.database import Record
from csembed.directory.errors import StorageLimitError

log = logging.getLogger("csembed.sync")

MAX_REPORTED = 200  #: entries kept in each status list


class SyncReport:
    """Errors, limits, rejections, notices, failures and counters of one share."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.held_back: dict[str, dict[str, str]] = {}
        self.rejected: deque[dict[str, str]] = deque(maxlen=MAX_REPORTED)
        self.notices: deque[dict[str, str]] = deque(maxlen=MAX_REPORTED)
        self.failures: dict[str, dict[str, str]] = {}
        self.counters = {"files_fetched": 0, "bytes_fetched": 0, "files_copied": 0,
                         "files_rsync": 0, "payload_received": 0, "payload_sent": 0,
                         "scans": 0, "local_changes": 0, "conflicts": 0}

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        self.counters[name] += n

    def set_error(self, reason: str) -> None:
        """The share as a whole cannot sync (its folder is gone, ...)."""
        if self.error != reason:
            log.error("share error: %s", reason)
        self.error = reason

    def notice(self, key: str, reason: str) -> None:
        """Something the user should know about ``key``."""
        entry = {"key": key, "reason": reason}
        if entry not in self.notices:
            self.notices.append(entry)

    def hold_back(self, key: str, exc: StorageLimitError) -> None:
        """``key`` is not downloaded because of a storage limit (retried later)."""
        if self.held_back.get(key, {}).get("message") != str(exc):
            log.warning("not downloading %s: %s", key, exc)
        self.held_back.pop(key, None)
        self.held_back[key] = {"key": key, "limit": exc.limit, "message": str(exc)}
        while len(self.held_back) > 4 * MAX_REPORTED:
            del self.held_back[next(iter(self.held_back))]

    def release(self, key: str) -> None:
        """``key`` is no longer held back or failing."""
        self.held_back.pop(key, None)
        self.failures.pop(key, None)

    def fail(self, key: str, reason: str) -> None:
        """The last attempt at ``key`` failed (it is retried)."""
        self.failures[key] = {"key": key, "reason": reason}
        while len(self.failures) > MAX_REPORTED:
            del self.failures[next(iter(self.failures))]

    def reject(self, record: Record, reason: str) -> None:
        """A peer's record was refused."""
        log.warning("rejected record %s (key %r) from %s: %s", record.uuid, record.key[:200],
                    record.last_updated_by, reason)
        self.rejected.append({"uuid": record.uuid, "key": record.key[:200],
                              "reason": reason, "peer": record.last_updated_by})

    def reject_update(self, reason: str, conn_id: Any) -> None:
        """A peer's database update was refused before it named a record."""
        self.rejected.append({"uuid": "", "key": "", "reason": reason, "peer": str(conn_id)})


def status_view(report: SyncReport, *, read_only: bool, scanning: bool, files_to_sync: int,
                bytes_to_sync: int, transfers: int, waiting: int, landing: int, peers: int,
                unavailable: list[dict[str, str]], conflicts: list[str],
                last_scan_seconds: float) -> dict[str, Any]:
    """The ``status()`` mapping (keys documented in the module docstring)."""
    held = list(report.held_back.values())
    moving = files_to_sync > len(unavailable) or transfers or landing
    complete = not (files_to_sync or transfers or landing or held or unavailable
                    or report.error)
    if report.error is not None:
        state = "error"
    elif scanning:
        state = "scanning"
    elif moving:
        state = "syncing"
    elif not complete:
        state = "incomplete"
    else:
        state = "idle"
    return {
        "state": state,
        "reason": report.error,
        "read_only": read_only,
        "complete": complete,
        "files_to_sync": files_to_sync,
        "bytes_to_sync": max(0, bytes_to_sync),
        "transfers": transfers,
        "waiting_for_peers": waiting,
        "peers": peers,
        "held_back": held,
        "limits": held,
        "unavailable": unavailable[:MAX_REPORTED],
        "conflicts": conflicts[:MAX_REPORTED],
        "rejected": list(report.rejected),
        "failures": list(report.failures.values()),
        "notices": list(report.notices),
        "last_scan_seconds": last_scan_seconds,
    }

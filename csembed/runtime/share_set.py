"""The daemon's shares: the ones it runs, the attaches waiting for keys, the broken ones.

Theory of operation
-------------------
:class:`ShareSet` holds three collections, all persisted together in
``shares.json``:

* ``shares`` -- share ID -> :class:`OpenShare`: entry, keys, and (when it
  could be opened) its local share, record store and
  :class:`~csembed.runtime.share_runtime.ShareRuntime` running on its own task;
* ``pending`` -- access ID -> :class:`~csembed.runtime.data_dir.PendingAttach`,
  an ``attach`` whose keys have not arrived;
* ``unloadable`` -- shares whose keys cannot be read (reported, never synced).

It opens a share (local state, SQLite store, replica, engine, runtime,
credentials in the registry) and closes it in the reverse order, and checks a
new share's path: not inside or around another share, an attach, or the data
directory. One damaged share never keeps the others from opening.

Each share's local policy (:mod:`csembed.directory.share_policy`: sync mode,
paused) is read when it opens and applied before its runtime first runs;
:meth:`ShareSet.set_policy` stores a new one first and then applies it, so a
restart finds what the user last chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from csembed.board_profile import BoardProfile
from csembed.database import Replica, Store, ed25519_signer, ed25519_verifier
from csembed.directory.engine import ShareEngine
from csembed.directory.errors import DirectoryError
from csembed.directory.local_share import LocalShare, open_local_share
from csembed.directory.share_policy import SharePolicy, SyncMode, load_policy, save_policy
from csembed.errors import CsembedError
from csembed.protocol.core_access import CredentialRegistry
from csembed.runtime.data_dir import DataDir, PendingAttach, ShareEntry
from csembed.runtime.errors import ShareExists, ShareOverlaps
from csembed.runtime.share_runtime import ShareRuntime
from csembed.security.keys import READ_WRITE, ShareKeys

__all__ = ["OpenShare", "ShareSet"]

log = logging.getLogger("csembed.daemon")


@dataclass
class OpenShare:
    """A share the daemon runs (``runtime`` is ``None`` when it cannot be opened)."""

    entry: ShareEntry
    keys: ShareKeys
    runtime: ShareRuntime | None = None
    task: asyncio.Task[None] | None = None
    local: LocalShare | None = None
    store: Store | None = None
    error: str | None = None
    policy: SharePolicy = SharePolicy()  #: sync mode and pause, as stored

    @property
    def syncing(self) -> bool:
        """It runs and is not paused: it may have links, and be announced and dialled."""
        return self.runtime is not None and not self.policy.paused


class ShareSet:
    """Shares, pending attaches and unloadable shares of one daemon."""

    def __init__(self, data: DataDir, registry: CredentialRegistry,
                 board: Callable[[], BoardProfile], scan_budget: float | None = None) -> None:
        self.data = data
        self.registry = registry
        self._board = board
        self._scan_budget = scan_budget
        self.shares: dict[str, OpenShare] = {}
        self.pending: dict[str, PendingAttach] = {}
        self.unloadable: dict[str, tuple[ShareEntry, str]] = {}

    def bytes_in_all_shares(self) -> int:
        """What every open share holds: the board's quota covers them together."""
        return sum(share.local.cache.total_file_bytes()
                   for share in self.shares.values() if share.local is not None)

    def open(self, entry: ShareEntry, keys: ShareKeys, *, create: bool) -> OpenShare:
        """Open and start one share; on failure it is kept with its ``error``."""
        share = OpenShare(entry, keys)
        self.shares[entry.share_id] = share
        board = self._board()
        state = self.data.state_dir(entry.share_id)
        try:
            share.policy = load_policy(state)
            local = open_local_share(entry.path, state, board,
                                     create=create, rng=random.Random(),
                                     usage=self.bytes_in_all_shares)
        except (DirectoryError, OSError) as exc:
            share.error = f"cannot open {entry.path}: {exc}"
            log.error("share %s: %s", entry.path, share.error)
            return share
        try:
            store = Store(self.data.database_path(entry.share_id), peer_id=entry.peer_id,
                          synchronous=board.storage.db_synchronous,
                          checkpoint_pages=board.storage.db_checkpoint_pages,
                          cache_size=board.storage.db_cache)
        except CsembedError as exc:
            local.close()
            share.error = str(exc)
            log.error("share %s: %s", entry.path, exc)
            return share
        writer = keys.level(READ_WRITE)
        read_write = entry.access_level == READ_WRITE and writer.signing_key is not None
        replica = Replica(store, read_only=not read_write,
                          verify=ed25519_verifier(writer.verify_key),
                          sign=ed25519_signer(writer.signing_key) if read_write
                          and writer.signing_key is not None else None,
                          rng=os.urandom)
        engine = ShareEngine(local, replica, board, random.Random())
        engine.ctx.mode = share.policy.mode  # the start: nothing to switch from
        runtime = ShareRuntime(engine, scan_budget=self._scan_budget)
        runtime.paused = share.policy.paused
        share.local, share.store, share.runtime = local, store, runtime
        share.task = asyncio.get_running_loop().create_task(self._run(share))
        self.registry.add_share(keys, entry.peer_id, tag=("share", entry.share_id))
        return share

    async def _run(self, share: OpenShare) -> None:
        assert share.runtime is not None
        try:
            await share.runtime.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in one share must not stop the others
            share.error = f"sync engine failed: {type(exc).__name__}: {exc}"
            log.exception("share %s: sync engine failed", share.entry.path)

    async def close(self, share: OpenShare) -> None:
        """Stop one share's runtime and close its engine, store and local state."""
        if share.runtime is not None:
            share.runtime.stop()
        if share.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                async with asyncio.timeout(10):
                    await share.task
            if not share.task.done():
                share.task.cancel()
        if share.runtime is not None:
            with contextlib.suppress(Exception):
                share.runtime.engine.close()
        if share.store is not None:
            with contextlib.suppress(Exception):
                share.store.close()
        if share.local is not None:
            with contextlib.suppress(Exception):
                share.local.close()
        self.registry.remove_share(share.keys)
        self.shares.pop(share.entry.share_id, None)

    def preset_mode(self, share_id: str, mode: str) -> None:
        """Store the mode a share about to be opened starts in (an attach's choice)."""
        if mode != SharePolicy().mode.value:
            save_policy(self.data.state_dir(share_id), SharePolicy(SyncMode.parse(mode)))

    def set_policy(self, share: OpenShare, policy: SharePolicy) -> None:
        """Store ``policy`` for ``share``, then put it in force."""
        save_policy(self.data.state_dir(share.entry.share_id), policy)
        share.policy = policy
        if share.runtime is not None:
            share.runtime.engine.set_mode(policy.mode, time.time())
            if share.runtime.paused != policy.paused:
                share.runtime.set_paused(policy.paused)
            share.runtime.notify()

    def save(self) -> None:
        """Persist the shares (also the unloadable ones) and the pending attaches."""
        self.data.save_shares([s.entry for s in self.shares.values()]
                              + [entry for entry, _ in self.unloadable.values()],
                              list(self.pending.values()))

    def find(self, path: str) -> OpenShare | None:
        """The share at ``path`` (compared after resolving symbolic links)."""
        real = os.path.realpath(path)
        for share in self.shares.values():
            if share.entry.path in (real, path):
                return share
        return None

    def pending_at(self, path: str) -> PendingAttach | None:
        """The attach waiting at ``path``, if any."""
        real = os.path.realpath(path)
        for attach in self.pending.values():
            if attach.path in (real, path):
                return attach
        return None

    def check_new_path(self, path: str) -> str:
        """The real path for a new share; refuses one that is, or overlaps, a share."""
        real = os.path.realpath(path)
        taken = [s.entry.path for s in self.shares.values()] + \
            [p.path for p in self.pending.values()] + \
            [entry.path for entry, _ in self.unloadable.values()]
        for other in taken:
            if real == other:
                raise ShareExists(f"{real} is already a share")
            if real.startswith(other.rstrip("/") + "/") or other.startswith(real.rstrip("/") + "/"):
                raise ShareOverlaps(f"{real} overlaps the share at {other}")
        data = str(self.data.root)
        if real == data or real.startswith(data + "/") or data.startswith(real.rstrip("/") + "/"):
            raise ShareOverlaps(f"{real} overlaps the data directory {data}")
        return real

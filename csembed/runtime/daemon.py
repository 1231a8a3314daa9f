"""The csembed daemon: shares, connections, discovery and control in one asyncio process.

Theory of operation
-------------------
:class:`Daemon` owns, for the life of the process:

* the **data directory** (:mod:`csembed.runtime.data_dir`): configuration,
  shares and their keys, issued codes, attaches waiting for keys;
* one :class:`~csembed.runtime.share_runtime.ShareRuntime` per share (the
  sync engine on its own task: scans, timers), opened from the share's
  SQLite database and local state;
* the :class:`~csembed.protocol.core_access.CredentialRegistry` every
  incoming handshake is checked against: each share's key IDs, the codes we
  issued (an :class:`~csembed.protocol.core_access.AccessCodeTable` on the
  loop clock, persisted in wall-clock time) and the codes we hold;
* the :class:`~csembed.runtime.connection_manager.ConnectionManager`:
  listening socket, dialling, one link per peer per share, limits;
* **discovery** (:class:`~csembed.runtime.peer_finder.PeerFinder`): tracker,
  LAN broadcast and manual peers, registering every club ID we answer to and
  turning what comes back into the connection manager's dial targets;
* the **control servers** (UNIX socket ``<data dir>/control``, mode 0600, and
  optionally a serial line) with :class:`~csembed.runtime.control_handler.DaemonControl`.

Board profile enforcement: the upload and download token buckets shared by
every link (``network.*_rate``, overridable with ``upload_limit`` /
``download_limit``), ``memory.max_connections`` links at most, and the board
handed to every engine (chunk sizes, bytes in flight, open transfers, quota
and file-size limits, scan interval and budget) and to the core (gzip level,
ping interval, largest message).

A stop (``stop`` command, SIGTERM, SIGINT) closes the links, stops each
runtime and closes its engine (partial downloads stay on disk and resume at
the next start), saves the code table and removes the control socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import random
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csembed import __version__
from csembed.access_code import AccessCode, AccessCodeError
from csembed.board_profile import BoardProfile
from csembed.control.errors import ControlRequestError
from csembed.control.handler import MAX_READ  # largest read_file reply, in bytes
from csembed.database import Replica, Store, ed25519_signer, ed25519_verifier
from csembed.directory.engine import ShareEngine
from csembed.directory.errors import DirectoryError
from csembed.directory.local_share import LocalShare, open_local_share
from csembed.directory.transfer_stream import RemoteStream
from csembed.discovery.lan_broadcast import LAN_PORT
from csembed.errors import CsembedError
from csembed.protocol.core import CoreConfig, Grant, KeysReceived, Ready
from csembed.protocol.core_access import AccessCodeTable, CredentialRegistry, GrantKind
from csembed.runtime.connection_manager import ConnectionManager, Target
from csembed.runtime.data_dir import (
    DataDir,
    DataDirError,
    PendingAttach,
    ShareEntry,
    StoredCode,
    check_config_value,
)
from csembed.runtime.peer_finder import PeerFinder
from csembed.runtime.peer_link import core_config
from csembed.runtime.rate_limit import DaemonRateLimits
from csembed.runtime.reach import ReachConfig
from csembed.runtime.share_runtime import ShareRuntime
from csembed.security.keys import READ_ONLY, READ_WRITE, ShareKeys, new_peer_id

__all__ = ["Daemon", "DaemonError", "DaemonOptions"]

log = logging.getLogger("csembed.daemon")

MAINTENANCE_INTERVAL = 30.0
STREAM_IDLE = 60.0  #: an open remote stream unused this long is closed


class DaemonError(CsembedError):
    """The daemon cannot start or cannot carry out a request."""


@dataclass
class DaemonOptions:
    """How a daemon is started (``csembed daemon``'s options)."""

    data_dir: Path
    board: BoardProfile
    listen: tuple[str, int] = ("0.0.0.0", 40121)
    tracker: tuple[str, int] | None = None  #: overrides the configured tracker
    peers: list[tuple[str, int]] = field(default_factory=list)  #: on top of the configured
    lan: bool = True  #: False: no LAN broadcast whatever the board or config say
    lan_address: str = "255.255.255.255"
    lan_port: int = LAN_PORT
    control_serial: tuple[str, int] | None = None
    scan_budget: float | None = None  #: override the board's (benchmarks)
    reach: ReachConfig = field(default_factory=ReachConfig)  #: uTP, STUN, port mapping


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


class Daemon:
    """One running daemon; see the module docstring. ``await start()``, then
    ``await wait_stopped()``, then ``await close()``."""

    def __init__(self, options: DaemonOptions) -> None:
        self.options = options
        self.board = options.board
        self.data = DataDir(options.data_dir)
        self.config: dict[str, Any] = {}
        self.shares: dict[str, OpenShare] = {}
        self.pending: dict[str, PendingAttach] = {}
        self.unloadable: dict[str, tuple[ShareEntry, str]] = {}  #: shares whose keys fail
        self.codes = AccessCodeTable()
        self._code_meta: dict[str, tuple[str, str, float, int]] = {}
        self.registry = CredentialRegistry(self.codes)
        self.limits = DaemonRateLimits.from_board(self.board)
        self.manager: ConnectionManager | None = None
        self.listen_address: tuple[str, int] | None = None
        self.finder = PeerFinder(self)
        self._control: Any = None
        self._serial_task: asyncio.Task[None] | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._streams: dict[tuple[str, str], tuple[RemoteStream, float]] = {}
        self._stop = asyncio.Event()
        self.started_at = time.time()

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Open everything and start serving; raises :class:`DaemonError` on failure."""
        from csembed.control.server import ControlServer
        from csembed.runtime.control_handler import DaemonControl
        self.data.create()
        self.config = self.data.load_config()
        self._apply_rates()
        shares, pending = self.data.load_shares()
        for entry in shares:
            try:
                keys = self.data.read_keys(entry.share_id)
            except DataDirError as exc:
                # One damaged share must not keep the others from syncing.
                log.error("share %s cannot be opened: %s", entry.path, exc)
                self.unloadable[entry.share_id] = (entry, str(exc))
                continue
            self._open_share(entry, keys, create=False)
        for attach in pending:
            self.pending[attach.access_id] = attach
            self._hold(attach)
        self._load_codes()
        self.manager = ConnectionManager(self, self.registry, self._core_config(),
                                         limits=self.limits,
                                         max_connections=self.board.memory.max_connections)
        host, port = self.options.listen
        self.manager.utp_enabled = self.options.reach.utp
        try:
            self.listen_address = await self.manager.listen(host, port)
        except OSError as exc:
            raise DaemonError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._control = ControlServer(DaemonControl(self))
        try:
            self._unix = await self._control.start_unix(self.data.control_path)
        except CsembedError:
            await self.manager.close()
            raise
        if self.options.control_serial is not None:
            device, baud = self.options.control_serial
            self._serial_task = asyncio.get_running_loop().create_task(
                self._serve_serial(device, baud))
        await self.finder.start()
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())
        log.info("csembed %s started: board %s, listening on %s:%d, %d share(s), data in %s",
                 __version__, self.board.name, *self.listen_address, len(self.shares),
                 self.data.root)

    async def _serve_serial(self, device: str, baud: int) -> None:
        while not self._stop.is_set():
            try:
                await self._control.serve_serial(device, baud)
                log.info("serial control line %s hung up; reopening", device)
            except CsembedError as exc:
                log.warning("%s", exc)
            await asyncio.sleep(1.0)  # a hung-up gadget port comes back when the host reopens it

    def request_stop(self) -> None:
        """Stop soon (signal handlers and the ``stop`` command call this)."""
        self._stop.set()

    async def wait_stopped(self) -> None:
        """Return once a stop was requested."""
        await self._stop.wait()

    async def close(self) -> None:
        """Shut everything down cleanly (see the module docstring)."""
        log.info("stopping")
        for task in (self._maintenance, self._serial_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._control is not None and getattr(self, "_unix", None) is not None:
            await self._unix.close()
        await self.finder.stop()
        if self.manager is not None:
            await self.manager.close()
        for share in list(self.shares.values()):
            await self._close_share(share)
        with contextlib.suppress(DataDirError):
            self._save_codes()
        log.info("stopped")

    async def _maintain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            if self.codes.expire(loop.time()):
                self._save_codes()
                self.finder.update()
            self.finder.expire_sightings()
            now = time.monotonic()
            for key, (stream, used) in list(self._streams.items()):
                if now - used > STREAM_IDLE:
                    self._close_stream(key, stream)

    # ------------------------------------------------------------------ settings

    def _core_config(self) -> CoreConfig:
        return core_config(self.board, name=self.config.get("device_name"))

    def _apply_rates(self) -> None:
        up = self.config.get("upload_limit")
        down = self.config.get("download_limit")
        self.limits.upload.set_rate(self.board.network.upload_rate if up is None else up)
        self.limits.download.set_rate(self.board.network.download_rate if down is None
                                      else down)

    def _share_board(self) -> BoardProfile:
        interval = self.config.get("scan_interval")
        if interval is None:
            return self.board
        return dataclasses.replace(self.board, cpu=dataclasses.replace(
            self.board.cpu, scan_interval=float(interval)))

    async def set_config(self, values: Mapping[str, Any]) -> None:
        """Check every value first, then apply and persist them together."""
        checked = {}
        for key, value in values.items():
            try:
                checked[key] = check_config_value(key, value)
            except DataDirError as exc:
                code = "no_such_key" if str(exc).startswith("no configuration key") \
                    else "invalid_argument"
                raise ControlRequestError(code, str(exc)) from None
        self.config.update(checked)
        self.data.save_config(self.config)
        if {"upload_limit", "download_limit"} & checked.keys():
            self._apply_rates()
        if "device_name" in checked and self.manager is not None:
            self.manager.set_core(self._core_config())
        if "scan_interval" in checked:
            board = self._share_board()
            for share in self.shares.values():
                if share.runtime is not None:
                    share.runtime.engine.board = board
                    share.runtime.request_scan()
        if {"tracker", "lan_broadcast"} & checked.keys():
            await self.finder.stop()
            await self.finder.start()
        elif "peers" in checked:
            self.finder.reconcile()

    # ------------------------------------------------------------------ shares

    def _bytes_in_all_shares(self) -> int:
        """What every open share holds: the board's quota covers them together."""
        return sum(share.local.cache.total_file_bytes()
                   for share in self.shares.values() if share.local is not None)

    def _open_share(self, entry: ShareEntry, keys: ShareKeys, *, create: bool) -> OpenShare:
        share = OpenShare(entry, keys)
        self.shares[entry.share_id] = share
        board = self._share_board()
        try:
            local = open_local_share(entry.path, self.data.state_dir(entry.share_id), board,
                                     create=create, rng=random.Random(),
                                     usage=self._bytes_in_all_shares)
        except (DirectoryError, OSError) as exc:
            share.error = f"cannot open {entry.path}: {exc}"
            log.error("share %s: %s", entry.path, share.error)
            return share
        try:
            store = Store(self.data.database_path(entry.share_id), peer_id=entry.peer_id,
                          synchronous=board.storage.db_synchronous,
                          checkpoint_pages=board.storage.db_checkpoint_pages)
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
                          rng=secrets.token_bytes)
        engine = ShareEngine(local, replica, board, random.Random(), clock=time.monotonic)
        runtime = ShareRuntime(engine, scan_budget=self.options.scan_budget)
        share.local, share.store, share.runtime = local, store, runtime
        share.task = asyncio.get_running_loop().create_task(self._run_share(share))
        self.registry.add_share(keys, entry.peer_id, tag=("share", entry.share_id))
        return share

    async def _run_share(self, share: OpenShare) -> None:
        assert share.runtime is not None
        try:
            await share.runtime.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in one share must not stop the others
            share.error = f"sync engine failed: {exc!r}"
            log.exception("share %s: sync engine failed", share.entry.path)

    async def _close_share(self, share: OpenShare) -> None:
        if self.manager is not None:
            self.manager.close_share(share.entry.share_id)
        for key, (stream, _) in list(self._streams.items()):
            if key[0] == share.entry.share_id:
                self._close_stream(key, stream)
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

    def _save_shares(self) -> None:
        self.data.save_shares([s.entry for s in self.shares.values()]
                              + [entry for entry, _ in self.unloadable.values()],
                              list(self.pending.values()))

    def find_share(self, path: str) -> OpenShare | None:
        """The share at ``path`` (compared after resolving symbolic links)."""
        real = os.path.realpath(path)
        for share in self.shares.values():
            if share.entry.path == real or share.entry.path == path:
                return share
        return None

    def _check_new_path(self, path: str) -> str:
        real = os.path.realpath(path)
        taken = [s.entry.path for s in self.shares.values()] + \
            [p.path for p in self.pending.values()] + \
            [entry.path for entry, _ in self.unloadable.values()]
        for other in taken:
            if real == other:
                raise ControlRequestError("share_exists", f"{real} is already a share")
            if real.startswith(other.rstrip("/") + "/") or other.startswith(real.rstrip("/") + "/"):
                raise ControlRequestError("share_overlaps",
                                          f"{real} overlaps the share at {other}")
        data = str(self.data.root)
        if real == data or real.startswith(data + "/") or data.startswith(real.rstrip("/") + "/"):
            raise ControlRequestError("share_overlaps",
                                      f"{real} overlaps the data directory {data}")
        return real

    async def create_share(self, path: str) -> dict[str, Any]:
        """Share the existing directory at ``path`` with fresh keys."""
        real = self._check_new_path(path)
        if not os.path.exists(real):
            raise FileNotFoundError(errno.ENOENT, "No such directory", path)
        if not os.path.isdir(real):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
        keys = ShareKeys.generate()
        share_id = keys.level(READ_ONLY).key_id_hex
        assert share_id is not None
        entry = ShareEntry(share_id, real, new_peer_id(), READ_WRITE)
        self.data.write_keys(share_id, keys)
        share = self._open_share(entry, keys, create=True)
        self._save_shares()
        self.finder.update()
        log.info("created share %s (%s)", real, share_id[:16])
        return {"share_id": share_id, "status": "error" if share.error else "ok"}

    async def add_share(self, code_text: str, path: str) -> dict[str, Any]:
        """Start joining a share with an access code; the keys arrive later."""
        try:
            code = AccessCode.parse(code_text)
        except AccessCodeError as exc:
            raise ControlRequestError("bad_access_code", str(exc)) from None
        if self.codes.get(code.access_id) is not None or code.access_id in self._code_meta:
            raise ControlRequestError("bad_access_code",
                                      "this access code was issued by this daemon")
        if code.access_id in self.pending:
            raise ControlRequestError("share_exists", "this access code is already "
                                      f"being redeemed into {self.pending[code.access_id].path}")
        real = self._check_new_path(path)
        if os.path.exists(real) and not os.path.isdir(real):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
        os.makedirs(real, exist_ok=True)
        attach = PendingAttach(code.text, code.access_id, real, new_peer_id(), time.time())
        self.pending[attach.access_id] = attach
        self._save_shares()
        self._hold(attach)
        self.finder.update()
        log.info("attaching %s with access ID %s", real, attach.access_id[:16])
        return {"access_id": attach.access_id, "status": "attaching"}

    def _hold(self, attach: PendingAttach) -> None:
        self.registry.hold_code(AccessCode.parse(attach.code), attach.peer_id,
                                tag=("attach", attach.access_id))

    async def remove_share(self, path: str) -> None:
        """Stop sharing ``path``: forget keys, records and codes; files stay."""
        real = os.path.realpath(path)
        for attach in list(self.pending.values()):
            if attach.path in (real, path):
                del self.pending[attach.access_id]
                self.registry.drop_held_code(attach.access_id)
                self._save_shares()
                self.finder.update()
                return
        for share_id, (entry, _) in list(self.unloadable.items()):
            if entry.path in (real, path):
                del self.unloadable[share_id]
                self.data.remove_share_files(share_id)
                self._save_shares()
                return
        share = self.find_share(path)
        if share is None:
            raise ControlRequestError("no_such_share", f"no share at {path}")
        share_id = share.entry.share_id
        for issued in list(self.codes):
            if isinstance(issued.tag, tuple) and issued.tag[1] == share_id:
                self.codes.cancel(issued.access_id)
        for access_id, meta in list(self._code_meta.items()):
            if meta[1] == share_id:
                del self._code_meta[access_id]
        await self._close_share(share)
        self.data.remove_share_files(share_id)
        self._save_shares()
        self._save_codes()
        self.finder.update()
        log.info("removed share %s", share.entry.path)

    # hooks of the connection manager

    def runtime_for(self, share_id: str) -> ShareRuntime | None:
        """The running share (connection-manager hook)."""
        share = self.shares.get(share_id)
        return None if share is None else share.runtime

    async def keys_received(self, access_id: str, event: KeysReceived) -> str:
        """Keys arrived for a code we hold: store them (0600), open the share, and
        only then let the link acknowledge them (connection-manager hook)."""
        attach = self.pending.get(access_id)
        if attach is None:
            raise DaemonError("received keys for a code no longer being redeemed")
        keys = event.share
        share_id = keys.level(READ_ONLY).key_id_hex
        if share_id is None:
            raise DaemonError("the keys received carry no read-only key")
        if share_id in self.shares:
            # Redeeming the code again would only repeat this: give the attach up.
            del self.pending[access_id]
            self.registry.drop_held_code(access_id)
            self._save_shares()
            self.finder.update()
            raise DaemonError(f"gave up attaching {attach.path}: this device is already a "
                              f"member of that share (at {self.shares[share_id].entry.path})")
        self.data.write_keys(share_id, keys)
        entry = ShareEntry(share_id, attach.path, attach.peer_id, event.access_level)
        del self.pending[access_id]
        self.registry.drop_held_code(access_id)
        self._open_share(entry, keys, create=True)
        self._save_shares()
        self.finder.update()
        log.info("joined share %s at %s (%s)", share_id[:16], attach.path, event.access_level)
        return share_id

    def link_ready(self, ready: Ready) -> None:
        """A link carries its share; persist a code it spent (connection-manager hook)."""
        if ready.grant.kind is GrantKind.CODE_CREATOR:
            log.info("access code %s… redeemed by peer %s", ready.grant.id_hex[:12],
                     ready.peer_id[:8])
            self._save_codes()
            self.finder.update()

    def grant_for(self, target: Target) -> Grant | None:
        """What to dial ``target`` with, ``None`` once unwanted (connection-manager hook)."""
        if target.kind == "attach":
            attach = self.pending.get(target.club)
            if attach is None:
                return None
            return Grant.code_holder(AccessCode.parse(attach.code), attach.peer_id,
                                     tag=("attach", attach.access_id))
        share = self.shares.get(target.club)
        if share is None or share.runtime is None or target.level is None:
            return None
        return Grant.share_key(share.keys, target.level, share.entry.peer_id,
                               tag=("share", share.entry.share_id))

    # ------------------------------------------------------------------ access codes

    async def create_access_code(self, path: str, mode: str, *, max_uses: int | None = 1,
                                 lifetime: float | None = 24 * 3600.0) -> str:
        """Issue a code for the share at ``path`` (default: one use, 24 hours)."""
        share = self.find_share(path)
        if share is None:
            raise ControlRequestError("no_such_share", f"no share at {path}")
        if mode not in (READ_WRITE, READ_ONLY):
            raise ControlRequestError("not_supported", f"access mode {mode!r} is not "
                                      "supported by this daemon")
        level = share.keys.level(mode)
        if not level.has_key or level.signing_key is None:
            raise ControlRequestError("not_permitted", f"this device holds {path} "
                                      f"{share.entry.access_level}; it cannot grant {mode}")
        code = AccessCode.generate()
        now = asyncio.get_running_loop().time()
        self.codes.issue(code, share.keys, mode, share.entry.peer_id, now=now,
                         lifetime=lifetime, max_uses=max_uses,
                         tag=("share", share.entry.share_id))
        self._code_meta[code.access_id] = (code.text, share.entry.share_id, time.time(), 0)
        self._save_codes()
        self.finder.update()
        self.finder.poke()
        log.info("issued a %s access code for %s (%s use(s), %s)", mode, share.entry.path,
                 "unlimited" if max_uses is None else max_uses,
                 "no expiry" if lifetime is None else f"expires in {lifetime:g} s")
        return code.text

    def _load_codes(self) -> None:
        loop_now = asyncio.get_running_loop().time()
        wall = time.time()
        changed = False
        for stored in self.data.load_codes():
            share = self.shares.get(stored.share_id)
            left = None if stored.max_uses is None else stored.max_uses - stored.uses
            if share is None or (left is not None and left < 1) or \
                    (stored.expires_at is not None and stored.expires_at <= wall):
                changed = True
                continue
            try:
                code = AccessCode.parse(stored.code)
                self.codes.issue(code, share.keys, stored.access_level, share.entry.peer_id,
                                 now=loop_now, lifetime=None if stored.expires_at is None
                                 else stored.expires_at - wall, max_uses=left,
                                 tag=("share", stored.share_id))
            except CsembedError as exc:
                log.warning("dropping a stored access code: %s", exc)
                changed = True
                continue
            self._code_meta[code.access_id] = (stored.code, stored.share_id,
                                               stored.created_at, stored.uses)
        if changed:
            self._save_codes()

    def _save_codes(self) -> None:
        loop_now = asyncio.get_running_loop().time()
        wall = time.time()
        stored = []
        for issued in self.codes:
            meta = self._code_meta.get(issued.access_id)
            if meta is None:
                continue
            text, share_id, created, uses_before = meta
            stored.append(StoredCode(
                code=text, share_id=share_id, access_level=issued.access_level,
                created_at=created,
                expires_at=None if issued.expires_at is None
                else wall + (issued.expires_at - loop_now),
                max_uses=None if issued.max_uses is None else uses_before + issued.max_uses,
                uses=uses_before + issued.uses))
        live = {issued.access_id for issued in self.codes}
        for access_id in [a for a in self._code_meta if a not in live]:
            del self._code_meta[access_id]
        self.data.save_codes(stored)

    # ------------------------------------------------------------------ status

    def pause(self) -> None:
        """Close every link; connect to nobody until :meth:`resume`."""
        if self.manager is not None:
            self.manager.pause()
        log.info("paused")

    def resume(self) -> None:
        """Connect again after :meth:`pause`."""
        if self.manager is not None:
            self.manager.resume()
        log.info("resumed")

    @property
    def paused(self) -> bool:
        """True between ``pause`` and ``resume``."""
        return self.manager is not None and self.manager.paused

    def share_status(self, share: OpenShare) -> dict[str, Any]:
        """One share's progress for ``status`` and ``list_shares``."""
        entry = share.entry
        info: dict[str, Any] = {"path": entry.path, "share_id": entry.share_id,
                                "access_level": entry.access_level, "peer_id": entry.peer_id}
        if share.runtime is None or share.error is not None:
            info.update(status="error", reason=share.error)
            return info
        engine = share.runtime.engine
        state = engine.status()
        word = {"idle": "synced", "syncing": "syncing", "scanning": "scanning",
                "error": "error"}.get(state["state"], state["state"])
        if self.paused and word != "error":
            word = "paused"
        connected = self.manager.links_of(entry.share_id) if self.manager else []
        info.update(status=word, reason=state.get("reason"), peers=len(connected),
                    files_to_sync=state["files_to_sync"], bytes_to_sync=state["bytes_to_sync"],
                    transfers=engine.transfers(), waiting_for_peers=state["waiting_for_peers"],
                    limits=state["limits"], failures=state["failures"][:20],
                    notices=state["notices"][:20], rejected=state["rejected"][:20],
                    stats=engine.stats(), scans=engine.stats().get("scans", 0),
                    last_scan_seconds=state["last_scan_seconds"])
        return info

    def attach_status(self, attach: PendingAttach) -> dict[str, Any]:
        """An attach still waiting for its keys, as a ``list_shares`` entry."""
        return {"path": attach.path, "status": "attaching", "access_id": attach.access_id,
                "peer_id": attach.peer_id, "since": attach.created_at}

    def unloadable_status(self, share_id: str) -> dict[str, Any]:
        """A share whose keys cannot be loaded, as a ``list_shares`` entry."""
        entry, reason = self.unloadable[share_id]
        return {"path": entry.path, "status": "error", "reason": reason, "share_id": share_id,
                "access_level": entry.access_level}

    def board_status(self) -> dict[str, Any]:
        """The active board and the limits the daemon enforces."""
        board = self.board
        return {"name": board.name, "description": board.description,
                "summary": board.summary(),
                "upload_limit": int(self.limits.upload.rate),
                "download_limit": int(self.limits.download.rate),
                "max_connections": board.memory.max_connections,
                "max_open_transfers": board.memory.max_open_transfers,
                "max_bytes_in_flight": board.memory.max_bytes_in_flight,
                "chunk_size": board.memory.chunk_size,
                "quota": board.storage.quota, "max_file_size": board.storage.max_file_size,
                "scan_interval": self._share_board().cpu.scan_interval}

    def status(self) -> dict[str, Any]:
        """Everything ``status`` reports beyond control.md's five fields."""
        assert self.listen_address is not None
        tracker = self.finder.tracker_address()
        return {
            "software": f"csembed {__version__}",
            "data_dir": str(self.data.root),
            "listen": _hostport(self.listen_address),
            "board": self.board_status(),
            "tracker": None if tracker is None else {
                "address": _hostport(tracker),
                "state": self.finder.tracker.state if self.finder.tracker else "off"},
            "lan_broadcast": self.finder.announcer is not None,
            "nat": self.finder.reach.status() if self.finder.reach else None,
            "connections": self.manager.ready_count if self.manager else 0,
            "shares": [self.share_status(s) for s in self.shares.values()] +
                      [self.attach_status(p) for p in self.pending.values()] +
                      [self.unloadable_status(sid) for sid in self.unloadable],
            "uptime": time.time() - self.started_at,
        }

    def peers(self) -> list[dict[str, Any]]:
        """Connected peers and the ones we are trying to reach."""
        assert self.manager is not None
        paths = {sid: s.entry.path for sid, s in self.shares.items()}
        out = []
        connected = set()
        for record in self.manager.records():
            item = record.describe()
            item["share"] = paths.get(record.share_id or "")
            out.append(item)
            if record.ready is not None and record.share_id is not None:
                connected.add((record.share_id, record.ready.peer_id))
        for target in self.manager.targets():
            peer = self.manager.peer_for(target)
            if target.kind == "share" and (target.club, peer) in connected:
                continue
            out.append({"peer_id": peer, "state": "dialling", "source": target.source,
                        "share": paths.get(target.club) if target.kind == "share" else None,
                        "attaching": self.pending[target.club].path
                        if target.kind == "attach" and target.club in self.pending else None,
                        "addresses": [_hostport(a) for a in target.addresses]})
        return out

    def transfers(self) -> list[dict[str, Any]]:
        """Every file being fetched, in every share."""
        out = []
        for share in self.shares.values():
            if share.runtime is not None:
                for transfer in share.runtime.engine.transfers():
                    out.append({"share": share.entry.path, **transfer})
        return out

    def rescan(self, path: str | None) -> int:
        """Ask one share (or all) to rescan now; returns how many were asked."""
        shares = list(self.shares.values()) if path is None else [self.find_share(path)]
        if shares == [None]:
            raise ControlRequestError("no_such_share", f"no share at {path}")
        count = 0
        for share in shares:
            if share is not None and share.runtime is not None:
                share.runtime.request_scan()
                count += 1
        return count

    # ------------------------------------------------------------------ streaming

    def _close_stream(self, key: tuple[str, str], stream: RemoteStream) -> None:
        self._streams.pop(key, None)
        share = self.shares.get(key[0])
        if share is not None and share.runtime is not None:
            share.runtime.engine.close_stream(stream)

    async def read_file(self, path: str, file: str, offset: int, count: int) -> dict[str, Any]:
        """Up to ``count`` bytes of a share's file at ``offset`` (from a peer if needed)."""
        from csembed.directory.transfer_stream import StreamError
        share = self.find_share(path)
        if share is None or share.runtime is None:
            raise ControlRequestError("no_such_share", f"no share at {path}")
        key = "/" + file.strip("/")
        stream_key = (share.entry.share_id, key)
        held = self._streams.get(stream_key)
        runtime = share.runtime
        try:
            if held is None:
                stream = runtime.engine.open_stream(key)
            else:
                stream = held[0]
            self._streams[stream_key] = (stream, time.monotonic())
            count = max(0, min(count, MAX_READ, stream.size - offset))
            data = b"" if count == 0 else await runtime.read_remote(stream, offset, count)
        except StreamError as exc:
            if stream_key in self._streams:
                self._close_stream(stream_key, self._streams[stream_key][0])
            raise ControlRequestError("not_available", f"{file}: {exc}") from None
        eof = offset + len(data) >= stream.size
        if eof:
            self._close_stream(stream_key, stream)
        return {"size": stream.size, "offset": offset, "data": data, "eof": eof}


def _hostport(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

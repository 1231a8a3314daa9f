"""The csembed daemon: shares, connections, discovery and control wired in one asyncio process.

Theory of operation
-------------------
:class:`Daemon` builds the parts and connects them; each part does its own work:

* the **data directory** (:mod:`csembed.runtime.data_dir`): configuration,
  shares and their keys, issued codes, attaches waiting for keys;
* the **settings** in force (:mod:`csembed.runtime.settings`): command line
  over stored configuration over board profile, with where each comes from;
* the **share set** (:mod:`csembed.runtime.share_set`): one
  :class:`~csembed.runtime.share_runtime.ShareRuntime` per share, the attaches
  waiting for keys, the shares that cannot be loaded, path checks;
* the **issued codes** (:mod:`csembed.runtime.issued_codes`): terms, uses,
  expiry, revocation and persistence of the codes we hand out;
* the :class:`~csembed.protocol.core_access.CredentialRegistry` every
  incoming handshake is checked against (share keys, issued and held codes);
* the :class:`~csembed.runtime.connection_manager.ConnectionManager`
  (listening socket, dialling, one link per peer per share, limits), to which
  the daemon answers as its :class:`~csembed.runtime.connection_manager.LinkHooks`;
* **discovery** (:class:`~csembed.runtime.peer_finder.PeerFinder`), to which
  the daemon answers as its :class:`~csembed.runtime.peer_finder.FinderHooks`;
* **remote reads** (:mod:`csembed.runtime.remote_reads`) for ``read_file``;
* the **control servers** (UNIX socket ``<data dir>/control``, mode 0600, and
  optionally a serial line) with
  :class:`~csembed.runtime.control_handler.DaemonControl`, the only place
  where the runtime's errors (:mod:`csembed.runtime.errors`) become control
  error codes. What the status commands report is built by
  :mod:`csembed.runtime.status_views`.

Board profile enforcement: the upload and download token buckets shared by
every link (``network.*_rate``, overridable with ``upload_limit`` /
``download_limit``), ``memory.max_connections`` links at most, each link's
buffers sized by its share of the bytes in flight, and the board handed to
every engine and to the core. Memory: what the board does not use is never
imported (uTP and STUN without ``network.utp``, the web page, the serial
line, the tracker client; hashlib with ``cpu.sha256 = "builtin"``, see
:mod:`csembed.digests`), and freed heap goes back to the kernel once started
and at each maintenance tick (:mod:`csembed.runtime.heap_trim`).

An attach reports what its dials found (:mod:`csembed.runtime.attach_watch`,
fed by :meth:`Daemon.dial_ended`): no answer (still trying), or refused by
every peer tried (the code is expired, used, revoked or not theirs); one that
ends without joining (this device is already a member) stays listed with its
reason until detached.

A stop (``stop`` command, SIGTERM, SIGINT) closes the links, stops each
runtime and closes its engine (partial downloads stay on disk and resume at
the next start), saves the code table and removes the control socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from csembed import __version__, digests
from csembed.access_code import AccessCode, AccessCodeError
from csembed.errors import CsembedError
from csembed.protocol.core import CoreConfig, Grant, KeysReceived, Ready
from csembed.protocol.core_access import CredentialRegistry, GrantKind
from csembed.runtime.attach_watch import AttachWatch, check_folder
from csembed.runtime.connection_manager import ConnectionManager, LinkRecord, Target, link_buffer
from csembed.runtime.data_dir import DataDir, DataDirError, PendingAttach, ShareEntry
from csembed.runtime.errors import (
    BadAccessCode,
    DaemonError,
    ModeNotSupported,
    NoSuchPeer,
    NoSuchShare,
    NotPermitted,
    ShareExists,
)
from csembed.runtime.heap_trim import trim
from csembed.runtime.issued_codes import IssuedCodes
from csembed.runtime.peer_finder import Club, DiscoverySettings, PeerFinder
from csembed.runtime.peer_link import core_config
from csembed.runtime.rate_limit import DaemonRateLimits
from csembed.runtime.reach import ReachConfig
from csembed.runtime.remote_reads import RemoteReads
from csembed.runtime.removed_peers import RemovedPeers
from csembed.runtime.settings import DaemonOptions, Settings
from csembed.runtime.share_runtime import ShareRuntime
from csembed.runtime.share_set import OpenShare, ShareSet
from csembed.runtime.status_views import (
    Contact,
    attach_view,
    board_view,
    hostport,
    peer_names,
    peer_views,
    share_view,
    transfer_views,
    unloadable_view,
)
from csembed.security.keys import READ_ONLY, READ_WRITE, ShareKeys, new_peer_id

if TYPE_CHECKING:
    from csembed.runtime.utp_endpoint import UtpEndpoint

__all__ = ["Daemon", "DaemonError", "DaemonOptions"]

log = logging.getLogger("csembed.daemon")

MAINTENANCE_INTERVAL = 30.0


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class Daemon:
    """One running daemon; see the module docstring. ``await start()``, then
    ``await wait_stopped()``, then ``await close()``."""

    def __init__(self, options: DaemonOptions) -> None:
        self.options = options
        self.board = options.board
        digests.use_sha256(self.board.cpu.sha256)
        self.data = DataDir(options.data_dir)
        self.settings = Settings(options, self.data)
        self.codes = IssuedCodes(self.data, clock=_loop_time)
        self.registry = CredentialRegistry(self.codes.table)
        self.share_set = ShareSet(self.data, self.registry, self.settings.share_board,
                                  options.scan_budget)
        self.limits = DaemonRateLimits.from_board(self.board)
        self.manager: ConnectionManager | None = None
        self.listen_address: tuple[str, int] | None = None
        self.finder = PeerFinder(self)
        self.reads = RemoteReads(self.share_set.shares.get)
        self.contacts: dict[str, Contact] = {}
        self.attaches = AttachWatch()
        self.removed = RemovedPeers(self.data)
        self._control: Any = None
        self.web: Any = None  #: the web page (csembed.runtime.web_server.WebServer) when on
        self._unix: Any = None
        self._serial_task: asyncio.Task[None] | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.started_at = time.time()

    @property
    def config(self) -> dict[str, Any]:
        """The stored configuration."""
        return self.settings.config

    @property
    def shares(self) -> dict[str, OpenShare]:
        """Running shares by share ID."""
        return self.share_set.shares

    @property
    def pending(self) -> dict[str, PendingAttach]:
        """Attaches waiting for keys, by access ID."""
        return self.share_set.pending

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Open everything and start serving; raises :class:`DaemonError` on failure."""
        from csembed.runtime.control_handler import DaemonControl
        from csembed.runtime.control_server import ControlServer
        self.data.create()
        self.settings.load()
        self.removed.load()
        self._apply_rates()
        shares, pending = self.data.load_shares()
        for entry in shares:
            try:
                keys = self.data.read_keys(entry.share_id)
            except DataDirError as exc:
                # One damaged share must not keep the others from syncing.
                log.error("share %s cannot be opened: %s", entry.path, exc)
                self.share_set.unloadable[entry.share_id] = (entry, str(exc))
                continue
            self.share_set.open(entry, keys, create=False)
        for attach in pending:
            self.pending[attach.access_id] = attach
            self._hold(attach)
        self.codes.load(self._share_keys)
        web = None
        if self.options.web is not None or self.config.get("web"):  # else no web modules
            from csembed.runtime.web_server import web_options
            web = web_options(self.options.web, self.options.web_password, self.config)
        self.manager = ConnectionManager(self, self.registry, self._core_config(),
                                         limits=self.limits,
                                         max_connections=self.board.memory.max_connections)
        host, port = self.options.listen
        self.manager.utp_enabled = self.options.reach.utp and self.board.network.utp
        self.manager.link_buffer = link_buffer(self.board.memory)
        if self.manager.utp_enabled:  # else uTP's modules never load
            from csembed.runtime.utp_endpoint import board_limits
            self.manager.utp_limits = board_limits(self.board.memory)
        try:
            self.listen_address = await self.manager.listen(host, port)
        except OSError as exc:
            raise DaemonError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._control = ControlServer(DaemonControl(self))
        try:
            self._unix = await self._control.start_unix(self.data.control_path)
            if web is not None:
                from csembed.runtime.web_server import start_web
                self.web = await start_web(web, self._control)
        except CsembedError:
            if getattr(self, "_unix", None) is not None:
                await self._unix.close()
            await self.manager.close()
            raise
        if self.options.control_serial is not None:
            device, baud = self.options.control_serial
            self._serial_task = asyncio.get_running_loop().create_task(
                self._serve_serial(device, baud))
        await self.finder.start()
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())
        trim()  # what loading the modules and opening the shares left free
        log.info("csembed %s started: board %s, listening on %s, %d share(s), data in %s",
                 __version__, self.board.name, hostport(self.listen_address),
                 len(self.shares), self.data.root)

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
        if self.web is not None:
            await self.web.close()
        for task in (self._maintenance, self._serial_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._unix is not None:
            await self._unix.close()
        await self.finder.stop()
        if self.manager is not None:
            await self.manager.close()
        for share in list(self.shares.values()):
            await self._close_share(share)
        with contextlib.suppress(DataDirError):
            self.codes.save()
        log.info("stopped")

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            if self.codes.expire():
                self.finder.update()
            self.finder.expire_sightings()
            self.reads.close_idle()
            trim()

    # ------------------------------------------------------------------ settings

    def _core_config(self) -> CoreConfig:
        return core_config(self.board, name=self.config.get("device_name"))

    def _apply_rates(self) -> None:
        up, down = self.settings.rates()
        self.limits.upload.set_rate(up)
        self.limits.download.set_rate(down)

    async def set_config(self, values: Mapping[str, Any]) -> None:
        """Check every value first, then apply and persist them together."""
        checked = self.settings.check(values)
        self.settings.store(checked)
        if {"upload_limit", "download_limit"} & checked.keys():
            self._apply_rates()
        if "device_name" in checked and self.manager is not None:
            self.manager.set_core(self._core_config())
            # The name travels in the greeting: reconnect so that peers learn it now.
            for share_id in list(self.shares):
                self.manager.close_share(share_id)
        if "scan_interval" in checked:
            board = self.settings.share_board()
            for share in self.shares.values():
                if share.runtime is not None:
                    share.runtime.engine.board = board
                    share.runtime.request_scan()
        if {"tracker", "lan_broadcast"} & checked.keys():
            await self.finder.stop()
            await self.finder.start()
        elif "peers" in checked:
            self.finder.reconcile()

    def get_config_value(self, key: str) -> Any:
        """One setting; :class:`NoSuchSetting` for a key we do not know."""
        return self.settings.get(key)

    def effective_config(self) -> list[dict[str, Any]]:
        """Every setting's value in force now and where it comes from."""
        return self.settings.sources(self.listen_address)

    def discovery_settings(self) -> DiscoverySettings:
        """Where to look for peers (peer-finder hook)."""
        return self.settings.discovery()

    # ------------------------------------------------------------------ peer-finder hooks

    def clubs(self) -> list[Club]:
        """Shares we run and codes we are redeeming (peer-finder hook)."""
        out = []
        for share in self.shares.values():
            if not share.syncing:
                continue
            levels = share.keys.levels
            out.append(Club("share", share.entry.share_id, share.entry.peer_id,
                            tuple(lv.key_id_hex for lv in levels if lv.key_id_hex),
                            tuple((lv.access_level, lv.key_id_hex) for lv in levels
                                  if lv.has_key and lv.key_id_hex)))
        for attach in self.pending.values():
            out.append(Club("attach", attach.access_id, attach.peer_id))
        return out

    def issued_ids(self) -> dict[str, str]:
        """Live issued codes: access ID -> our peer ID (peer-finder hook)."""
        return {issued.access_id: issued.peer_id for issued in self.codes}

    def club_proofs(self) -> dict[str, bytes]:
        """Club ID -> registration proof (its SHA-256 preimage) where we know one:
        the derived key IDs of levels we hold, and the access IDs of codes we
        issued or are redeeming (peer-finder hook; ``protocol/discovery.md``)."""
        proofs: dict[str, bytes] = {}
        for share in self.shares.values():
            if share.runtime is None:
                continue
            for level in share.keys.levels:
                if level.id_preimage is not None and level.key_id_hex is not None:
                    proofs[level.key_id_hex] = level.id_preimage
        for issued in self.codes:
            if issued.id_preimage is not None:
                proofs[issued.access_id] = issued.id_preimage
        for attach in self.pending.values():
            with contextlib.suppress(ValueError):
                proofs[attach.access_id] = AccessCode.parse(attach.code).raw[:8]
        return proofs

    def utp_endpoint(self) -> UtpEndpoint | None:
        """The uTP socket we listen on, if any (peer-finder hook)."""
        return None if self.manager is None else self.manager.utp

    def reach_config(self) -> ReachConfig:
        """STUN servers and port mapping (peer-finder hook)."""
        return self.options.reach

    def set_targets(self, targets: list[Target]) -> None:
        """Hand the dial targets to the connection manager (peer-finder hook)."""
        if self.manager is not None:
            self.manager.set_targets(targets)

    def listening_on(self) -> tuple[str, int] | None:
        """Where peers connect, once listening (peer-finder hook)."""
        return self.listen_address

    # ------------------------------------------------------------------ shares

    def _share_keys(self, share_id: str) -> tuple[ShareKeys, str] | None:
        share = self.shares.get(share_id)
        return None if share is None else (share.keys, share.entry.peer_id)

    def _open_share(self, entry: ShareEntry, keys: ShareKeys, *, create: bool) -> OpenShare:
        self.contacts[entry.share_id] = Contact()
        return self.share_set.open(entry, keys, create=create)

    async def _close_share(self, share: OpenShare) -> None:
        if self.manager is not None:
            self.manager.close_share(share.entry.share_id)
        self.reads.close_share(share.entry.share_id)
        await self.share_set.close(share)
        self.contacts.pop(share.entry.share_id, None)

    def find_share(self, path: str) -> OpenShare | None:
        """The share at ``path`` (compared after resolving symbolic links)."""
        return self.share_set.find(path)

    def running_share(self, path: str) -> OpenShare:
        """The share at ``path`` that runs; :class:`NoSuchShare` otherwise."""
        share = self.find_share(path)
        if share is None or share.runtime is None:
            raise NoSuchShare(f"no share at {path}")
        return share

    async def create_share(self, path: str) -> dict[str, Any]:
        """Share the existing directory at ``path`` with fresh keys."""
        real = self.share_set.check_new_path(path)
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
        self.share_set.save()
        self.finder.update()
        log.info("created share %s (%s)", real, share_id[:16])
        return {"share_id": share_id, "status": "error" if share.error else "ok"}

    async def add_share(self, code_text: str, path: str, merge: bool = True,
                        sync_mode: str = "send_receive") -> dict[str, Any]:
        """Start joining a share with an access code; the keys arrive later.

        Without ``merge`` a folder that already holds files is refused
        (:class:`FolderNotEmpty`, saying what a merge would do). ``sync_mode``
        is in force from the share's first scan.
        """
        try:
            code = AccessCode.parse(code_text)
        except AccessCodeError as exc:
            raise BadAccessCode(str(exc)) from None
        if self.codes.is_ours(code.access_id):
            raise BadAccessCode("this access code was issued by this daemon")
        if code.access_id in self.pending:
            raise ShareExists("this access code is already being redeemed into "
                              f"{self.pending[code.access_id].path}")
        real = self.share_set.check_new_path(path)
        if os.path.exists(real) and not os.path.isdir(real):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
        check_folder(real, merge)
        os.makedirs(real, exist_ok=True)
        attach = PendingAttach(code.text, code.access_id, real, new_peer_id(), time.time(),
                               sync_mode)
        self.pending[attach.access_id] = attach
        self.attaches.clear(real)
        self.share_set.save()
        self._hold(attach)
        self.finder.update()
        log.info("attaching %s with access ID %s", real, attach.access_id[:16])
        return {"access_id": attach.access_id, "status": "attaching"}

    def _hold(self, attach: PendingAttach) -> None:
        self.registry.hold_code(AccessCode.parse(attach.code), attach.peer_id,
                                tag=("attach", attach.access_id))

    def _drop_attach(self, attach: PendingAttach) -> None:
        del self.pending[attach.access_id]
        self.attaches.forget(attach.access_id)
        self.registry.drop_held_code(attach.access_id)
        self.share_set.save()
        self.finder.update()

    async def remove_share(self, path: str) -> None:
        """Stop sharing ``path`` (or cancel its attach): forget keys, records and codes;
        files stay."""
        real = os.path.realpath(path)
        if self.attaches.clear(real):
            return
        attach = self.share_set.pending_at(path)
        if attach is not None:
            self._drop_attach(attach)
            log.info("cancelled the attach of %s", attach.path)
            return
        for share_id, (entry, _) in list(self.share_set.unloadable.items()):
            if entry.path in (real, path):
                del self.share_set.unloadable[share_id]
                self.data.remove_share_files(share_id)
                self.share_set.save()
                return
        share = self.find_share(path)
        if share is None:
            raise NoSuchShare(f"no share at {path}")
        share_id = share.entry.share_id
        await self._close_share(share)
        self.codes.drop_share(share_id)
        self.removed.drop_share(share_id)
        self.data.remove_share_files(share_id)
        self.share_set.save()
        self.finder.update()
        log.info("removed share %s", share.entry.path)

    # ------------------------------------------------------------------ connection-manager hooks

    def runtime_for(self, share_id: str) -> ShareRuntime | None:
        """The running share, unless paused (connection-manager hook)."""
        share = self.shares.get(share_id)
        return None if share is None or not share.syncing else share.runtime

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
            other = self.shares[share_id].entry.path
            self._drop_attach(attach)
            message = (f"this device is already a member of that share (at {other}); "
                       "nothing was attached")
            self.attaches.failed(attach.path, message)
            raise DaemonError(f"gave up attaching {attach.path}: {message}")
        self.data.write_keys(share_id, keys)
        self.share_set.preset_mode(share_id, attach.sync_mode)
        entry = ShareEntry(share_id, attach.path, attach.peer_id, event.access_level)
        del self.pending[access_id]
        self.attaches.forget(access_id)
        self.registry.drop_held_code(access_id)
        self._open_share(entry, keys, create=True)
        self.share_set.save()
        self.finder.update()
        log.info("joined share %s at %s (%s)", share_id[:16], attach.path, event.access_level)
        return share_id

    def link_ready(self, ready: Ready) -> None:
        """A link carries its share; persist a code it spent, close a removed peer's
        link (connection-manager hook)."""
        tag = ready.grant.tag
        share_id = tag[1] if isinstance(tag, tuple) and tag[0] == "share" else None
        if share_id is not None and self.removed.is_removed(share_id, ready.peer_id):
            assert self.manager is not None
            for record in self.manager.links_of(share_id):
                if record.ready is not None and record.ready.peer_id == ready.peer_id:
                    record.link.stream.abort()
            log.info("closed a link of peer %s: removed from share %s", ready.peer_id[:8],
                     share_id[:8])
            return
        if ready.grant.kind is GrantKind.CODE_CREATOR:
            log.info("access code %s… redeemed by peer %s", ready.grant.id_hex[:12],
                     ready.peer_id[:8])
            self.codes.spent()
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
        if share is None or not share.syncing or target.level is None \
                or self.removed.is_removed(target.club, target.peer_id):
            return None
        return Grant.share_key(share.keys, target.level, share.entry.peer_id,
                               tag=("share", share.entry.share_id))

    def dial_ended(self, target: Target, record: LinkRecord | None) -> None:
        """Note what an attach's dial found (connection-manager hook)."""
        attach = self.pending.get(target.club) if target.kind == "attach" else None
        if attach is not None:
            news = self.attaches.dial_ended(target, record)
            if news is not None:
                log.info("attaching %s: %s", attach.path, news)

    # ------------------------------------------------------------------ access codes

    async def create_access_code(self, path: str, mode: str, *, max_uses: int | None = 1,
                                 lifetime: float | None = 24 * 3600.0) -> str:
        """Issue a code for the share at ``path`` (default: one use, 24 hours)."""
        share = self.find_share(path)
        if share is None:
            raise NoSuchShare(f"no share at {path}")
        if mode not in (READ_WRITE, READ_ONLY):
            raise ModeNotSupported(f"access mode {mode!r} is not supported by this daemon")
        level = share.keys.level(mode)
        if not level.has_key or level.signing_key is None:
            raise NotPermitted(f"this device holds {path} {share.entry.access_level}; "
                               f"it cannot grant {mode}")
        code = self.codes.issue(share.entry.share_id, share.keys, mode, share.entry.peer_id,
                                max_uses=max_uses, lifetime=lifetime)
        self.finder.update()
        self.finder.poke()
        log.info("issued a %s access code for %s (%s use(s), %s)", mode, share.entry.path,
                 "unlimited" if max_uses is None else max_uses,
                 "no expiry" if lifetime is None else f"expires in {lifetime:g} s")
        return code.text

    def list_codes(self) -> list[dict[str, Any]]:
        """Issued codes (live first, then the last that ended), with their share's path."""
        paths = {sid: s.entry.path for sid, s in self.shares.items()}
        return [{**c, "path": paths.get(c["share_id"])} for c in self.codes.listing()]

    def revoke_code(self, code: str) -> dict[str, Any]:
        """Revoke a live code at once."""
        revoked = self.codes.revoke(code)
        self.finder.update()
        return revoked

    # ------------------------------------------------------------------ peers

    async def remove_peer(self, path: str, peer: str) -> dict[str, Any]:
        """Remove ``peer`` (a peer ID or its start) from the share at ``path``: close its
        links and never sync this share with it again (see
        :mod:`csembed.runtime.removed_peers`)."""
        share = self.running_share(path)
        assert self.manager is not None
        share_id = share.entry.share_id
        wanted = peer.strip().lower()
        known = {r.ready.peer_id for r in self.manager.links_of(share_id)
                 if r.ready is not None}
        known |= {p for t in self.manager.targets() if t.kind == "share"
                  and t.club == share_id and (p := self.manager.peer_for(t)) is not None}
        found = [p for p in known if p.startswith(wanted)] if len(wanted) >= 4 else []
        if len(found) != 1:
            raise NoSuchPeer(f"no known peer {peer[:40]!r} in {share.entry.path}" if not found
                             else f"{len(found)} peers match {peer[:40]!r}; give more of it")
        peer_id = found[0]
        self.removed.remove(share_id, peer_id)
        closed = 0
        for record in self.manager.links_of(share_id):
            if record.ready is not None and record.ready.peer_id == peer_id:
                record.link.stream.abort()
                closed += 1
        log.info("removed peer %s from %s", peer_id[:8], share.entry.path)
        return {"peer_id": peer_id, "closed": closed}

    async def allow_peer(self, path: str, peer: str) -> dict[str, Any]:
        """Undo :meth:`remove_peer`."""
        share = self.running_share(path)
        peer_id = self.removed.allow(share.entry.share_id, peer)
        self.finder.reconcile()
        log.info("peer %s may sync %s again", peer_id[:8], share.entry.path)
        return {"peer_id": peer_id}

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

    @property
    def tracking(self) -> bool:
        """Connected to a tracker."""
        return self.finder.tracker is not None and self.finder.tracker.connected

    def share_views(self) -> list[dict[str, Any]]:
        """Every share, attach and broken share, for ``status`` and ``list_shares``."""
        out = []
        names = peer_names(self.manager)
        for share in self.shares.values():
            links = len(self.manager.links_of(share.entry.share_id)) if self.manager else 0
            contact = self.contacts.setdefault(share.entry.share_id, Contact())
            out.append(share_view(share, links=links, paused=self.paused or share.policy.paused,
                                  contact=contact, names=names))
        for attach in self.pending.values():
            targets = self.manager.targets() if self.manager is not None else []
            out.append(attach_view(attach, self.attaches.outcome(attach.access_id, targets)))
        out.extend(self.attaches.results.values())
        for entry, reason in self.share_set.unloadable.values():
            out.append(unloadable_view(entry, reason))
        return out

    def board_status(self) -> dict[str, Any]:
        """The active board and the limits the daemon enforces."""
        return board_view(self.board, upload_limit=self.limits.upload.rate,
                          download_limit=self.limits.download.rate,
                          scan_interval=self.settings.share_board().cpu.scan_interval)

    def summary(self) -> dict[str, Any]:
        """The few fields ``status`` adds to control.md's five (kept well under 1 KiB)."""
        views = self.share_views()
        return {"software": f"csembed {__version__}",
                "connections": self.manager.ready_count if self.manager else 0,
                "shares": len(views),
                "synced": sum(1 for v in views if v["status"] == "synced"),
                "problems": sum(int(v.get("problem_count", 0)) for v in views),
                "uptime": int(time.time() - self.started_at)}

    def status(self) -> dict[str, Any]:
        """Everything ``status_detail`` reports beyond control.md's five fields."""
        assert self.listen_address is not None
        tracker = self.finder.tracker_address()
        return {
            "software": f"csembed {__version__}",
            "data_dir": str(self.data.root),
            "listen": hostport(self.listen_address),
            "board": self.board_status(),
            "tracker": None if tracker is None else {
                "address": hostport(tracker),
                "state": self.finder.tracker.state if self.finder.tracker else "off"},
            "lan_broadcast": self.finder.announcer is not None,
            "nat": self.finder.reach.status() if self.finder.reach else None,
            "connections": self.manager.ready_count if self.manager else 0,
            "shares": self.share_views(),
            "uptime": time.time() - self.started_at,
        }

    def peers(self) -> list[dict[str, Any]]:
        """Connected peers and the ones we are trying to reach."""
        assert self.manager is not None
        paths = {sid: s.entry.path for sid, s in self.shares.items()}
        removed = [{"peer_id": peer, "state": "removed", "share": path}
                   for sid, path in paths.items() for peer in self.removed.of(sid)]
        gone = {(r["share"], r["peer_id"]) for r in removed}
        views = peer_views(self.manager, paths, {aid: a.path for aid, a in self.pending.items()})
        return [v for v in views if (v.get("share"), v.get("peer_id")) not in gone] + removed

    def transfers(self) -> list[dict[str, Any]]:
        """Every file being fetched (or sent), in every share."""
        return transfer_views(self.shares.values(), peer_names(self.manager))

    def rescan(self, path: str | None) -> int:
        """Ask one share (or all) to rescan now; returns how many were asked."""
        if path is None:
            shares = list(self.shares.values())
        else:
            share = self.find_share(path)
            if share is None:
                raise NoSuchShare(f"no share at {path}")
            shares = [share]
        count = 0
        for share in shares:
            if share.runtime is not None:
                share.runtime.request_scan()
                count += 1
        return count

    async def read_file(self, path: str, file: str, offset: int, count: int) -> dict[str, Any]:
        """Up to ``count`` bytes of a share's file at ``offset`` (from a peer if needed)."""
        return await self.reads.read(self.running_share(path), file, offset, count)


"""The sync engine of one share: database records <-> files on disk <-> peers (sans-I/O).

Theory of operation
-------------------
A :class:`ShareEngine` ties together the share's replicated records (a
:class:`~csembed.database.Replica`) and its local copy (a
:class:`~csembed.directory.local_share.LocalShare`) and speaks the
``database``, ``directory`` and ``rsync`` messages with every connected peer.
It never touches a socket or a clock: the runtime feeds it wire events and
the time (``now``: wall-clock seconds, ``time.time()``, because the scanner
compares it with file timestamps) and pulls the framed bytes to send.

API (the daemon's runtime drives it; see :mod:`csembed.runtime.share_runtime`)::

    engine = ShareEngine(local_share, replica, board, rng)
    engine.connect(conn_id, PeerInfo(peer_id, read_only, extensions), now)
    engine.receive(conn_id, event, now)     # Message | PayloadChunk | PayloadEnd
    engine.outgoing(conn_id, max_bytes)     # -> list[bytes]: wire units, made lazily
    engine.has_outgoing(conn_id)            # -> bool
    engine.may_read(conn_id)                # -> False: stop reading (replies back up)
    engine.dropped(conn_id); engine.take_drops()   # peers dropped for breaking bounds
    engine.disconnect(conn_id)
    engine.scan_due(now); engine.scan(now, until, clock)  # -> True when the pass ended
    engine.handle_timer(now); engine.get_timer()         # -> float | None
    engine.status(); engine.transfers(); engine.uploads(now); engine.stats()
    engine.peers()
    engine.request_scan(); engine.close()
    engine.mode; engine.set_mode(SyncMode.SEND_ONLY, now)   # csembed.directory.share_policy
    engine.override_changes(now); engine.revert_changes(now)   # -> int: keys acted on
    stream = engine.open_stream(key); engine.stream_read(stream, offset, count)
    engine.close_stream(stream)

This class is a façade: the work is done by small parts sharing one
:class:`~.sync_context.SyncContext` -- :mod:`.local_changes` (scans),
:mod:`.planner` (records -> what the disk should hold and what to want),
:mod:`.fetcher` and :mod:`.fetch_rsync` (transfers), :mod:`.landing`
(verify, batch, place; the failure ladder), :mod:`.conflicts`,
:mod:`.serving` (answering peers, presence), :mod:`.transfer_stream`
(streamed reads) and :mod:`.sync_report` (status; its docstring lists the
``status()`` keys). Here are only the connections, the one dispatch table
for peer messages, and the order things run in.

Every call may queue output for any connection; after each one the runtime
asks every connection for :meth:`outgoing`. Output is produced when pulled:
file contents are read one ``chunk_size`` piece at a time as the socket
drains, database updates are pulled from the replica in batches. Received
database messages are applied in batches too (one transaction for a run of
them, at the next call that is not another database message). Peer input
that is wrong is logged and dropped, never raised; a peer that makes us
queue more than the board allows (:class:`~.sync_context.PeerBounds`) is
first not read from (:meth:`may_read`), then dropped with a logged reason.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from csembed.board_profile import BoardProfile
from csembed.database import Replica
from csembed.directory import sync_messages as msg
from csembed.directory.bloom import BloomFilter
from csembed.directory.conflicts import Conflicts
from csembed.directory.errors import DirectoryError, ShareUnavailable
from csembed.directory.fetch_rsync import RsyncFetch
from csembed.directory.fetcher import Fetcher
from csembed.directory.landing import Landing
from csembed.directory.local_changes import LocalChanges
from csembed.directory.local_share import LocalShare
from csembed.directory.planner import Planner
from csembed.directory.scan_events import ScanResult
from csembed.directory.serving import Discard, Serving
from csembed.directory.share_policy import SyncMode
from csembed.directory.sync_context import PeerBounds, SyncContext
from csembed.directory.sync_report import status_view
from csembed.directory.transfer_fetch import PeerInfo, PeerState
from csembed.directory.transfer_stream import RemoteStream, StreamError, StreamReads
from csembed.protocol.wire import Message, PayloadChunk, PayloadEnd

__all__ = ["PeerInfo", "ShareEngine", "StreamError", "SyncMode"]

log = logging.getLogger("csembed.sync")

ERROR_RETRY = 4 * 3600.0  #: after directory.get_error, do not ask that peer again for this long
DATABASE_BATCH = 256  #: received database messages applied per transaction
MAX_DROPPED = 64  #: dropped connections remembered until the runtime closes them
MAX_LISTED = 200  #: keys listed as out of sync or not sent in status()

class ShareEngine:
    """One share's sync engine. See the module docstring for the whole story.

    ``local`` is the share's local side, ``replica`` its records, ``board``
    the device's limits, ``rng`` the random source (request order, conflict
    names); ``extensions``
    are the extensions this side implements (``rsync`` may be left out).
    """

    def __init__(self, local: LocalShare, replica: Replica, board: BoardProfile,
                 rng: random.Random, *,
                 extensions: frozenset[str] = frozenset({"database", "directory", "rsync"}),
                 error_retry: float = ERROR_RETRY, presence_max_bytes: int | None = None,
                 stream_blocks: int = 4) -> None:
        self.local = local
        self.replica = replica
        self.rng = rng
        self.read_only = replica.read_only
        self.extensions = extensions
        self.stream_blocks = stream_blocks
        ctx = self._ctx = SyncContext(local, replica, board, rng, extensions, error_retry,
                                      presence_max_bytes)
        ctx.planner = Planner(ctx)
        ctx.fetcher = Fetcher(ctx)
        ctx.rsync = RsyncFetch(ctx)
        ctx.landing = Landing(ctx)
        ctx.conflicts = Conflicts(ctx)
        ctx.changes = LocalChanges(ctx)
        self._serving = Serving(ctx)
        self._streams = StreamReads(ctx, stream_blocks)
        self._database_inbox: list[tuple[Any, Message]] = []
        self._dropped: dict[Any, str] = {}
        self._drops: list[tuple[Any, str]] = []

    @property
    def ctx(self) -> SyncContext:
        """The parts and their shared state (for diagnostics and tests)."""
        return self._ctx

    @property
    def board(self) -> BoardProfile:
        """The device's limits (the daemon may swap them while running)."""
        return self._ctx.board

    @board.setter
    def board(self, board: BoardProfile) -> None:
        self._ctx.board = board

    @property
    def chunk_size(self) -> int:
        """Payload chunk sent, and piece of a file read, at once."""
        return self._ctx.chunk_size

    @property
    def presence_max(self) -> int:
        """Largest presence filter sent or accepted."""
        return self._ctx.presence_max

    @property
    def bounds(self) -> PeerBounds:
        """Per-peer limits from the board."""
        return self._ctx.bounds

    @property
    def last_scan(self) -> ScanResult | None:
        """The result of the last completed scan pass."""
        return self._ctx.changes.last_scan

    @property
    def last_scan_seconds(self) -> float:
        """Wall time of the last completed scan pass."""
        return self._ctx.changes.last_scan_seconds

    @property
    def mode(self) -> SyncMode:
        """Which way changes flow (:mod:`~csembed.directory.share_policy`)."""
        return self._ctx.mode

    def set_mode(self, mode: SyncMode, now: float) -> None:
        """Change the mode: leaving receive-only sends the local changes kept back,
        leaving send-only applies the peers' changes held back."""
        self._ctx.now = now
        self._apply_database()
        if mode is not self._ctx.mode:
            self._ctx.changes.set_mode(mode, now)
            self._after()

    def override_changes(self, now: float) -> int:
        """Send-only: send this disk's state at every key listed out of sync."""
        self._ctx.now = now
        self._apply_database()
        count = self._ctx.changes.override(now)
        self._after()
        return count

    def revert_changes(self, now: float) -> int:
        """Receive-only: drop the local changes not sent; the share's versions return."""
        self._ctx.now = now
        self._apply_database()
        count = self._ctx.changes.revert()
        self._after()
        return count

    # -- connections ---------------------------------------------------------------

    def connect(self, conn_id: Any, info: PeerInfo, now: float) -> None:
        """A peer is ready on ``conn_id``: start the database and presence exchange."""
        ctx = self._ctx
        ctx.now = now
        if conn_id in ctx.peers:
            raise ValueError(f"connection {conn_id!r} is already connected")
        self._dropped.pop(conn_id, None)
        peer = PeerState(conn_id, info)
        ctx.peers[conn_id] = peer
        if "database" in info.extensions:
            ctx.route(ctx.replica.attach(conn_id, peer_read_only=info.read_only,
                                         peer_id=info.peer_id))
            # Updates are pulled as the socket drains (outgoing), never pushed at
            # commit: a slow peer's queue stays bounded.
            ctx.replica.pause(conn_id)
        if peer.directory:
            peer.out.push(msg.encode(msg.GetPresence()))
            peer.presence_asked = True

    def disconnect(self, conn_id: Any) -> None:
        """The connection closed: drop its requests; partial files stay for resuming."""
        self._dropped.pop(conn_id, None)
        self._apply_database()
        self._forget(conn_id)
        self._ctx.fetcher.schedule()

    def _forget(self, conn_id: Any) -> None:
        ctx = self._ctx
        peer = ctx.peers.pop(conn_id, None)
        if peer is None:
            return
        ctx.replica.detach(conn_id)
        peer.out.clear()
        if peer.sink is not None:
            peer.sink.abandon()
        ctx.fetcher.disconnect(peer)
        self._serving.disconnect(peer)

    def _drop(self, peer: PeerState, reason: str) -> None:
        """``peer`` broke a bound: forget it and tell the runtime to close the link."""
        log.warning("dropping peer %s on %s: %s", peer.info.peer_id[:8], peer.conn_id, reason)
        self._forget(peer.conn_id)
        self._dropped[peer.conn_id] = reason
        while len(self._dropped) > MAX_DROPPED:
            del self._dropped[next(iter(self._dropped))]
        self._drops.append((peer.conn_id, reason))
        del self._drops[:-MAX_DROPPED]
        self._ctx.fetcher.schedule()  # its transfers go to other peers

    def dropped(self, conn_id: Any) -> str | None:
        """Why ``conn_id`` was dropped (its link should be closed), or ``None``."""
        return self._dropped.get(conn_id)

    def take_drops(self) -> list[tuple[Any, str]]:
        """Connections dropped since the last call, with the reason (for the runtime)."""
        drops, self._drops = self._drops, []
        return drops

    def outgoing_backlog(self, conn_id: Any) -> int:
        """Reply bytes queued for ``conn_id`` and not yet handed out (0 if unknown)."""
        peer = self._ctx.peers.get(conn_id)
        return 0 if peer is None else peer.out.queued_control_bytes

    def may_read(self, conn_id: Any) -> bool:
        """Whether to read more from ``conn_id`` (False while its replies back up)."""
        peer = self._ctx.peers.get(conn_id)
        return peer is not None and (
            peer.out.queued_control_bytes < self._ctx.bounds.queue_soft
            and peer.out.bulk_items < self._ctx.bounds.queued_requests)

    def peers(self) -> list[dict[str, Any]]:
        """Connected peers and what they sent and received."""
        return [{"conn": str(p.conn_id), "peer_id": p.info.peer_id,
                 "read_only": p.info.read_only, "extensions": sorted(p.info.extensions),
                 "presence": None if p.filter is None else (
                     "everything" if p.filter.is_everything else "filter"),
                 "claims": len(p.present), "refusals": len(p.absent),
                 "bytes_received": p.bytes_received, "bytes_sent": p.bytes_sent}
                for p in self._ctx.peers.values()]

    # -- output --------------------------------------------------------------------

    def outgoing(self, conn_id: Any, max_bytes: int = 1 << 20) -> list[bytes]:
        """Wire units for ``conn_id``, about ``max_bytes`` of them, made now."""
        self._apply_database()
        peer = self._ctx.peers.get(conn_id)
        if peer is None:
            return []
        self._serving.uploads.confirm(conn_id)  # what it pulled before is sent by now
        replica = self._ctx.replica
        if peer.out.queued_control_bytes < max_bytes and replica.has_pending(conn_id):
            for item in replica.pull(conn_id):
                peer.out.push(item.encode())
        units = peer.out.pull(max_bytes)
        if peer.presence_stale and peer.out.queued_control_bytes < self._ctx.bounds.queue_soft:
            self._serving.send_presence(peer)  # announcements were skipped meanwhile
        return units

    def has_outgoing(self, conn_id: Any) -> bool:
        """Whether :meth:`outgoing` has (or may have) something for ``conn_id``."""
        self._apply_database()
        peer = self._ctx.peers.get(conn_id)
        if peer is None:
            return False
        self._serving.uploads.confirm(conn_id)  # asked after a flush: sent by now
        return bool(peer.out) or peer.presence_stale or self._ctx.replica.has_pending(conn_id)

    # -- input ---------------------------------------------------------------------

    def receive(self, conn_id: Any, event: Message | PayloadChunk | PayloadEnd,
                now: float) -> None:
        """One event from a connection. Bad peer input is logged and dropped, never raised."""
        ctx = self._ctx
        ctx.now = now
        peer = ctx.peers.get(conn_id)
        if peer is None:
            return
        try:
            self._receive(peer, event)
        except ShareUnavailable as exc:
            ctx.report.set_error(str(exc))
        except (DirectoryError, OSError) as exc:
            # A disk problem while acting on the message: report it, keep the link.
            log.error("while handling %s from %s: %s", type(event).__name__,
                      peer.info.peer_id[:8], exc)
            ctx.report.fail("/", f"local error: {exc}")
        if peer.out.queued_control_bytes > ctx.bounds.queue_hard and conn_id in ctx.peers:
            self._drop(peer, f"more than {ctx.bounds.queue_hard} bytes of replies queued "
                             f"and not read")

    def _receive(self, peer: PeerState, event: Message | PayloadChunk | PayloadEnd) -> None:
        ctx = self._ctx
        if isinstance(event, PayloadChunk):
            peer.bytes_received += len(event.data)
            ctx.report.count("payload_received", len(event.data))
            if peer.sink is not None:
                peer.sink.chunk(event.data)
            return
        if isinstance(event, PayloadEnd):
            sink, peer.sink = peer.sink, None
            if sink is not None:
                sink.end()
            self._after()
            return
        peer.sink = None
        kind = event.type
        if kind.startswith("database.") and not event.has_payload:
            # Applied in batches: one transaction for a run of updates.
            self._database_inbox.append((peer.conn_id, event))
            if len(self._database_inbox) >= DATABASE_BATCH:
                self._apply_database()
            return
        self._apply_database()
        handled: Any = None
        if (kind in msg.DIRECTORY_TYPES and peer.directory) or (
                kind in msg.RSYNC_TYPES and peer.rsync and "rsync" in ctx.extensions):
            try:
                parsed = msg.parse(event)
            except msg.SyncMessageError as exc:
                log.warning("from %s: dropped %s", peer.info.peer_id[:8], exc)
            else:
                handled = DISPATCH[type(parsed)](self, peer, parsed)
        if event.has_payload:
            peer.sink = handled if handled is not None else Discard()
        self._after()

    def _apply_database(self) -> None:
        """Hand the database messages received so far to the replica, in one batch."""
        if not self._database_inbox:
            return
        ctx = self._ctx
        ctx.planner.start()
        inbox, self._database_inbox = self._database_inbox, []
        with ctx.replica.batch() as batch:
            for conn_id, message in inbox:
                if conn_id in ctx.peers:
                    ctx.replica.receive(conn_id, message)
        ctx.route(batch.outgoing)
        self._after()

    def _after(self) -> None:
        """After any input: act on database events, plan, schedule."""
        ctx = self._ctx
        if len(ctx.landing) and not ctx.fetcher.active:
            ctx.landing.land()  # nothing else is coming soon to share the syncs with
        ctx.planner.drain_events()
        ctx.planner.plan_dirty()
        ctx.fetcher.schedule()

    def presence_filter(self) -> BloomFilter:
        """Our bloom filter: every content held in the share or the archive."""
        return self._serving.presence_filter()

    # -- scanning (local changes) --------------------------------------------------

    def scan_due(self, now: float) -> bool:
        """Whether a scan pass is running or should start now."""
        return self._ctx.changes.due(now)

    def request_scan(self) -> None:
        """Scan at the next opportunity (the daemon's rescan command)."""
        self._ctx.changes.request_scan()

    @property
    def scanning(self) -> bool:
        """A scan pass is in progress."""
        return self._ctx.changes.pass_ is not None

    @property
    def scan_hashed_bytes(self) -> int:
        """Bytes the scan pass in progress has hashed so far (0 when none runs)."""
        scan = self._ctx.changes.pass_
        return 0 if scan is None else scan.hashed_bytes

    def scan(self, now: float, until: float | None = None,
             clock: Callable[[], float] | None = None) -> bool:
        """Run the scan pass (starting one if needed) until done or ``clock() >= until``.

        A slice of scanning is work (reading files) that only a clock can stop
        on time, so the call that starts it lends one (monotonic, like
        ``until``); the engine keeps none. Returns True when the pass ended
        and its changes were handled.
        """
        self._ctx.now = now
        self._apply_database()
        done, result = self._ctx.changes.run(now, until, clock)
        if result is not None:
            self._apply_database()
            if done:
                self._ctx.changes.apply(result, now)
            else:  # hashed so far: announce it while the scan goes on
                self._ctx.changes.apply_early(result, now)
            self._after()
        return done

    # -- timers --------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Let time pass: retries come due, expired bans go, planning runs."""
        ctx = self._ctx
        self._apply_database()
        ctx.now = now
        ctx.fetcher.expire_bans(now)
        ctx.landing.due(now)
        ctx.planner.due(now)
        self._after()

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` (or :meth:`scan`) should next run, or ``None``."""
        ctx = self._ctx
        times = [ctx.planner.deadline(), ctx.fetcher.deadline(), ctx.landing.deadline(),
                 ctx.changes.next_scan]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    # -- streaming -----------------------------------------------------------------

    def open_stream(self, key: str) -> RemoteStream:
        """A :class:`RemoteStream` over the file record at ``key``."""
        self._apply_database()
        return self._streams.start(key)

    def close_stream(self, stream: RemoteStream) -> None:
        """Stop a stream; data still arriving for it is discarded."""
        self._streams.close(stream)

    def stream_read(self, stream: RemoteStream, offset: int, count: int) -> bytes | None:
        """Up to ``count`` bytes at ``offset`` -- fewer when more than the stream's
        cache holds -- or ``None`` after requesting what is missing (read again on
        update). Raises :class:`StreamError` (no peer has it; whole file read and
        its SHA-256 does not match)."""
        return self._streams.read(stream, offset, count)

    # -- status --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The share's state for the daemon's ``status`` command (keys: :mod:`.sync_report`)."""
        self._apply_database()
        ctx = self._ctx
        planner, fetcher = ctx.planner, ctx.fetcher
        pending = list(planner.wants.values())
        remaining = sum(w.size for w in pending) - sum(t.done for t in fetcher.active.values())
        view = status_view(
            ctx.report, read_only=self.read_only, scanning=self.scanning,
            files_to_sync=sum(len(w.keys) for w in pending), bytes_to_sync=remaining,
            transfers=len(fetcher.active), waiting=len(planner.queue.waiting),
            landing=len(ctx.landing), peers=len(ctx.peers),
            unavailable=planner.unavailable(), conflicts=sorted(planner.conflict_keys),
            last_scan_seconds=self.last_scan_seconds)
        unsent = ctx.changes.unsent
        view.update(sync_mode=ctx.mode.value,
                    out_of_sync=sorted(planner.out_of_sync)[:MAX_LISTED],
                    out_of_sync_count=len(planner.out_of_sync),
                    not_sent=unsent.keys(MAX_LISTED), not_sent_count=len(unsent),
                    ignore_error=ctx.changes.ignore.error)
        return view

    def transfers(self) -> list[dict[str, Any]]:
        """Files being fetched: key, bytes done and total, peer, method."""
        return self._ctx.fetcher.transfers()

    def uploads(self, now: float | None = None) -> list[dict[str, Any]]:
        """Files being sent, per peer: key, peer, bytes done and total (``now``:
        the caller's wall clock, which ends uploads idle too long; see :mod:`.uploads`)."""
        return self._serving.uploads.views(self._ctx.now if now is None else now)

    def stats(self) -> dict[str, int]:
        """Counters since start (files fetched, copied, by rsync; payload bytes)."""
        return dict(self._ctx.report.counters)

    def close(self) -> None:
        """Abort transfers (partials kept) and stop any scan in progress."""
        ctx = self._ctx
        ctx.fetcher.close()
        ctx.landing.land()
        ctx.local.store.flush()
        ctx.changes.close()


Handler = Callable[["ShareEngine", PeerState, Any], Any]

#: parsed peer message -> what to do with it; a handler returns the payload's sink, if any
DISPATCH: dict[type, Handler] = {
    msg.GetPresence: lambda e, p, m: e._serving.send_presence(p),
    msg.BloomFilterHeader: lambda e, p, m: e._serving.on_filter(p, m.k_value),
    msg.Present: lambda e, p, m: e._serving.on_present(p, m.sha256),
    msg.PresentMany: lambda e, p, m: e._serving.on_present_many(p, m.sha256s),
    msg.Get: lambda e, p, m: e._serving.serve_get(p, m),
    msg.SignatureHeader: lambda e, p, m: e._serving.on_signature(p, m),
    msg.DataHeader: lambda e, p, m: e._ctx.fetcher.on_data(p, m),
    msg.NotPresent: lambda e, p, m: e._ctx.fetcher.on_not_present(p, m.sha256),
    msg.GetError: lambda e, p, m: e._ctx.fetcher.on_get_error(p, m),
    msg.PatchHeader: lambda e, p, m: e._ctx.rsync.on_patch(p, m),
}

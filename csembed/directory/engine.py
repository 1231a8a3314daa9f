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

    engine = ShareEngine(local_share, replica, board, rng, clock=time.monotonic)
    engine.connect(conn_id, PeerInfo(peer_id, read_only, extensions), now)
    engine.receive(conn_id, event, now)     # Message | PayloadChunk | PayloadEnd
    engine.outgoing(conn_id, max_bytes)     # -> list[bytes]: wire units, made lazily
    engine.has_outgoing(conn_id)            # -> bool
    engine.disconnect(conn_id)
    engine.scan_due(now); engine.scan(now, until=None)   # -> True when the pass ended
    engine.tick(now); engine.next_deadline()             # -> float | None
    engine.status(); engine.transfers(); engine.stats(); engine.peers()
    engine.request_scan(); engine.close()
    stream = engine.open_stream(key); engine.stream_read(stream, offset, count)
    engine.close_stream(stream)

Every call may queue output for any connection; after each one the runtime
asks every connection for :meth:`outgoing`. Output is produced when pulled:
file contents are read one ``chunk_size`` piece at a time as the socket
drains (:mod:`.transfer_serve`), database updates are pulled from the
replica in batches. Received database messages are applied in batches too
(one transaction for a run of them, at the next call that is not another
database message), so a peer's backlog costs one commit per few hundred
records; peer input that is wrong is logged and dropped, never raised.

**Local changes.** A scan pass (:meth:`scan`, paced by the runtime) reports
``Added``/``Modified``/``Deleted``/``Moved``; on a read-write share they are
written to the database (one transaction per 512 changes) -- a move as a re-keying of the
same record (same ``uuid``), unknown fields of the old value kept -- and only
then is the scan committed to the scan cache, so a crash in between repeats
the changes rather than losing them. New content is announced with
``directory.present``. A read-only share sends nothing: a local edit of a
synced file is moved aside to ``name.CONFLICT.xxxxxxxx.ext`` (so the user's
work stays) and the share's version is restored; local additions stay
local. Both are reported in :meth:`status` under ``notices``.

**Remote changes.** Each ``RecordChanged`` from the replica is checked (key
and value; a bad one is *rejected*: logged with the reason, listed in
``status()["rejected"]``, nothing on disk touched) and acted on: a rename
moves the local file or folder (:meth:`FileStore.rename_local`), a deletion
archives and removes it unless it changed locally unseen (then it stays and
the next scan sends it again), a directory is created, and content we lack is
copied from an identical local file or archived version when there is one,
else *wanted*. Wanted content is fetched (:mod:`.transfer_fetch`): hashes
picked at random, only from a peer whose presence filter or ``present``
messages claim it (a ``0xff`` filter claims everything: we probe), with at
most ``max_open_transfers`` files and ``max_bytes_in_flight`` requested bytes
at once; ``range`` requests resume a partial temp file after a crash or a
dropped connection. A file at least ``cpu.rsync_threshold`` long of which we
hold an older version is fetched with ``rsync.signature``/``rsync.patch``
when the peer negotiated ``rsync`` and the signature fits
``memory.max_signature``; any rsync failure falls back to a whole-file get.
``directory.not_present`` sends us to another peer; ``directory.get_error``
stops us asking that peer for that content for hours. Every file is verified
against its SHA-256 before it replaces anything, and before it is put in
place the record is looked up again, so a download made stale by a newer
change is never committed.

**Landing in batches.** A verified download waits briefly to be put in
place together with others (:meth:`FileStore.commit_batch`: one data sync
and one folder sync for the lot instead of two per file): the batch lands
when it holds ``LANDING[write_policy][0]`` files, when no other transfer is
running, or ``LANDING[write_policy][1]`` seconds after its first file
(:meth:`next_deadline` asks for a tick then); ``flash`` boards batch more.
Until then the file counts as still syncing, and the record is looked up
again as it lands.

**Conflicts.** The database picks a winner by its rule; the peer that wrote
the losing version keeps the loser's content as a ``CONFLICT`` copy with
``conflict_source`` (the original ``uuid``) and syncs it like any file. Only
that peer acts (``loser.last_updated_by`` is our peer ID), so the copy is
made once, not once per peer. A remote version that arrives for a file the
user changed unseen is kept as a ``CONFLICT`` copy itself (the draft:
"this would result in a conflict being created once the remote file has
finally downloaded"), and the user's change is sent by the next scan.

**Limits.** A file over the board's ``max_file_size``, the ``quota`` or the
``free_space_reserve`` is not downloaded; ``status()["limits"]`` names the
file, the limit and why.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import stat
from collections import deque
from collections.abc import Callable, Generator
from typing import Any, BinaryIO, cast

from csembed.board_profile import BoardProfile
from csembed.database import (
    Conflict,
    ConflictKind,
    LocalWriteError,
    Outgoing,
    Record,
    RecordChanged,
    Replica,
    UpdateRejected,
)
from csembed.directory import sync_messages as msg
from csembed.directory.bloom import BloomFilter
from csembed.directory.errors import (
    BloomError,
    DirectoryError,
    LocalChangeConflict,
    PathError,
    RecordError,
    ShareUnavailable,
    StorageLimitError,
    VerificationError,
)
from csembed.directory.filestore import Download
from csembed.directory.local_share import LocalShare
from csembed.directory.pacing import next_scan_delay
from csembed.directory.paths import split_key
from csembed.directory.reader import ContentSource
from csembed.directory.records import FileValue, is_file_key, merge_value
from csembed.directory.scan_cache import CachedEntry
from csembed.directory.scanner import Added, Deleted, Modified, Moved, ScanPass, ScanResult
from csembed.directory.transfer_fetch import PeerInfo, PeerState, PickQueue, Request, Transfer, Want
from csembed.directory.transfer_serve import payload_units, serve_data, serve_patch
from csembed.directory.transfer_stream import RemoteStream, StreamError
from csembed.protocol.wire import (
    Message,
    PayloadChunk,
    PayloadEnd,
    encode_chunk,
    encode_payload_end,
)
from csembed.rsync import (
    Patcher,
    RsyncError,
    Signature,
    SignatureParams,
    SignatureWriter,
)
from csembed.rsync.signature import signature_size

__all__ = ["PeerInfo", "ShareEngine", "StreamError"]

log = logging.getLogger("csembed.sync")

ERROR_RETRY = 4 * 3600.0  #: after directory.get_error, do not ask that peer again for this long
RETRY_BASE = 5.0  #: first delay after a failed transfer; doubles per failure
RETRY_MAX = 3600.0
MAX_QUEUED_REQUESTS = 4096  #: directory.get / rsync.signature a peer may have waiting on us
MAX_REPORTED = 200  #: entries kept in each status list
STALE_TEMP_SECONDS = 24 * 3600.0
_MODE_BITS = 0o777  # permission bits a peer may set here (filestore applies the same)
ABSENT_RETRY = 60.0  #: after directory.not_present, ask that peer again after this long
FLUSH_DELAY = 1.0  #: seconds a deferred folder sync may wait (write policy ``flash``)
#: verified downloads put in place together (shared syncs), by write policy:
#: (most at once, longest wait in seconds while other transfers still run)
LANDING = {"normal": (32, 0.05), "flash": (64, 0.25)}
VALUE_CACHE = 1024  #: parsed record values kept (by uuid and version)
SCAN_BATCH = 512  #: local changes written per database transaction
DATABASE_BATCH = 256  #: received database messages applied per transaction


class _Discard:
    """Sink for a payload nobody wants."""

    def chunk(self, data: bytes) -> None:
        pass

    def end(self) -> None:
        pass


class _BasisFile:
    """A read-only, seekable file over a verified :class:`ContentSource` (rsync basis)."""

    def __init__(self, source: ContentSource) -> None:
        self.source = source
        self.pos = 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.source.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        count = self.source.size - self.pos if n < 0 else min(n, self.source.size - self.pos)
        if count <= 0:
            return b""
        data = b"".join(self.source.chunks(self.pos, count, count))
        self.pos += len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.source.close()


class ShareEngine:
    """One share's sync engine. See the module docstring for the whole story.

    ``local`` is the share's local side, ``replica`` its records, ``board``
    the device's limits, ``rng`` the random source (request order, conflict
    names). ``clock`` (monotonic seconds) paces scan slices; ``extensions``
    are the extensions this side implements (``rsync`` may be left out).
    """

    def __init__(self, local: LocalShare, replica: Replica, board: BoardProfile,
                 rng: random.Random, *, clock: Callable[[], float] | None = None,
                 extensions: frozenset[str] = frozenset({"database", "directory", "rsync"}),
                 error_retry: float = ERROR_RETRY, presence_max_bytes: int | None = None,
                 stream_blocks: int = 4) -> None:
        self.local = local
        self.replica = replica
        self.board = board
        self.rng = rng
        self.read_only = replica.read_only
        self.extensions = extensions
        self.error_retry = error_retry
        self._clock = clock
        self._presence_max = presence_max_bytes
        self.stream_blocks = stream_blocks
        self._now = 0.0
        self._peers: dict[Any, PeerState] = {}
        self._wants: dict[str, Want] = {}
        self._key_want: dict[str, str] = {}
        self._queue = PickQueue(rng)
        self._delayed: dict[str, float] = {}  #: after a failure: retry time
        self._refused: dict[str, float] = {}  #: every peer said not_present: retry time
        self._active: dict[str, Transfer] = {}
        self._in_flight = 0
        self._bans: dict[tuple[str, str], float] = {}
        self._rsync_failed: set[str] = set()
        self._dirty: set[str] = set()
        self._full_plan = True
        self._streams: set[RemoteStream] = set()
        self._values: dict[tuple[str, tuple[str, int]], tuple[str, FileValue]] = {}
        self._kept: set[tuple[str, tuple[str, int]]] = set()  #: remote versions kept aside
        self._flush_at: float | None = None
        self._landing: list[tuple[Download, Transfer | None]] = []  #: verified, not yet placed
        self._landing_shas: set[str] = set()
        self._land_at: float | None = None
        self._database_inbox: list[tuple[Any, Message]] = []
        # status
        self._error: str | None = None
        self._limits: dict[str, dict[str, str]] = {}
        self._rejected: deque[dict[str, str]] = deque(maxlen=MAX_REPORTED)
        self._notices: deque[dict[str, str]] = deque(maxlen=MAX_REPORTED)
        self._failures: dict[str, dict[str, str]] = {}
        self._counters = {"files_fetched": 0, "bytes_fetched": 0, "files_copied": 0,
                          "files_rsync": 0, "payload_received": 0, "payload_sent": 0,
                          "scans": 0, "local_changes": 0, "conflicts": 0}
        # scanning
        self._scan: ScanPass | None = None
        self._scan_began = 0.0
        self._next_scan: float | None = 0.0
        self.last_scan_seconds = 0.0
        self.last_scan: ScanResult | None = None

    # -- limits from the board (read each time: the daemon may swap the board) ---------

    @property
    def chunk_size(self) -> int:
        """Payload chunk sent, and piece of a file read, at once."""
        return self.board.memory.chunk_size

    @property
    def max_open(self) -> int:
        """Files fetched at once."""
        return self.board.memory.max_open_transfers

    @property
    def max_in_flight(self) -> int:
        """Bytes requested and not yet received, all transfers."""
        return self.board.memory.max_bytes_in_flight

    @property
    def presence_max(self) -> int:
        """Largest presence filter sent or accepted."""
        return self._presence_max or min(1 << 20, self.board.memory.max_message)

    # -- connections ---------------------------------------------------------------

    def connect(self, conn_id: Any, info: PeerInfo, now: float) -> None:
        """A peer is ready on ``conn_id``: start the database and presence exchange."""
        self._now = now
        if conn_id in self._peers:
            raise ValueError(f"connection {conn_id!r} is already connected")
        peer = PeerState(conn_id, info)
        self._peers[conn_id] = peer
        if "database" in info.extensions:
            self._route(self.replica.attach(conn_id, peer_read_only=info.read_only,
                                            peer_id=info.peer_id))
        if peer.directory:
            peer.out.push(msg.get_presence())

    def disconnect(self, conn_id: Any) -> None:
        """The connection closed: drop its requests; partial files stay for resuming."""
        self._apply_database()
        peer = self._peers.pop(conn_id, None)
        if peer is None:
            return
        self.replica.detach(conn_id)
        peer.out.clear()
        for request in peer.requests:
            self._release(request)
            if request.stream is not None:
                request.stream.abandon(request.start // request.stream.block_size)
        peer.requests.clear()
        if isinstance(peer.sink, _Sink):
            peer.sink.abandon()
        for transfer in [t for t in self._active.values() if t.conn_id == conn_id]:
            self._abort_transfer(transfer, retry_at=self._now)
        self._schedule()

    def peers(self) -> list[dict[str, Any]]:
        """Connected peers and what they sent and received."""
        return [{"conn": str(p.conn_id), "peer_id": p.info.peer_id,
                 "read_only": p.info.read_only, "extensions": sorted(p.info.extensions),
                 "presence": None if p.filter is None else (
                     "everything" if p.filter.is_everything else "filter"),
                 "bytes_received": p.bytes_received, "bytes_sent": p.bytes_sent}
                for p in self._peers.values()]

    # -- output --------------------------------------------------------------------

    def outgoing(self, conn_id: Any, max_bytes: int = 1 << 20) -> list[bytes]:
        """Wire units for ``conn_id``, about ``max_bytes`` of them, made now."""
        self._apply_database()
        peer = self._peers.get(conn_id)
        if peer is None:
            return []
        if peer.out.queued_control_bytes < max_bytes and self.replica.has_pending(conn_id):
            for item in self.replica.pull(conn_id):
                peer.out.push(item.encode())
        return peer.out.pull(max_bytes)

    def has_outgoing(self, conn_id: Any) -> bool:
        """Whether :meth:`outgoing` has (or may have) something for ``conn_id``."""
        self._apply_database()
        peer = self._peers.get(conn_id)
        if peer is None:
            return False
        return bool(peer.out) or self.replica.has_pending(conn_id)

    def _route(self, items: list[Outgoing] | tuple[Outgoing, ...]) -> None:
        for item in items:
            peer = self._peers.get(item.conn_id)
            if peer is not None:
                peer.out.push(item.encode())

    def _announce(self, sha256: str, source: Any = None) -> None:
        """``directory.present`` to every peer but ``source`` (it sent us the content)."""
        for peer in self._peers.values():
            if peer.directory and peer.conn_id != source:
                peer.out.push(msg.present(sha256))

    # -- input ---------------------------------------------------------------------

    def receive(self, conn_id: Any, event: Message | PayloadChunk | PayloadEnd,
                now: float) -> None:
        """One event from a connection. Bad peer input is logged and dropped, never raised."""
        self._now = now
        peer = self._peers.get(conn_id)
        if peer is None:
            return
        try:
            self._receive(peer, event)
        except ShareUnavailable as exc:
            self._set_error(str(exc))
        except (DirectoryError, OSError) as exc:
            # A disk problem while acting on the message: report it, keep the link.
            log.error("while handling %s from %s: %s", type(event).__name__,
                      peer.info.peer_id[:8], exc)
            self._fail("/", f"local error: {exc}")

    def _receive(self, peer: PeerState, event: Message | PayloadChunk | PayloadEnd) -> None:
        conn_id = peer.conn_id
        if isinstance(event, PayloadChunk):
            peer.bytes_received += len(event.data)
            self._counters["payload_received"] += len(event.data)
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
            self._database_inbox.append((conn_id, event))
            if len(self._database_inbox) >= DATABASE_BATCH:
                self._apply_database()
            return
        self._apply_database()
        if kind.startswith("database."):
            peer.sink = _Discard()
        elif (kind in msg.DIRECTORY_TYPES and peer.directory) or (
                kind in msg.RSYNC_TYPES and peer.rsync and "rsync" in self.extensions):
            try:
                parsed = msg.parse(event)
            except msg.SyncMessageError as exc:
                log.warning("from %s: dropped %s", peer.info.peer_id[:8], exc)
                if event.has_payload:
                    peer.sink = _Discard()
            else:
                self._dispatch(peer, parsed)
        elif event.has_payload:
            peer.sink = _Discard()
        self._after()

    def _apply_database(self) -> None:
        """Hand the database messages received so far to the replica, in one batch."""
        if not self._database_inbox:
            return
        inbox, self._database_inbox = self._database_inbox, []
        with self.replica.batch() as batch:
            for conn_id, message in inbox:
                if conn_id in self._peers:
                    self.replica.receive(conn_id, message)
        self._route(batch.outgoing)
        self._after()

    def _dispatch(self, peer: PeerState, parsed: msg.SyncMessage) -> None:
        if isinstance(parsed, msg.GetPresence):
            self._send_presence(peer)
        elif isinstance(parsed, msg.BloomFilterHeader):
            peer.sink = _BloomSink(self, peer, parsed.k_value)
        elif isinstance(parsed, msg.Present):
            peer.present.add(parsed.sha256)
            peer.absent.pop(parsed.sha256, None)
            self._queue.wake(parsed.sha256)
            if self._refused.pop(parsed.sha256, None) is not None:
                self._queue.add(parsed.sha256)
        elif isinstance(parsed, msg.Get):
            self._serve_get(peer, parsed)
        elif isinstance(parsed, msg.DataHeader):
            self._on_data(peer, parsed)
        elif isinstance(parsed, msg.NotPresent):
            self._on_not_present(peer, parsed.sha256)
        elif isinstance(parsed, msg.GetError):
            self._on_get_error(peer, parsed)
        elif isinstance(parsed, msg.SignatureHeader):
            self._on_signature(peer, parsed)
        elif isinstance(parsed, msg.PatchHeader):
            self._on_patch(peer, parsed)

    def _after(self) -> None:
        """After any input: act on database events, plan, schedule."""
        if self._landing and not self._active:
            self._land()  # nothing else is coming soon to share the syncs with
        self._drain_events()
        self._plan_dirty()
        self._schedule()

    # -- presence ------------------------------------------------------------------

    def presence_filter(self) -> BloomFilter:
        """Our bloom filter: every content held in the share or the archive."""
        hashes = set(self.local.cache.hashes())
        hashes.update(item.sha256 for item in self.local.archive.entries())
        return BloomFilter.for_hashes(hashes, len(hashes), max_bytes=self.presence_max)

    def _send_presence(self, peer: PeerState) -> None:
        bloom = self.presence_filter()
        data = bloom.to_bytes()
        pieces = (data[i:i + self.chunk_size] for i in range(0, len(data), self.chunk_size))
        peer.out.push_stream(payload_units(msg.bloom_filter(bloom.k), pieces))

    def _presence_changed(self) -> None:
        self._queue.wake()
        for sha in self._refused:
            if sha in self._wants and sha not in self._active:
                self._queue.add(sha)
        self._refused.clear()

    # -- serving -------------------------------------------------------------------

    def _count_sent(self, peer: PeerState) -> Callable[[int], None]:
        def sent(n: int) -> None:
            peer.bytes_sent += n
            self._counters["payload_sent"] += n
        return sent

    def _serve_get(self, peer: PeerState, request: msg.Get) -> None:
        if peer.out.bulk_items >= MAX_QUEUED_REQUESTS:
            peer.out.push(msg.not_present(request.sha256))
            return
        peer.out.push_stream(serve_data(self.local.reader, request.sha256, request.range,
                                        self.chunk_size, self._count_sent(peer)))

    def _on_signature(self, peer: PeerState, header: msg.SignatureHeader) -> None:
        if peer.out.bulk_items >= MAX_QUEUED_REQUESTS:
            peer.sink = _Discard()
            peer.out.push(msg.not_present(header.sha256))
            return
        peer.sink = _SignatureSink(self, peer, header.sha256,
                                   Signature(max_size=self.board.memory.max_signature))

    # -- scanning (local changes) --------------------------------------------------

    def scan_due(self, now: float) -> bool:
        """Whether a scan pass is running or should start now."""
        return self._scan is not None or (self._next_scan is not None and now >= self._next_scan)

    def request_scan(self) -> None:
        """Scan at the next opportunity (the daemon's rescan command)."""
        if self._scan is None:
            self._next_scan = 0.0

    @property
    def scanning(self) -> bool:
        """A scan pass is in progress."""
        return self._scan is not None

    @property
    def scan_hashed_bytes(self) -> int:
        """Bytes the scan pass in progress has hashed so far (0 when none runs)."""
        return 0 if self._scan is None else self._scan.hashed_bytes

    def scan(self, now: float, until: float | None = None) -> bool:
        """Run the scan pass (starting one if needed) until done or ``clock() >= until``.

        Returns True when the pass ended and its changes were handled.
        """
        self._now = now
        self._apply_database()
        if self._scan is None:
            try:
                self._scan = self.local.scanner.start(now)
            except ShareUnavailable as exc:
                self._set_error(str(exc))
                self._next_scan = now + self.board.cpu.scan_interval
                return True
            self._scan_began = now
        try:
            if until is None or self._clock is None:
                self._scan.run()
            elif not self._scan.step(until=until, clock=self._clock):
                early = self._scan.take_early()
                if early is not None:  # hashed so far: announce it while the scan goes on
                    self._apply_scan(early, now)
                    self._after()
                return False
        except (ShareUnavailable, OSError) as exc:
            self._scan.close()
            self._scan = None
            self._set_error(str(exc))
            self._next_scan = now + self.board.cpu.scan_interval
            return True
        self._apply_database()
        scan = self._scan
        self._scan = None
        try:
            result = scan.finish()
        finally:
            scan.close()
        self._error = None
        self._apply_scan(result, now)
        self.last_scan = result
        self.last_scan_seconds = max(0.0, now - self._scan_began)
        cpu = self.board.cpu
        due = now + next_scan_delay(self.last_scan_seconds, cpu.scan_interval, cpu.scan_budget)
        if result.pending and result.next_check is not None:
            due = min(due, result.next_check)
        self._next_scan = due
        self._counters["scans"] += 1
        self._after()
        return True

    def _apply_scan(self, result: ScanResult, now: float) -> None:
        for notice in result.notices:
            self._notice(notice.key, notice.reason)
        if self.read_only:
            self.local.scanner.commit(result)
            for event in result.events:
                self._read_only_change(event)
            return
        now_ns = int(now * 1e9)
        fresh: list[str] = []
        events = result.events
        for first in range(0, len(events), SCAN_BATCH):
            # One transaction per slice: bounded memory for the replica's events.
            with self.replica.batch() as batch:
                for event in events[first:first + SCAN_BATCH]:
                    for key in ((event.old_key, event.new_key) if isinstance(event, Moved)
                                else (event.key,)):
                        self._unwant(key)  # the local version supersedes what we fetched
                    try:
                        self._write_local(event, now_ns)
                    except (LocalWriteError, RecordError) as exc:
                        key = event.new_key if isinstance(event, Moved) else event.key
                        self._notice(key, f"local change not recorded: {exc}")
                        continue
                    self._counters["local_changes"] += 1
                    if isinstance(event, Added | Modified | Moved) and event.value.sha256:
                        fresh.append(event.value.sha256)
            self._route(batch.outgoing)
            self._drain_events()
        self.local.scanner.commit(result)
        for sha in dict.fromkeys(fresh):
            self._announce(sha)
        self._clean_temps(result, now)

    def _unseen_remote(self, key: str, previous: FileValue | None) -> Record | None:
        """The record at ``key`` if it holds remote content this disk never had.

        The user changed ``key`` while a newer version from a peer was still
        on its way: writing the change now would silently supersede that
        version, so the caller keeps it as a conflict copy first.
        """
        current = self.replica.get(key)
        if current is None or current.last_updated_by == self.replica.peer_id:
            return None
        value = self._check_record(current)
        if value is None or value.is_directory or value.size == 0:
            return None
        if previous is not None and previous.sha256 == value.sha256:
            return None
        if (current.uuid, current.dot) in self._kept:
            return None  # already kept as a conflict copy when its download landed
        return current

    def _keep_unseen(self, record: Record, now_ns: int) -> None:
        self._kept.add((record.uuid, record.dot))
        aside = self.local.store.conflict_key(record.key)
        value = dict(record.value)
        value["conflict_source"] = record.uuid
        self.replica.local_put(aside, value, now_ns)
        self._dirty.add(aside)
        self._notice(record.key, f"changed here before the version from a peer arrived; "
                                 f"that version is kept as {aside}")

    def _write_local(self, event: Added | Modified | Deleted | Moved, now_ns: int) -> None:
        replica = self.replica
        if isinstance(event, Added | Modified):
            previous = event.previous if isinstance(event, Modified) else None
            unseen = self._unseen_remote(event.key, previous)
            if unseen is not None and str(unseen.value.get("sha256")).lower() \
                    != event.value.sha256:
                try:
                    self._keep_unseen(unseen, now_ns)
                except (DirectoryError, LocalWriteError) as exc:
                    self._notice(event.key, f"could not keep the peer's version: {exc}")
            current = replica.get(event.key)
            replica.local_put(event.key, merge_value(current.value if current else None,
                                                     event.value), now_ns)
        elif isinstance(event, Deleted):
            if self._unseen_remote(event.key, event.previous) is not None:
                self._dirty.add(event.key)  # a newer version exists: fetch it, do not delete
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

    def _read_only_change(self, event: Added | Modified | Deleted | Moved) -> None:
        """A local change on a read-only share: keep the user's file aside, restore ours."""
        if isinstance(event, Moved):
            if self.replica.get(event.old_key) is not None:
                self._notice(event.old_key, "moved locally on a read-only share; restored "
                             f"(the moved copy stays at {event.new_key})")
                self._dirty.add(event.old_key)
            self._read_only_change(Added(event.new_key, event.value))
            return
        key = event.key
        record = self.replica.get(key)
        if isinstance(event, Deleted):
            if record is not None:
                self._notice(key, "deleted locally on a read-only share; restored")
                self._dirty.add(key)
            return
        if record is None:
            if not event.value.is_directory:
                self._notice(key, "local file on a read-only share is not sent to peers")
            return
        try:
            value = FileValue.from_json(record.value)
        except RecordError:
            return
        if value.is_directory or event.value.is_directory or \
                value.sha256 == event.value.sha256:
            return
        try:
            aside = self.local.store.conflict_key(key)
            self.local.store.rename_local(key, aside)
        except (DirectoryError, OSError) as exc:
            self._notice(key, f"changed locally on a read-only share; could not keep it "
                              f"aside: {exc}")
            return
        self._notice(key, f"changed locally on a read-only share; the change was kept as "
                          f"{aside} and the share's version restored")
        self._dirty.add(key)

    def _clean_temps(self, result: ScanResult, now: float) -> None:
        older = int((now - STALE_TEMP_SECONDS) * 1e9)
        for path in result.temp_files:
            try:
                self.local.store.remove_stale_temp(path, older_than_ns=older)
            except (DirectoryError, OSError):
                pass

    # -- database events -----------------------------------------------------------

    def _drain_events(self) -> None:
        while True:
            events = self.replica.take_events()
            if not events:
                return
            for event in events:
                if isinstance(event, Conflict):
                    self._on_conflict(event)
                elif isinstance(event, RecordChanged):
                    if event.conn_id is not None:
                        self._on_record_changed(event.record, event.previous)
                elif isinstance(event, UpdateRejected):
                    self._rejected.append({"uuid": "", "key": "", "reason": event.reason,
                                           "peer": str(event.conn_id)})

    def _check_record(self, record: Record) -> FileValue | None:
        """The record's value if the directory engine may act on it; logs a rejection."""
        if record.deleted:
            try:
                split_key(record.key)
            except PathError as exc:
                self._reject(record, str(exc))
            return None
        version = (record.uuid, record.dot)
        cached = self._values.get(version)
        if cached is not None and cached[0] == record.key:
            return cached[1]
        try:
            split_key(record.key)
            value = FileValue.from_json(record.value)
        except (PathError, RecordError) as exc:
            self._reject(record, str(exc))
            return None
        if len(self._values) >= VALUE_CACHE:
            self._values.clear()
        self._values[version] = (record.key, value)
        return value

    def _reject(self, record: Record, reason: str) -> None:
        log.warning("rejected record %s (key %r) from %s: %s", record.uuid, record.key[:200],
                    record.last_updated_by, reason)
        self._rejected.append({"uuid": record.uuid, "key": record.key[:200],
                               "reason": reason, "peer": record.last_updated_by})

    def _on_record_changed(self, record: Record, previous: Record | None) -> None:
        if not is_file_key(record.key) and (previous is None or not is_file_key(previous.key)):
            return  # another extension's record
        value = self._check_record(record)
        if record.live and value is None:
            return
        if previous is not None and previous.live and is_file_key(previous.key):
            if record.live and previous.key != record.key:
                self._follow_rename(previous.key, record.key, value)
            elif record.deleted:
                self._delete_local(previous.key)
        if is_file_key(record.key):
            self._dirty.add(record.key)
        if previous is not None and previous.key != record.key:
            self._dirty.add(previous.key)

    def _follow_rename(self, old: str, new: str, value: FileValue | None) -> None:
        cache = self.local.cache
        sel = self.local.selection
        cached = cache.get(old)
        if cached is None or new in cache:
            return
        is_dir = cached.is_dir
        if not sel.fetches(new, is_dir) or not sel.in_subtree(new):
            self._delete_local(old)
            return
        try:
            self.local.store.rename_local(old, new)
        except (DirectoryError, OSError) as exc:
            log.info("could not follow the rename of %s to %s: %s", old, new, exc)

    def _delete_local(self, key: str) -> None:
        if self.replica.get(key) is not None or key not in self.local.cache:
            return
        if not self.local.selection.in_subtree(key) or key == self.local.mapper.root_key():
            return
        try:
            self.local.store.delete(key)
        except LocalChangeConflict as exc:
            self._notice(key, f"not deleted: {exc.reason} (it will be sent as a new file)")
        except (DirectoryError, OSError) as exc:
            log.warning("could not delete %s: %s", key, exc)

    def _on_conflict(self, event: Conflict) -> None:
        self._counters["conflicts"] += 1
        winner, loser = event.winner, event.loser
        if self.read_only or loser.last_updated_by != self.replica.peer_id:
            return  # the peer that wrote the loser keeps it
        if loser.deleted or not is_file_key(loser.key):
            return
        try:
            split_key(loser.key)
            lost = FileValue.from_json(loser.value)
        except (PathError, RecordError):
            return
        now_ns = int(self._now * 1e9)
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
                self._local_write(lambda: self.replica.local_delete(
                    loser.key, now_ns, uuid=loser.uuid))
            return
        key = loser.key
        cached = self.local.cache.get(key)
        if cached is None or cached.is_dir or cached.sha256 != lost.sha256:
            return  # the losing content is no longer here to keep
        store = self.local.store
        try:
            aside = store.conflict_key(key)
            store.rename_local(key, aside)
        except (DirectoryError, OSError) as exc:
            log.warning("conflict on %s: could not keep our version: %s", key, exc)
            return
        source = winner.uuid if same_key else loser.uuid
        value = dict(loser.value)
        value["conflict_source"] = source
        log.info("conflict on %s: our version kept as %s", key, aside)
        self._notice(key, f"conflict: the other version won; ours was kept as {aside}")
        if same_key:
            self._local_write(lambda: self.replica.local_put(aside, value, now_ns,
                                                              uuid=loser.uuid))
        else:
            self._local_write(lambda: self.replica.local_put(aside, value, now_ns))
        self._dirty.add(key)

    def _local_write(self, write: Callable[[], Any]) -> None:
        try:
            written = write()
        except LocalWriteError as exc:
            log.warning("local write failed: %s", exc)
            return
        self._route(written.outgoing)

    # -- planning: what the disk should hold -----------------------------------------

    def _plan_dirty(self) -> None:
        if self._full_plan:
            self._full_plan = False
            self._plan_everything()
        while self._dirty:
            keys = sorted(self._dirty)  # parents before children, and a fixed order
            self._dirty.clear()
            for key in keys:
                self._plan(key)

    def _plan_everything(self) -> None:
        deleted: list[str] = []
        for record in self.replica.records(include_deleted=True):
            if not is_file_key(record.key):
                continue
            if record.deleted:
                deleted.append(record.key)
            else:
                self._dirty.add(record.key)
        for key in sorted(deleted, key=lambda k: -k.count("/")):
            if key not in self._dirty:
                self._delete_local(key)

    def _plan(self, key: str) -> None:
        sel = self.local.selection
        if not is_file_key(key) or not sel.in_subtree(key):
            return
        record = self.replica.get(key)
        if record is None:
            self._unwant(key)
            return
        value = self._check_record(record)
        if value is None:
            self._unwant(key)
            return
        if not sel.fetches(key, value.is_directory):
            self._unwant(key)
            return
        cached = self.local.cache.get(key)
        if value.is_directory:
            self._unwant(key)
            if cached is None or not cached.is_dir:
                try:
                    self.local.store.make_directory(key, value)
                except PathError as exc:
                    self._reject(record, str(exc))
                except (DirectoryError, OSError) as exc:
                    self._fail(key, str(exc))
            return
        if cached is not None and not cached.is_dir and cached.sha256 == value.sha256:
            self._unwant(key)
            self._limits.pop(key, None)
            self._failures.pop(key, None)
            if value.unix_mode is not None and (value.unix_mode & _MODE_BITS) != (
                    cached.mode & _MODE_BITS) and record.last_updated_by != self.replica.peer_id:
                self._apply_mode(key, value.unix_mode & _MODE_BITS, cached)
            return
        self._want(key, value, record)

    def _apply_mode(self, key: str, mode: int, cached: CachedEntry) -> None:
        """A peer changed only the permission bits: set them (never set-uid/gid/sticky)."""
        try:
            with self.local.mapper.locate(key) as loc:
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
        self.local.cache.put(dataclasses.replace(
            cached, mode=stat.S_IMODE(info.st_mode), ctime_ns=info.st_ctime_ns))
        self.local.cache.commit()

    def _want(self, key: str, value: FileValue, record: Record) -> None:
        assert value.sha256 is not None and value.size is not None
        sha = value.sha256
        if self._key_want.get(key) not in (None, sha):
            self._unwant(key)
        store = self.local.store
        cached = self.local.cache.get(key)
        try:
            store.check_limits(value.size, replacing=cached.size if cached else 0)
        except StorageLimitError as exc:
            self._limit(key, exc)
            self._unwant(key)
            return
        self._limits.pop(key, None)
        if value.size == 0 or self._copy_local(key, value, record):
            if value.size == 0:
                self._put_without_transfer(key, value, record)
            return
        want = self._wants.get(sha)
        if want is None:
            want = self._wants[sha] = Want(sha, value.size)
        want.keys[key] = None
        self._key_want[key] = sha
        if sha not in self._active and sha not in self._delayed:
            self._queue.add(sha)

    def _unwant(self, key: str) -> None:
        sha = self._key_want.pop(key, None)
        if sha is None:
            return
        want = self._wants.get(sha)
        if want is None:
            return
        want.keys.pop(key, None)
        if not want.keys and sha not in self._active:
            self._drop_want(sha)

    def _drop_want(self, sha: str) -> None:
        want = self._wants.pop(sha, None)
        if want is not None:
            for key in want.keys:
                if self._key_want.get(key) == sha:
                    del self._key_want[key]
        self._queue.discard(sha)
        self._delayed.pop(sha, None)
        self._refused.pop(sha, None)

    def _wanted_value(self, key: str, sha: str) -> FileValue | None:
        """The record's value at ``key`` if it still wants content ``sha``."""
        record = self.replica.get(key)
        if record is None or not self.local.selection.fetches(key, False):
            return None
        value = self._check_record(record)
        return value if value is not None and value.sha256 == sha else None

    def _still_wants(self, key: str, sha: str) -> bool:
        return self._wanted_value(key, sha) is not None

    def _copy_local(self, key: str, value: FileValue, record: Record) -> bool:
        """Deduplication: fill ``key`` from identical content already held here."""
        assert value.sha256 is not None
        local = self.local
        if not [e for e in local.cache.find_sha256(value.sha256) if e.key != key] and \
                not local.archive.find_sha256(value.sha256):
            return False
        try:
            result = local.store.copy_local(key, value)
        except PathError as exc:
            self._reject(record, str(exc))
            return True
        except StorageLimitError as exc:
            self._limit(key, exc)
            return True
        except (DirectoryError, OSError) as exc:
            log.info("local copy into %s failed: %s", key, exc)
            return False
        if result is None:
            return False
        self._counters["files_copied"] += 1
        return True

    def _put_without_transfer(self, key: str, value: FileValue, record: Record) -> None:
        try:
            download = self.local.store.begin(key, value)
        except PathError as exc:
            self._reject(record, str(exc))
            return
        except StorageLimitError as exc:
            self._limit(key, exc)
            return
        except (DirectoryError, OSError) as exc:
            self._fail(key, str(exc))
            return
        self._commit(download, value.sha256 or "", [key], None)

    # -- fetching ----------------------------------------------------------------------

    def _schedule(self) -> None:
        """Start transfers while the board's limits allow."""
        now = self._now
        for due_sha, due in list(self._refused.items()):
            if due <= now:
                del self._refused[due_sha]
                if due_sha in self._wants and due_sha not in self._active:
                    self._queue.add(due_sha)
        for due_sha, due in list(self._delayed.items()):
            if due <= now:
                del self._delayed[due_sha]
                if due_sha in self._wants and due_sha not in self._active:
                    self._queue.add(due_sha)
        tries = len(self._queue)
        while tries > 0 and len(self._active) < self.max_open \
                and self._in_flight < self.max_in_flight:
            tries -= 1
            sha = self._queue.pick()
            if sha is None:
                break
            want = self._wants.get(sha)
            if want is None or sha in self._active or sha in self._landing_shas:
                continue
            candidates = [p for p in self._peers.values()
                          if p.directory and p.may_have(sha, now)
                          and self._bans.get((p.info.peer_id, sha), 0.0) <= now]
            if not candidates:
                retry = [p.absent[sha] for p in self._peers.values() if sha in p.absent]
                if retry:  # refused for now: ask again later, or when presence changes
                    self._refused[sha] = min(retry)
                else:
                    self._queue.wait(sha)
                continue
            self._start(want, self.rng.choice(candidates))

    def _piece(self) -> int:
        return max(self.chunk_size, self.max_in_flight // 4)

    def _start(self, want: Want, peer: PeerState) -> None:
        sha = want.sha256
        value: FileValue | None = None
        while want.keys:
            key = next(iter(want.keys))
            value = self._wanted_value(key, sha)
            if value is not None:
                break
            self._unwant(key)  # the record moved on since (e.g. a local change)
        if value is None or sha not in self._wants:
            self._drop_want(sha)
            return
        try:
            download = self.local.store.begin(key, value)
        except PathError as exc:
            record = self.replica.get(key)
            if record is not None:
                self._reject(record, str(exc))
            self._unwant(key)
            return
        except StorageLimitError as exc:
            self._limit(key, exc)
            self._unwant(key)
            return
        except (DirectoryError, OSError) as exc:
            self._fail(key, str(exc))
            self._retry_later(want)
            return
        if download.complete:
            self._commit(download, sha, list(want.keys), None)
            return
        transfer = Transfer(sha, key, peer.conn_id, peer.info.peer_id, "get", download,
                            self._now, next_offset=download.offset)
        self._active[sha] = transfer
        self._queue.discard(sha)
        basis = self._rsync_basis(peer, key, value, download)
        if basis is not None:
            transfer.kind = "rsync"
            transfer.basis_sha256 = basis[0]
            request = Request("rsync", sha, 0, 0, transfer=transfer)
            transfer.requests.append(request)
            peer.requests.append(request)
            peer.out.push_stream(self._signature_units(transfer, basis[1]))
        else:
            self._top_up(transfer, peer)

    def _rsync_basis(self, peer: PeerState, key: str, value: FileValue,
                     download: Download) -> tuple[str, SignatureParams] | None:
        """The basis to send a signature of, if this file should go by rsync."""
        assert value.size is not None and value.sha256 is not None
        if not peer.rsync or "rsync" not in self.extensions or download.offset:
            return None
        if value.size < self.board.cpu.rsync_threshold or value.sha256 in self._rsync_failed:
            return None
        cached = self.local.cache.get(key)
        if cached is None or cached.is_dir or cached.size == 0 or cached.sha256 is None \
                or cached.sha256 == value.sha256:
            return None
        params = SignatureParams.for_basis(cached.size)
        if signature_size(cached.size, params) > self.board.memory.max_signature:
            return None
        return cached.sha256, params

    def _signature_units(self, transfer: Transfer,
                         params: SignatureParams) -> Generator[bytes, None, None]:
        """``rsync.signature`` of our old version, made as the socket drains."""
        assert transfer.basis_sha256 is not None
        source = self.local.reader.open(transfer.basis_sha256)
        if source is None:
            self._rsync_fallback(transfer, "the old version is gone")
            return
        with source:
            writer = SignatureWriter.from_params(params)
            yield msg.rsync_signature(transfer.sha256, transfer.basis_sha256)
            pending = bytearray()
            try:
                for piece in source.chunks(0, source.size, self.chunk_size):
                    pending += writer.update(piece)
                    if len(pending) < self.chunk_size:
                        yield b""
                        continue
                    yield encode_chunk(bytes(pending))
                    pending.clear()
                pending += writer.finish()
            except (DirectoryError, OSError) as exc:
                log.info("signature of %s stopped: %s", transfer.key, exc)
            if pending:
                yield encode_chunk(bytes(pending))
            yield encode_payload_end()

    def _top_up(self, transfer: Transfer, peer: PeerState) -> None:
        piece = self._piece()
        while transfer.next_offset < transfer.size:
            live = [r for r in transfer.requests if r.transfer is transfer]
            if len(live) >= 2 or (live and self._in_flight >= self.max_in_flight):
                break
            count = min(piece, transfer.size - transfer.next_offset)
            request = Request("get", transfer.sha256, transfer.next_offset, count,
                              transfer=transfer)
            transfer.requests.append(request)
            peer.requests.append(request)
            peer.out.push(msg.get(transfer.sha256, (request.start, count)))
            self._in_flight += count
            transfer.next_offset += count

    def _on_data(self, peer: PeerState, header: msg.DataHeader) -> None:
        start = header.range[0] if header.range is not None else None
        request = peer.find(("get", "stream"), header.sha256, start)
        if request is None:
            log.info("unrequested directory.data for %s from %s", header.sha256[:16],
                     peer.info.peer_id[:8])
            peer.sink = _Discard()
            return
        peer.requests.remove(request)
        transfer = request.transfer
        if transfer is not None and request.start != transfer.done:
            # answered out of order: drop it, ask again once the earlier range is in
            self._release(request)
            request.transfer = None
            transfer.requests.remove(request)
            transfer.next_offset = min(transfer.next_offset, request.start)
        peer.sink = _DataSink(self, peer, request)

    def _release(self, request: Request) -> None:
        if request.kind == "get":
            self._in_flight = max(0, self._in_flight - max(0, request.count - request.received))
            request.received = request.count

    def _data_done(self, peer: PeerState, request: Request) -> None:
        self._release(request)
        transfer = request.transfer
        if transfer is None:
            return
        if request in transfer.requests:
            transfer.requests.remove(request)
        if transfer.download.complete:
            self._finish(transfer)
        elif not [r for r in transfer.requests if r.transfer is transfer]:
            transfer.next_offset = transfer.done
            self._top_up(transfer, peer)

    def _finish(self, transfer: Transfer) -> None:
        self._active.pop(transfer.sha256, None)
        for request in transfer.requests:
            request.transfer = None
        want = self._wants.get(transfer.sha256)
        keys = list(want.keys) if want is not None else []
        if self._commit(transfer.download, transfer.sha256, keys, transfer):
            self._count_fetched(transfer)

    def _count_fetched(self, transfer: Transfer) -> None:
        self._counters["files_fetched"] += 1
        self._counters["bytes_fetched"] += transfer.size
        if transfer.kind == "rsync":
            self._counters["files_rsync"] += 1

    def _commit(self, download: Download, sha: str, keys: list[str],
                transfer: Transfer | None) -> bool:
        """Verify and put the file in place at a key that still wants it.

        A download for its own key is only verified here and joins the
        landing batch (:meth:`_land`): False then, and the batch does the rest.
        """
        if download.key in keys and sha not in self._landing_shas:
            return self._queue_landing(download, sha, transfer)  # _land looks the record up
        targets = [k for k in keys if self._still_wants(k, sha)]
        if not targets:
            download.abort(keep_partial=False)
            self._drop_want(sha)
            return False
        key = download.key if download.key in targets else targets[0]
        try:
            download.commit(None if key == download.key else key)
        except VerificationError as exc:
            self._verification_failed(sha, transfer, str(exc))
            return False
        except LocalChangeConflict:
            if not self._keep_remote_as_conflict(download, key, sha):
                return False
        except StorageLimitError as exc:
            download.abort(keep_partial=False)
            self._limit(key, exc)
            self._drop_want(sha)
            return False
        except (DirectoryError, OSError) as exc:
            download.abort(keep_partial=True)
            self._fail(key, str(exc))
            want = self._wants.get(sha)
            if want is not None:
                self._retry_later(want)
            return False
        self._placed(key, sha, targets, transfer)
        return True

    def _placed(self, key: str, sha: str, targets: list[str],
                transfer: Transfer | None) -> None:
        """``sha`` is in place at ``key``: announce it, fill the other keys wanting it."""
        self._failures.pop(key, None)
        if self._flush_at is None:
            self._flush_at = self._now + FLUSH_DELAY  # flash boards: folder syncs batched
        self._drop_want(sha)
        self._announce(sha, transfer.conn_id if transfer is not None else None)
        for other in targets:
            if other != key:
                value = self._wanted_value(other, sha)
                record = self.replica.get(other)
                if value is not None and record is not None and not self._copy_local(
                        other, value, record):
                    self._dirty.add(other)

    def _queue_landing(self, download: Download, sha: str, transfer: Transfer | None) -> bool:
        """Verify now; put in place with the next batch (shared syncs)."""
        try:
            download.verify()
        except VerificationError as exc:
            self._verification_failed(sha, transfer, str(exc))
            return False
        except StorageLimitError as exc:
            download.abort(keep_partial=False)
            self._limit(download.key, exc)
            self._drop_want(sha)
            return False
        except (DirectoryError, OSError) as exc:
            download.abort(keep_partial=True)
            self._fail(download.key, str(exc))
            want = self._wants.get(sha)
            if want is not None:
                self._retry_later(want)
            return False
        self._landing.append((download, transfer))
        self._landing_shas.add(sha)
        most, wait = LANDING.get(self.local.store.write_policy, LANDING["normal"])
        if len(self._landing) >= most or not self._active:
            self._land()
        elif self._land_at is None:
            self._land_at = self._now + wait
        return False

    def _land(self) -> None:
        """Put the verified downloads waiting in :attr:`_landing` in place, as one batch."""
        self._land_at = None
        if not self._landing:
            return
        batch, self._landing = self._landing, []
        self._landing_shas.clear()
        ready: list[tuple[Download, Transfer | None]] = []
        for download, transfer in batch:
            sha = download.sha256
            if self._still_wants(download.key, sha):
                ready.append((download, transfer))
                continue
            # The record moved on while the batch waited: another key, or nowhere.
            want = self._wants.get(sha)
            others = [k for k in (want.keys if want is not None else ()) if k != download.key]
            if self._commit(download, sha, others, transfer) and transfer is not None:
                self._count_fetched(transfer)
        if not ready:
            return
        try:
            results = self.local.store.commit_batch([d for d, _ in ready])
        except OSError as exc:  # syncing the folders failed: retry them all
            failed: list[DirectoryError | OSError] = [exc] * len(ready)
            results = list(failed)
        for (download, transfer), result in zip(ready, results, strict=True):
            sha, key = download.sha256, download.key
            want = self._wants.get(sha)
            targets = [key] + [k for k in (want.keys if want is not None else ())
                               if k != key and self._still_wants(k, sha)]
            if isinstance(result, LocalChangeConflict):
                if not self._keep_remote_as_conflict(download, key, sha):
                    continue
            elif isinstance(result, StorageLimitError):
                download.abort(keep_partial=False)
                self._limit(key, result)
                self._drop_want(sha)
                continue
            elif isinstance(result, (DirectoryError, OSError)):
                download.abort(keep_partial=True)
                self._fail(key, str(result))
                if want is not None:
                    self._retry_later(want)
                continue
            self._placed(key, sha, targets, transfer)
            if transfer is not None:
                self._count_fetched(transfer)

    def _keep_remote_as_conflict(self, download: Download, key: str, sha: str) -> bool:
        """The target changed unseen: keep the remote version as a CONFLICT copy."""
        want = self._wants.get(sha)
        if self.read_only:
            # The scan will move the user's change aside; the verified temp waits.
            download.abort(keep_partial=True)
            self._notice(key, "changed locally while a new version was downloading")
            if want is not None:
                self._retry_later(want, delay=2 * self.local.scanner.debouncer.settle + 1)
            self.request_scan()
            return False
        record = self.replica.get(key)
        try:
            aside = self.local.store.conflict_key(key)
            download.commit(aside)
        except (DirectoryError, OSError) as exc:
            download.abort(keep_partial=False)
            self._fail(key, f"could not keep the remote version: {exc}")
            return False
        if record is not None:
            self._kept.add((record.uuid, record.dot))
            value = dict(record.value)
            value["conflict_source"] = record.uuid
            now_ns = int(self._now * 1e9)
            self._local_write(lambda: self.replica.local_put(aside, value, now_ns))
        self._notice(key, f"changed locally while a new version was downloading; the new "
                          f"version was kept as {aside}")
        self.request_scan()
        return True

    def _verification_failed(self, sha: str, transfer: Transfer | None, reason: str) -> None:
        want = self._wants.get(sha)
        if transfer is not None and transfer.kind == "rsync":
            log.info("rsync result for %s did not verify; fetching it whole", transfer.key)
            self._rsync_failed.add(sha)
            if want is not None:
                self._queue.add(sha)
            return
        peer_id = transfer.peer_id if transfer is not None else "?"
        log.warning("content from %s for %s does not match its sha256: %s", peer_id[:8],
                    sha[:16], reason)
        if transfer is not None:
            peer = self._peers.get(transfer.conn_id)
            if peer is not None:
                peer.absent[sha] = self._now + self.error_retry
            self._bans[(transfer.peer_id, sha)] = self._now + self.error_retry
        if want is not None:
            for key in want.keys:
                self._fail(key, f"data from peer {peer_id[:8]} did not match the sha256")
            self._retry_later(want)

    def _retry_later(self, want: Want, delay: float | None = None) -> None:
        want.failures += 1
        if delay is None:
            delay = min(RETRY_MAX, RETRY_BASE * 2 ** (want.failures - 1))
        want.not_before = self._now + delay
        self._queue.discard(want.sha256)
        self._delayed[want.sha256] = want.not_before

    def _abort_transfer(self, transfer: Transfer, retry_at: float | None = None) -> None:
        self._active.pop(transfer.sha256, None)
        for request in transfer.requests:
            self._release(request)
            request.transfer = None
        transfer.requests.clear()
        if transfer.basis is not None:
            transfer.basis.close()
            transfer.basis = None
        transfer.download.abort(keep_partial=transfer.done > 0)
        want = self._wants.get(transfer.sha256)
        if want is not None:
            if retry_at is None or retry_at <= self._now:
                self._queue.add(transfer.sha256)
            else:
                self._delayed[transfer.sha256] = retry_at

    def _on_not_present(self, peer: PeerState, sha: str) -> None:
        peer.absent[sha] = self._now + ABSENT_RETRY  # overrides its claims until then
        for request in [r for r in peer.requests if r.sha256 == sha]:
            peer.requests.remove(request)
            self._release(request)
            if request.stream is not None:
                request.stream.abandon(request.start // request.stream.block_size)
            transfer = request.transfer
            request.transfer = None
            if transfer is not None and transfer.sha256 in self._active:
                self._abort_transfer(transfer)

    def _on_get_error(self, peer: PeerState, error: msg.GetError) -> None:
        sha = error.sha256
        requests = [r for r in peer.requests if r.sha256 == sha]
        rsync = [r for r in requests if r.kind == "rsync" and r.transfer is not None]
        if rsync:
            assert rsync[0].transfer is not None
            self._rsync_fallback(rsync[0].transfer, f"peer error: {error.message}")
            return
        log.warning("peer %s cannot serve %s: %s", peer.info.peer_id[:8], sha[:16],
                    error.message)
        self._bans[(peer.info.peer_id, sha)] = self._now + self.error_retry
        want = self._wants.get(sha)
        for key in (want.keys if want is not None else ()):
            self._fail(key, f"peer {peer.info.peer_id[:8]}: {error.message}")
        for request in requests:
            peer.requests.remove(request)
            self._release(request)
            if request.stream is not None:
                request.stream.fail(f"peer error: {error.message}")
            transfer = request.transfer
            request.transfer = None
            if transfer is not None and transfer.sha256 in self._active:
                self._abort_transfer(transfer)

    # -- rsync (fetching side) -----------------------------------------------------------

    def _on_patch(self, peer: PeerState, header: msg.PatchHeader) -> None:
        request = peer.find(("rsync",), header.sha256, None)
        if request is None or request.transfer is None:
            peer.sink = _Discard()
            if request is not None:
                peer.requests.remove(request)
            return
        peer.requests.remove(request)
        transfer = request.transfer
        assert transfer.basis_sha256 is not None
        source = self.local.reader.open(transfer.basis_sha256)
        if source is None:
            peer.sink = _Discard()
            self._rsync_fallback(transfer, "the old version changed")
            return
        transfer.basis = _BasisFile(source)
        transfer.download.restart()
        transfer.patcher = Patcher(cast(BinaryIO, transfer.basis), max_output=transfer.size)
        peer.sink = _PatchSink(self, transfer, request)

    def _rsync_fallback(self, transfer: Transfer, reason: str) -> None:
        log.info("rsync of %s failed (%s); fetching it whole", transfer.key, reason)
        self._rsync_failed.add(transfer.sha256)
        for request in transfer.requests:
            request.transfer = None
        transfer.requests.clear()
        if transfer.basis is not None:
            transfer.basis.close()
            transfer.basis = None
        transfer.patcher = None
        peer = self._peers.get(transfer.conn_id)
        if transfer.sha256 not in self._active or peer is None:
            return
        transfer.download.restart()
        transfer.kind = "get"
        transfer.next_offset = 0
        self._top_up(transfer, peer)

    def _patch_done(self, transfer: Transfer) -> None:
        patcher = transfer.patcher
        transfer.patcher = None
        if transfer.basis is not None:
            transfer.basis.close()
            transfer.basis = None
        transfer.requests.clear()
        if transfer.sha256 not in self._active:
            return
        try:
            if patcher is None:
                raise RsyncError("no patch in progress")
            patcher.finish()
        except RsyncError as exc:
            self._rsync_fallback(transfer, str(exc))
            return
        if not transfer.download.complete:
            self._rsync_fallback(transfer, "the patched file is too short")
            return
        self._finish(transfer)

    # -- timers --------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Let time pass: retries come due, expired bans go, planning runs."""
        self._apply_database()
        self._now = now
        for ban, until in list(self._bans.items()):
            if until <= now:
                del self._bans[ban]
                self._queue.wake(ban[1])
        if self._land_at is not None and self._land_at <= now:
            self._land()
        if self._flush_at is not None and self._flush_at <= now:
            self._flush_at = None
            self.local.store.flush()
        self._after()

    def next_deadline(self) -> float | None:
        """When :meth:`tick` (or :meth:`scan`) should next run, or ``None``."""
        times = list(self._delayed.values()) + list(self._refused.values()) + list(
            self._bans.values())
        if self._next_scan is not None:
            times.append(self._next_scan)
        if self._flush_at is not None:
            times.append(self._flush_at)
        if self._land_at is not None:
            times.append(self._land_at)
        return min(times) if times else None

    # -- streaming -----------------------------------------------------------------------

    def open_stream(self, key: str) -> RemoteStream:
        """A :class:`RemoteStream` over the file record at ``key``."""
        self._apply_database()
        record = self.replica.get(key)
        if record is None:
            raise StreamError(f"no file {key!r} in the share")
        value = self._check_record(record)
        if value is None or value.is_directory:
            raise StreamError(f"{key!r} is not a file")
        assert value.sha256 is not None and value.size is not None
        stream = RemoteStream(key, value.sha256, value.size, self.chunk_size,
                              self.stream_blocks)
        self._streams.add(stream)
        return stream

    def close_stream(self, stream: RemoteStream) -> None:
        """Stop a stream; data still arriving for it is discarded."""
        stream.closed = True
        self._streams.discard(stream)
        for peer in self._peers.values():
            for request in peer.requests:
                if request.stream is stream:
                    request.stream = None

    def stream_read(self, stream: RemoteStream, offset: int, count: int) -> bytes | None:
        """The bytes, or ``None`` after requesting what is missing (read again on update)."""
        data = stream.read_cached(offset, count)
        if data is not None:
            return data
        missing = stream.missing(offset, count)
        source = self.local.reader.open(stream.sha256)
        if source is not None:
            with source:
                for index in missing:
                    start, length = stream.block_range(index)
                    stream.put_block(index, b"".join(source.chunks(start, length, length)))
            return stream.read_cached(offset, count)
        if not missing:
            return None
        peers = [p for p in self._peers.values()
                 if p.directory and p.may_have(stream.sha256, self._now)]
        if not peers:
            stream.fail("no connected peer has this content")
            raise StreamError(stream.error or "")
        peer = self.rng.choice(peers)
        for index in missing:
            start, length = stream.block_range(index)
            request = Request("stream", stream.sha256, start, length, stream=stream)
            peer.requests.append(request)
            peer.out.push(msg.get(stream.sha256, (start, length)))
            stream.requested.add(index)
        return None

    # -- status --------------------------------------------------------------------------

    def _set_error(self, reason: str) -> None:
        if self._error != reason:
            log.error("share error: %s", reason)
        self._error = reason

    def _notice(self, key: str, reason: str) -> None:
        entry = {"key": key, "reason": reason}
        if entry not in self._notices:
            self._notices.append(entry)

    def _limit(self, key: str, exc: StorageLimitError) -> None:
        if self._limits.get(key, {}).get("message") != str(exc):
            log.warning("not downloading %s: %s", key, exc)
        self._limits[key] = {"key": key, "limit": exc.limit, "message": str(exc)}

    def _fail(self, key: str, reason: str) -> None:
        self._failures[key] = {"key": key, "reason": reason}
        while len(self._failures) > MAX_REPORTED:
            del self._failures[next(iter(self._failures))]

    def status(self) -> dict[str, Any]:
        """The share's state for the daemon's ``status`` command."""
        self._apply_database()
        pending = [w for w in self._wants.values()]
        remaining = sum(w.size for w in pending) - sum(
            t.done for t in self._active.values())
        if self._error is not None:
            state = "error"
        elif self._scan is not None:
            state = "scanning"
        elif pending or self._active:
            state = "syncing"
        else:
            state = "idle"
        return {
            "state": state,
            "reason": self._error,
            "read_only": self.read_only,
            "files_to_sync": sum(len(w.keys) for w in pending),
            "bytes_to_sync": max(0, remaining),
            "transfers": len(self._active),
            "waiting_for_peers": len(self._queue.waiting),
            "peers": len(self._peers),
            "limits": list(self._limits.values()),
            "rejected": list(self._rejected),
            "failures": list(self._failures.values()),
            "notices": list(self._notices),
            "last_scan_seconds": self.last_scan_seconds,
        }

    def transfers(self) -> list[dict[str, Any]]:
        """Files being fetched: key, bytes done and total, peer, method."""
        return [{"key": t.key, "sha256": t.sha256, "peer": t.peer_id, "kind": t.kind,
                 "done": t.done, "total": t.size} for t in self._active.values()]

    def stats(self) -> dict[str, int]:
        """Counters since start (files fetched, copied, by rsync; payload bytes)."""
        return dict(self._counters)

    def close(self) -> None:
        """Abort transfers (partials kept) and stop any scan in progress."""
        for transfer in list(self._active.values()):
            self._abort_transfer(transfer)
        self._land()
        self.local.store.flush()
        if self._scan is not None:
            self._scan.close()
            self._scan = None


class _Sink:
    """Base of payload sinks that hold engine state."""

    def chunk(self, data: bytes) -> None:
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError

    def abandon(self) -> None:
        """The connection closed mid-payload."""


class _BloomSink(_Sink):
    def __init__(self, engine: ShareEngine, peer: PeerState, k: int) -> None:
        self.engine, self.peer, self.k = engine, peer, k
        self.data = bytearray()
        self.bad: str | None = None

    def chunk(self, data: bytes) -> None:
        if self.bad is None and len(self.data) + len(data) > self.engine.presence_max:
            self.bad = f"bloom filter larger than {self.engine.presence_max} bytes"
            self.data = bytearray()
        if self.bad is None:
            self.data += data

    def end(self) -> None:
        try:
            if self.bad is not None:
                raise BloomError(self.bad)
            self.peer.filter = BloomFilter(bytes(self.data), self.k)
        except BloomError as exc:
            log.warning("bad presence filter from %s (%s); probing instead",
                        self.peer.info.peer_id[:8], exc)
            self.peer.filter = BloomFilter.everything()
        self.engine._presence_changed()


class _DataSink(_Sink):
    def __init__(self, engine: ShareEngine, peer: PeerState, request: Request) -> None:
        self.engine, self.peer, self.request = engine, peer, request

    def chunk(self, data: bytes) -> None:
        request = self.request
        engine = self.engine
        if request.kind == "get":
            owed = max(0, request.count - request.received)
            engine._in_flight = max(0, engine._in_flight - min(owed, len(data)))
        request.received += len(data)
        if request.stream is not None:
            request.stream.feed(request.start // request.stream.block_size, data)
            return
        transfer = request.transfer
        if transfer is None:
            return
        try:
            transfer.download.write(data)
        except (VerificationError, DirectoryError, OSError) as exc:
            request.transfer = None
            if isinstance(exc, StorageLimitError):
                engine._limit(transfer.key, exc)
            engine._verification_failed(transfer.sha256, transfer, str(exc)) \
                if isinstance(exc, VerificationError) else engine._fail(transfer.key, str(exc))
            if transfer.sha256 in engine._active:
                engine._abort_transfer(transfer, retry_at=engine._now + RETRY_BASE)

    def end(self) -> None:
        request = self.request
        if request.stream is not None:
            block = request.start // request.stream.block_size
            if block in request.stream.requested:
                request.stream.abandon(block)
            return
        self.engine._data_done(self.peer, request)

    def abandon(self) -> None:
        if self.request.stream is not None:
            self.request.stream.abandon(self.request.start // self.request.stream.block_size)


class _PatchSink(_Sink):
    def __init__(self, engine: ShareEngine, transfer: Transfer, request: Request) -> None:
        self.engine, self.transfer, self.request = engine, transfer, request
        self.failed = False

    def chunk(self, data: bytes) -> None:
        if self.failed or self.request.transfer is None:
            return
        patcher = self.transfer.patcher
        try:
            if patcher is None:
                raise RsyncError("no patch in progress")
            patcher.feed(data, self.transfer.download.write)
        except (RsyncError, DirectoryError, OSError) as exc:
            self.failed = True
            self.engine._rsync_fallback(self.transfer, str(exc))

    def end(self) -> None:
        if not self.failed and self.request.transfer is not None:
            self.engine._patch_done(self.transfer)


class _SignatureSink(_Sink):
    def __init__(self, engine: ShareEngine, peer: PeerState, sha256: str,
                 signature: Signature) -> None:
        self.engine, self.peer, self.sha256, self.signature = engine, peer, sha256, signature
        self.error: str | None = None

    def chunk(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            self.signature.update(data)
        except RsyncError as exc:
            self.error = str(exc)
            self.signature = Signature(max_size=1)  # release what was loaded

    def end(self) -> None:
        engine, peer = self.engine, self.peer
        if self.error is None:
            try:
                self.signature.finish()
            except RsyncError as exc:
                self.error = str(exc)
        if self.error is not None:
            log.info("bad rsync signature from %s: %s", peer.info.peer_id[:8], self.error)
            peer.out.push(msg.get_error(self.sha256, f"rsync: {self.error}"))
            return
        peer.out.push_stream(serve_patch(engine.local.reader, self.sha256, self.signature,
                                         engine.chunk_size, engine._count_sent(peer)))

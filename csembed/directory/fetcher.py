"""Fetching: which wanted content to ask which peer for, and receiving it.

Theory of operation
-------------------
Wanted content (:mod:`.planner`) is fetched with hashes picked at random,
only from a peer whose presence filter or ``present`` messages claim it (a
``0xff`` filter claims everything: we probe), with at most
``max_open_transfers`` files and ``max_bytes_in_flight`` requested bytes at
once -- except that bigger files may take all but one of those slots, and
a file that fits in one request is picked first and may start when the
bytes in flight are used up if no other such file is being fetched, so a
short file never waits for a big one to finish. A
:class:`~.transfer_fetch.Transfer` asks by ranged ``directory.get``: pieces
of :data:`PIECE_CHUNKS` chunks (at most a quarter of the bytes in flight),
as many outstanding as fit in the file's window (half the bytes in flight,
at least two pieces), one more sent as each arrives; ``range`` requests
resume a partial temp file after a crash or a dropped connection. Pieces are
short so that a small file asked for while a big one is on its way is not
stuck behind it: the sender sends the smallest waiting payload first
(:mod:`.transfer_serve`), so the small file -- and the database update that
announces it -- waits for at most the piece being sent; the window keeps a
big file's throughput.
A file we hold an older version of may go by rsync instead
(:mod:`.fetch_rsync`). ``directory.not_present`` sends us to another peer
(that peer is not asked again for ``ABSENT_RETRY`` seconds);
``directory.get_error`` bans that content from that peer for hours. Data is
written as it arrives (:class:`DataSink`); a complete file goes to
:mod:`.landing`. A want that no connected peer claims parks in the queue's
waiting room and tells :mod:`.conflicts` (a version someone edited over
while it was on its way is then given up, with a notice).
"""

from __future__ import annotations

import logging
from typing import Any

from csembed.directory import sync_messages as msg
from csembed.directory.errors import DirectoryError, VerificationError
from csembed.directory.sync_context import SyncContext
from csembed.directory.transfer_fetch import PeerState, Request, Transfer, Want

log = logging.getLogger("csembed.sync")

ABSENT_RETRY = 60.0  #: after directory.not_present, ask that peer again after this long
PIECE_CHUNKS = 2  #: chunks per ranged request: what a small file may wait behind


class Fetcher:
    """Transfers in progress, the bytes in flight, and bans."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.active: dict[str, Transfer] = {}
        self.in_flight = 0
        self.bans: dict[tuple[str, str], float] = {}
        ctx.planner.queue.is_small = self.is_small

    def is_small(self, sha: str) -> bool:
        """Whether the wanted content ``sha`` fits in one request."""
        want = self.ctx.planner.wants.get(sha)
        return want is not None and want.size <= self._piece()

    def is_active(self, sha: str) -> bool:
        """Whether ``sha`` is being fetched."""
        return sha in self.active

    # -- starting ------------------------------------------------------------------------

    def schedule(self) -> None:
        """Start transfers while the board's limits allow."""
        ctx, planner = self.ctx, self.ctx.planner
        now = ctx.now
        planner.due(now)
        tries = len(planner.queue)
        while tries > 0 and len(self.active) < ctx.max_open:
            tries -= 1
            # One slot, and room past the bytes in flight, is kept for small files.
            small = sum(1 for t in self.active.values() if t.size <= self._piece())
            room = self.in_flight < ctx.max_in_flight
            sha = planner.queue.pick(
                small=room or small == 0,
                big=room and len(self.active) - small < max(1, ctx.max_open - 1))
            if sha is None:
                break
            want = planner.wants.get(sha)
            if want is None or sha in self.active or ctx.landing.holds(sha):
                continue
            candidates = [p for p in ctx.peers.values()
                          if p.directory and p.may_have(sha, now)
                          and self.bans.get((p.info.peer_id, sha), 0.0) <= now]
            if not candidates:
                retry = [p.absent[sha] for p in ctx.peers.values() if sha in p.absent]
                if retry:  # refused for now: ask again later, or when presence changes
                    planner.refused[sha] = min(retry)
                else:
                    planner.queue.wait(sha)
                ctx.conflicts.unobtainable(sha, refused=bool(retry))
                continue
            self._start(want, ctx.rng.choice(candidates))

    def _start(self, want: Want, peer: PeerState) -> None:
        ctx, planner = self.ctx, self.ctx.planner
        sha = want.sha256
        value = None
        key = ""
        while want.keys:
            key = next(iter(want.keys))
            value = planner.wanted_value(key, sha)
            if value is not None:
                break
            planner.unwant(key)  # the record moved on since (e.g. a local change)
        if value is None or sha not in planner.wants:
            planner.drop_want(sha)
            return
        try:
            download = ctx.local.store.begin(key, value)
        except (DirectoryError, OSError) as exc:
            ctx.landing.failed(exc, key, sha)
            return
        if download.complete:
            ctx.landing.commit(download, sha, list(want.keys), None)
            return
        transfer = Transfer(sha, key, peer.conn_id, peer.info.peer_id, "get", download,
                            ctx.now, next_offset=download.offset)
        self.active[sha] = transfer
        planner.queue.discard(sha)
        if not ctx.rsync.start(transfer, peer, value):
            self.top_up(transfer, peer)

    def _piece(self) -> int:
        chunk = self.ctx.chunk_size
        return max(chunk, min(self.ctx.max_in_flight // 4, PIECE_CHUNKS * chunk))

    def _window(self) -> int:
        return max(2 * self._piece(), self.ctx.max_in_flight // 2)

    def top_up(self, transfer: Transfer, peer: PeerState) -> None:
        """Keep ``transfer``'s window of range requests outstanding (see the module
        docstring); the first one goes whatever the bytes in flight."""
        piece, window = self._piece(), self._window()
        live = [r for r in transfer.requests if r.transfer is transfer]
        owed = sum(max(0, r.count - r.received) for r in live)
        while transfer.next_offset < transfer.size:
            if live and (owed >= window or self.in_flight >= self.ctx.max_in_flight):
                break
            count = min(piece, transfer.size - transfer.next_offset)
            request = Request("get", transfer.sha256, transfer.next_offset, count,
                              transfer=transfer)
            transfer.requests.append(request)
            live.append(request)
            owed += count
            peer.requests.append(request)
            peer.out.push(msg.encode(msg.Get(transfer.sha256, (request.start, count))))
            self.in_flight += count
            transfer.next_offset += count

    # -- receiving -----------------------------------------------------------------------

    def on_data(self, peer: PeerState, header: msg.DataHeader) -> Any:
        """``directory.data`` arrived: the sink for its payload."""
        start = header.range[0] if header.range is not None else None
        request = peer.find(("get", "stream"), header.sha256, start)
        if request is None:
            log.info("unrequested directory.data for %s from %s", header.sha256[:16],
                     peer.info.peer_id[:8])
            return None
        peer.requests.remove(request)
        transfer = request.transfer
        if transfer is not None and request.start != transfer.done:
            # answered out of order: drop it, ask again once the earlier range is in
            self.release(request)
            request.transfer = None
            transfer.requests.remove(request)
            transfer.next_offset = min(transfer.next_offset, request.start)
            if not [r for r in transfer.requests if r.transfer is transfer]:
                transfer.next_offset = transfer.done
                self.top_up(transfer, peer)
        return DataSink(self, peer, request)

    def release(self, request: Request) -> None:
        """``request`` will bring no more bytes: they no longer count as in flight."""
        if request.kind == "get":
            self.in_flight = max(0, self.in_flight - max(0, request.count - request.received))
            request.received = request.count

    def data_chunk(self, request: Request, data: bytes) -> None:
        """Bytes of a ``directory.data`` payload for ``request``."""
        if request.kind == "get":
            owed = max(0, request.count - request.received)
            self.in_flight = max(0, self.in_flight - min(owed, len(data)))
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
            self.ctx.landing.failed(exc, transfer.key, transfer.sha256,
                                    download=transfer.download, transfer=transfer)

    def data_done(self, peer: PeerState, request: Request) -> None:
        """A ``directory.data`` payload ended."""
        if request.stream is not None:
            block = request.start // request.stream.block_size
            if block in request.stream.requested:
                request.stream.abandon(block)
            return
        self.release(request)
        transfer = request.transfer
        if transfer is None:
            return
        if request in transfer.requests:
            transfer.requests.remove(request)
        if transfer.download.complete:
            self.finish(transfer)
        elif not [r for r in transfer.requests if r.transfer is transfer]:
            transfer.next_offset = transfer.done
            self.top_up(transfer, peer)
        elif request.received >= request.count:
            self.top_up(transfer, peer)  # keep the window full (a short one waits: above)

    def finish(self, transfer: Transfer) -> None:
        """All bytes of ``transfer`` are in: verify and land them."""
        self.active.pop(transfer.sha256, None)
        for request in transfer.requests:
            request.transfer = None
        want = self.ctx.planner.wants.get(transfer.sha256)
        keys = list(want.keys) if want is not None else []
        self.ctx.landing.commit(transfer.download, transfer.sha256, keys, transfer)

    def count_fetched(self, transfer: Transfer) -> None:
        """``transfer``'s file is in place."""
        report = self.ctx.report
        report.count("files_fetched")
        report.count("bytes_fetched", transfer.size)
        if transfer.kind == "rsync":
            report.count("files_rsync")

    # -- stopping ------------------------------------------------------------------------

    def stop(self, transfer: Transfer) -> None:
        """Forget ``transfer``'s requests (their data is discarded); the download stays."""
        if self.active.get(transfer.sha256) is transfer:
            del self.active[transfer.sha256]
        for request in transfer.requests:
            self.release(request)
            request.transfer = None
        transfer.requests.clear()
        transfer.patcher = None
        if transfer.basis is not None:
            transfer.basis.close()
            transfer.basis = None

    def abort(self, transfer: Transfer, retry_at: float | None = None) -> None:
        """Stop ``transfer``, keep its partial, and want it again (now or at ``retry_at``)."""
        self.stop(transfer)
        transfer.download.abort(keep_partial=transfer.done > 0)
        self.ctx.planner.requeue(transfer.sha256, retry_at)

    def disconnect(self, peer: PeerState) -> None:
        """``peer``'s connection closed: its requests go, its transfers are retried."""
        for request in peer.requests:
            self.release(request)
            if request.stream is not None:
                request.stream.abandon(request.start // request.stream.block_size)
        peer.requests.clear()
        for transfer in [t for t in self.active.values() if t.conn_id == peer.conn_id]:
            self.abort(transfer, retry_at=self.ctx.now)

    def close(self) -> None:
        """Abort every transfer (partials kept)."""
        for transfer in list(self.active.values()):
            self.abort(transfer)

    # -- refusals and errors -------------------------------------------------------------

    def _drop_requests(self, peer: PeerState, sha: str, stream_error: str | None) -> None:
        for request in [r for r in peer.requests if r.sha256 == sha]:
            peer.requests.remove(request)
            self.release(request)
            if request.stream is not None:
                if stream_error is None:
                    request.stream.abandon(request.start // request.stream.block_size)
                else:
                    request.stream.fail(stream_error)
            transfer = request.transfer
            request.transfer = None
            if transfer is not None and transfer.sha256 in self.active:
                self.abort(transfer)

    def on_not_present(self, peer: PeerState, sha: str) -> None:
        """The peer does not have ``sha`` (any more)."""
        asked = any(r.sha256 == sha for r in peer.requests)
        if asked or sha in self.ctx.planner.wants:
            peer.refuse(sha, self.ctx.now + ABSENT_RETRY, self.ctx.bounds.claims)
        self._drop_requests(peer, sha, None)

    def on_get_error(self, peer: PeerState, error: msg.GetError) -> None:
        """The peer cannot serve ``sha``: ban it there for hours, report it."""
        ctx = self.ctx
        sha = error.sha256
        requests = [r for r in peer.requests if r.sha256 == sha]
        rsync = [r.transfer for r in requests if r.kind == "rsync" and r.transfer is not None]
        if rsync:
            ctx.rsync.fallback(rsync[0], f"peer error: {error.message}")
            return
        want = ctx.planner.wants.get(sha)
        if not requests and want is None:
            return  # not asked, not wanted: nothing to remember
        log.warning("peer %s cannot serve %s: %s", peer.info.peer_id[:8], sha[:16],
                    error.message)
        self.bans[(peer.info.peer_id, sha)] = ctx.now + ctx.error_retry
        for key in (want.keys if want is not None else ()):
            ctx.report.fail(key, f"peer {peer.info.peer_id[:8]}: {error.message}")
        self._drop_requests(peer, sha, f"peer error: {error.message}")

    def verification_failed(self, sha: str, transfer: Transfer | None, reason: str) -> None:
        """Content for ``sha`` did not match: never trust that peer for it again soon."""
        ctx = self.ctx
        want = ctx.planner.wants.get(sha)
        if transfer is not None and transfer.kind == "rsync":
            log.info("rsync result for %s did not verify; fetching it whole", transfer.key)
            ctx.rsync.failed.add(sha)
            if want is not None:
                ctx.planner.queue.add(sha)
            return
        peer_id = transfer.peer_id if transfer is not None else "?"
        log.warning("content from %s for %s does not match its sha256: %s", peer_id[:8],
                    sha[:16], reason)
        if transfer is not None:
            peer = ctx.peers.get(transfer.conn_id)
            if peer is not None:
                peer.refuse(sha, ctx.now + ctx.error_retry, ctx.bounds.claims)
            self.bans[(transfer.peer_id, sha)] = ctx.now + ctx.error_retry
        if want is not None:
            for key in want.keys:
                ctx.report.fail(key, f"data from peer {peer_id[:8]} did not match the sha256")
            ctx.planner.retry_later(sha)

    # -- timers and status ---------------------------------------------------------------

    def expire_bans(self, now: float) -> None:
        """Bans whose time is up go; their content may be asked for again."""
        for ban, until in list(self.bans.items()):
            if until <= now:
                del self.bans[ban]
                self.ctx.planner.queue.wake(ban[1])

    def deadline(self) -> float | None:
        """When the next ban expires."""
        return min(self.bans.values()) if self.bans else None

    def transfers(self) -> list[dict[str, Any]]:
        """Files being fetched: key, bytes done and total, peer, method."""
        return [{"key": t.key, "sha256": t.sha256, "peer": t.peer_id, "kind": t.kind,
                 "done": t.done, "total": t.size} for t in self.active.values()]


class DataSink:
    """The payload of one ``directory.data``: into a download or a stream."""

    def __init__(self, fetcher: Fetcher, peer: PeerState, request: Request) -> None:
        self.fetcher, self.peer, self.request = fetcher, peer, request

    def chunk(self, data: bytes) -> None:
        self.fetcher.data_chunk(self.request, data)

    def end(self) -> None:
        self.fetcher.data_done(self.peer, self.request)

    def abandon(self) -> None:
        """The connection closed mid-payload."""
        stream = self.request.stream
        if stream is not None:
            stream.abandon(self.request.start // stream.block_size)

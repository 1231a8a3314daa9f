"""Serving peers and hearing their presence: filters, ``present``, gets and signatures.

Theory of operation
-------------------
Our presence filter (every content held in the share or the archive) is
built when the socket is ready for it, and at most one is queued per peer:
a ``directory.get_presence`` while one is queued is answered by that one
(no amplification). A peer's filter (:class:`BloomSink`) and its
``directory.present`` messages say what it may have; the hashes it announces
are remembered up to the board's bound, past which we forget them and ask
for a fresh filter (which covers them all). ``directory.get`` and
``rsync.signature`` are served lazily from the outgoing queue
(:mod:`.transfer_serve`, smallest payload first), at most
``PeerBounds.queued_requests`` at once; beyond that the peer is told
``not_present``. What each peer is being sent, file by file, is kept in
:class:`~.uploads.Uploads` for the status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING

from csembed.directory import sync_messages as msg
from csembed.directory.bloom import BloomFilter
from csembed.directory.errors import BloomError
from csembed.directory.sync_context import SyncContext
from csembed.directory.transfer_fetch import PeerState
from csembed.directory.transfer_serve import Units, payload_units, serve_data, serve_patch
from csembed.directory.uploads import Upload, Uploads

if TYPE_CHECKING:
    from csembed.rsync import Signature

log = logging.getLogger("csembed.sync")


class Discard:
    """Sink for a payload nobody wants."""

    def chunk(self, data: bytes) -> None:
        pass

    def end(self) -> None:
        pass

    def abandon(self) -> None:
        pass


class Serving:
    """What we tell peers about our content, and what they tell us about theirs."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.uploads = Uploads()

    # -- presence ------------------------------------------------------------------------

    def presence_filter(self) -> BloomFilter:
        """Our bloom filter: every content held in the share or the archive."""
        local = self.ctx.local
        hashes = set(local.cache.hashes())
        hashes.update(item.sha256 for item in local.archive.entries())
        return BloomFilter.for_hashes(hashes, len(hashes), max_bytes=self.ctx.presence_max)

    def send_presence(self, peer: PeerState) -> None:
        """Queue our filter for ``peer`` (built when pulled; one at a time)."""
        if peer.presence_queued:
            return
        peer.presence_queued = True
        peer.presence_stale = False
        peer.out.push_stream(self._presence_units(peer), size=0)

    def _presence_units(self, peer: PeerState) -> Generator[bytes, None, None]:
        try:
            bloom = self.presence_filter()
            data = bloom.to_bytes()
            size = self.ctx.chunk_size
            pieces = (data[i:i + size] for i in range(0, len(data), size))
            yield from payload_units(msg.encode(msg.BloomFilterHeader(bloom.k)), pieces)
        finally:
            peer.presence_queued = False

    def on_present(self, peer: PeerState, sha: str) -> None:
        """The peer announced content ``sha``."""
        planner = self.ctx.planner
        if not peer.claim(sha, self.ctx.bounds.claims) and not peer.presence_asked:
            log.info("peer %s announced more than %d contents; asking for its filter",
                     peer.info.peer_id[:8], self.ctx.bounds.claims)
            peer.presence_asked = True
            peer.out.push(msg.encode(msg.GetPresence()))
        planner.queue.wake(sha)
        if planner.refused.pop(sha, None) is not None:
            planner.queue.add(sha)

    def on_present_many(self, peer: PeerState, shas: Iterable[str]) -> None:
        """The peer announced each of ``shas`` (``directory.present_many``)."""
        for sha in shas:
            self.on_present(peer, sha)

    def on_filter(self, peer: PeerState, k: int) -> BloomSink:
        """The peer's filter follows."""
        return BloomSink(self, peer, k)

    def filter_received(self, peer: PeerState, bloom: BloomFilter) -> None:
        """The peer's filter arrived (or a bad one was replaced by "everything")."""
        peer.filter = bloom
        peer.presence_asked = False
        self.ctx.planner.presence_changed()

    # -- serving -------------------------------------------------------------------------

    def count_sent(self, peer: PeerState, upload: Upload | None = None) -> Callable[[int], None]:
        """A callback adding payload bytes sent to ``peer``'s counters (and ``upload``'s)."""
        report = self.ctx.report
        uploads = self.uploads

        def sent(n: int) -> None:
            peer.bytes_sent += n
            report.count("payload_sent", n)
            if upload is not None:
                uploads.progress(upload, n)
        return sent

    def serve_get(self, peer: PeerState, request: msg.Get) -> None:
        """``directory.get``: queue the data (or ``not_present`` when too many wait)."""
        if peer.out.bulk_items >= self.ctx.bounds.queued_requests:
            peer.out.push(msg.encode(msg.NotPresent(request.sha256)))
            return
        upload = self.uploads.queued(peer.conn_id, peer.info.peer_id, request.sha256)
        units = serve_data(self.ctx.local.reader, request.sha256, request.range,
                           self.ctx.chunk_size, self.count_sent(peer, upload),
                           on_start=lambda key, size, start: self.uploads.started(
                               upload, key, size, start))
        size = request.range[1] if request.range is not None else None
        peer.out.push_stream(self._tracked(units, upload), size=size, content=request.sha256)

    def _tracked(self, units: Units, upload: Upload) -> Units:
        try:
            yield from units
        finally:
            self.uploads.ended(upload)

    def disconnect(self, peer: PeerState) -> None:
        """``peer``'s connection closed: its uploads end."""
        self.uploads.forget(peer.conn_id)

    def on_signature(self, peer: PeerState,
                     header: msg.SignatureHeader) -> SignatureSink | Discard:
        """``rsync.signature``: the sink that loads it."""
        if peer.out.bulk_items >= self.ctx.bounds.queued_requests:
            peer.out.push(msg.encode(msg.NotPresent(header.sha256)))
            return Discard()
        from csembed.rsync import Signature  # the rsync engine loads on first use
        return SignatureSink(self, peer, header.sha256,
                             Signature(max_size=self.ctx.board.memory.max_signature))

    def signature_received(self, peer: PeerState, sha256: str, signature: Signature) -> None:
        """A whole signature arrived: queue the patch."""
        ctx = self.ctx
        peer.out.push_stream(serve_patch(ctx.local.reader, sha256, signature, ctx.chunk_size,
                                         self.count_sent(peer)))


class BloomSink:
    """The payload of a peer's ``directory.bloom_filter`` (bounded)."""

    def __init__(self, serving: Serving, peer: PeerState, k: int) -> None:
        self.serving, self.peer, self.k = serving, peer, k
        self.limit = serving.ctx.presence_max
        self.data = bytearray()
        self.bad: str | None = None

    def chunk(self, data: bytes) -> None:
        if self.bad is None and len(self.data) + len(data) > self.limit:
            self.bad = f"bloom filter larger than {self.limit} bytes"
            self.data = bytearray()
        if self.bad is None:
            self.data += data

    def end(self) -> None:
        try:
            if self.bad is not None:
                raise BloomError(self.bad)
            bloom = BloomFilter(bytes(self.data), self.k)
        except BloomError as exc:
            log.warning("bad presence filter from %s (%s); probing instead",
                        self.peer.info.peer_id[:8], exc)
            bloom = BloomFilter.everything()
        self.serving.filter_received(self.peer, bloom)

    def abandon(self) -> None:
        """The connection closed mid-payload."""


class SignatureSink:
    """The payload of a peer's ``rsync.signature`` (bounded by ``max_signature``)."""

    def __init__(self, serving: Serving, peer: PeerState, sha256: str,
                 signature: Signature) -> None:
        self.serving, self.peer, self.sha256, self.signature = serving, peer, sha256, signature
        self.error: str | None = None

    def chunk(self, data: bytes) -> None:
        from csembed.rsync import RsyncError, Signature
        if self.error is not None:
            return
        try:
            self.signature.update(data)
        except RsyncError as exc:
            self.error = str(exc)
            self.signature = Signature(max_size=1)  # release what was loaded

    def end(self) -> None:
        from csembed.rsync import RsyncError
        if self.error is None:
            try:
                self.signature.finish()
            except RsyncError as exc:
                self.error = str(exc)
        if self.error is not None:
            log.info("bad rsync signature from %s: %s", self.peer.info.peer_id[:8], self.error)
            self.peer.out.push(msg.encode(msg.GetError(self.sha256, f"rsync: {self.error}")))
            return
        self.serving.signature_received(self.peer, self.sha256, self.signature)

    def abandon(self) -> None:
        """The connection closed mid-payload."""

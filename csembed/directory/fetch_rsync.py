"""Fetching by delta: ``rsync.signature`` of our old version out, ``rsync.patch`` in.

Theory of operation
-------------------
A file at least ``cpu.rsync_threshold`` long of which we hold an older
version is fetched with ``rsync.signature``/``rsync.patch`` when the peer
negotiated ``rsync`` and the signature fits ``memory.max_signature``. The
signature is computed as the socket drains; the patch is applied to a
read-only view of the verified old version (:class:`BasisFile`) straight
into the download. Any rsync failure -- the old version changed, a bad
patch, a peer error, a result that does not verify -- falls back to a
whole-file get from the same peer, and that content is not tried by rsync
again (``failed``, bounded).

The rsync engine (:mod:`csembed.rsync`, and with it the C extension) is
imported only once a file qualifies: a daemon that never fetches by delta
never loads it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from typing import TYPE_CHECKING, BinaryIO, cast

from csembed.directory import sync_messages as msg
from csembed.directory.errors import DirectoryError
from csembed.directory.reader import ContentSource
from csembed.directory.records import FileValue
from csembed.directory.sync_context import SyncContext
from csembed.directory.transfer_fetch import PeerState, Request, Transfer
from csembed.protocol.wire import encode_chunk, encode_payload_end

if TYPE_CHECKING:
    from csembed.rsync import SignatureParams

log = logging.getLogger("csembed.sync")

MAX_FAILED = 4096  #: contents remembered as "do not try rsync again"


class BasisFile:
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


class RsyncFetch:
    """The rsync side of fetching."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.failed: set[str] = set()  #: contents not to fetch by rsync again

    def start(self, transfer: Transfer, peer: PeerState, value: FileValue) -> bool:
        """Start ``transfer`` by rsync if it should go that way; False: fetch it whole."""
        basis = self._basis(peer, transfer.key, value, transfer.download.offset)
        if basis is None:
            return False
        transfer.kind = "rsync"
        transfer.basis_sha256 = basis[0]
        request = Request("rsync", transfer.sha256, 0, 0, transfer=transfer)
        transfer.requests.append(request)
        peer.requests.append(request)
        peer.out.push_stream(self._signature_units(transfer, basis[1]))
        return True

    def _basis(self, peer: PeerState, key: str, value: FileValue,
               offset: int) -> tuple[str, SignatureParams] | None:
        """The basis to send a signature of, if this file should go by rsync."""
        assert value.size is not None and value.sha256 is not None
        ctx = self.ctx
        if not peer.rsync or "rsync" not in ctx.extensions or offset:
            return None
        if value.size < ctx.board.cpu.rsync_threshold or value.sha256 in self.failed:
            return None
        cached = ctx.local.cache.get(key)
        if cached is None or cached.is_dir or cached.size == 0 or cached.sha256 is None \
                or cached.sha256 == value.sha256:
            return None
        from csembed.rsync import SignatureParams
        from csembed.rsync.signature import signature_size
        params = SignatureParams.for_basis(cached.size)
        if signature_size(cached.size, params) > ctx.board.memory.max_signature:
            return None
        return cached.sha256, params

    def _signature_units(self, transfer: Transfer,
                         params: SignatureParams) -> Generator[bytes, None, None]:
        """``rsync.signature`` of our old version, made as the socket drains."""
        assert transfer.basis_sha256 is not None
        chunk_size = self.ctx.chunk_size
        source = self.ctx.local.reader.open(transfer.basis_sha256)
        if source is None:
            self.fallback(transfer, "the old version is gone")
            return
        from csembed.rsync import SignatureWriter
        with source:
            writer = SignatureWriter.from_params(params)
            yield msg.encode(msg.SignatureHeader(transfer.sha256, transfer.basis_sha256))
            pending = bytearray()
            try:
                for piece in source.chunks(0, source.size, chunk_size):
                    pending += writer.update(piece)
                    if len(pending) < chunk_size:
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

    def on_patch(self, peer: PeerState, header: msg.PatchHeader) -> PatchSink | None:
        """``rsync.patch`` arrived: the sink that applies it (``None``: discard it)."""
        request = peer.find(("rsync",), header.sha256, None)
        if request is not None:
            peer.requests.remove(request)
        if request is None or request.transfer is None:
            return None
        transfer = request.transfer
        assert transfer.basis_sha256 is not None
        source = self.ctx.local.reader.open(transfer.basis_sha256)
        if source is None:
            self.fallback(transfer, "the old version changed")
            return None
        transfer.basis = BasisFile(source)
        transfer.download.restart()
        from csembed.rsync import Patcher
        transfer.patcher = Patcher(cast(BinaryIO, transfer.basis), max_output=transfer.size)
        return PatchSink(self, transfer, request)

    def fallback(self, transfer: Transfer, reason: str) -> None:
        """rsync failed for ``transfer``: fetch the file whole from the same peer."""
        log.info("rsync of %s failed (%s); fetching it whole", transfer.key, reason)
        if len(self.failed) >= MAX_FAILED:
            self.failed.clear()
        self.failed.add(transfer.sha256)
        fetcher = self.ctx.fetcher
        active = fetcher.active.get(transfer.sha256) is transfer
        fetcher.stop(transfer)
        peer = self.ctx.peers.get(transfer.conn_id)
        if not active:
            return
        if peer is None:
            fetcher.abort(transfer)
            return
        fetcher.active[transfer.sha256] = transfer
        transfer.download.restart()
        transfer.kind = "get"
        transfer.next_offset = 0
        fetcher.top_up(transfer, peer)

    def patch_done(self, transfer: Transfer) -> None:
        """The patch ended: finish the file, or fall back."""
        from csembed.rsync import RsyncError
        patcher = transfer.patcher
        if self.ctx.fetcher.active.get(transfer.sha256) is not transfer:
            return
        try:
            if patcher is None:
                raise RsyncError("no patch in progress")
            patcher.finish()
        except RsyncError as exc:
            self.fallback(transfer, str(exc))
            return
        if not transfer.download.complete:
            self.fallback(transfer, "the patched file is too short")
            return
        transfer.patcher = None
        if transfer.basis is not None:
            transfer.basis.close()
            transfer.basis = None
        transfer.requests.clear()
        self.ctx.fetcher.finish(transfer)


class PatchSink:
    """The payload of one ``rsync.patch``, applied as it arrives."""

    def __init__(self, rsync: RsyncFetch, transfer: Transfer, request: Request) -> None:
        self.rsync, self.transfer, self.request = rsync, transfer, request
        self.failed = False

    def chunk(self, data: bytes) -> None:
        from csembed.rsync import RsyncError
        if self.failed or self.request.transfer is None:
            return
        patcher = self.transfer.patcher
        try:
            if patcher is None:
                raise RsyncError("no patch in progress")
            patcher.feed(data, self.transfer.download.write)
        except (RsyncError, DirectoryError, OSError) as exc:
            self.failed = True
            self.rsync.fallback(self.transfer, str(exc))

    def end(self) -> None:
        if not self.failed and self.request.transfer is not None:
            self.rsync.patch_done(self.transfer)

    def abandon(self) -> None:
        """The connection closed mid-payload (the transfer is aborted by the fetcher)."""

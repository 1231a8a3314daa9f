"""Streaming: reading a file a peer holds, by ranges, without storing it.

Theory of operation
-------------------
directory.md ("Streaming") lets a client play a file straight from a peer
instead of keeping a copy. A :class:`RemoteStream` is one such file, named by
its record (key, SHA-256, size). Reads are served from a small cache of
fixed-size *blocks* (the board's ``chunk_size``), at most ``max_blocks`` of
them, least recently used evicted first; a read that needs a block not in the
cache returns ``None`` and the engine sends ``directory.get`` with a ``range``
for the missing blocks to a peer that has the content. When the data arrives
the blocks are filled and ``on_update`` (set by the runtime) is called, and
the caller reads again. Memory is bounded by ``max_blocks × block_size``
whatever the file size; nothing is written to disk.

A read larger than the cache is served in part (like ``os.read``): at most
the blocks the cache holds, from ``offset`` on; the caller reads on from
where it ended (:meth:`ShareRuntime.read_remote` does, up to the count asked
for), so any size is served with memory bounded by the cache.

If we hold the content ourselves the engine reads it locally instead. Every
failure (no peer has the content, the peer answered ``not_present`` or
``get_error``, the connection closed) sets :attr:`RemoteStream.error`.
Blocks cannot be checked one by one (only a whole file has a SHA-256), so
the bytes returned are hashed in file order as they are read: when a reader
has gone through the whole file from its start and the hash does not match,
the stream fails loudly (:class:`StreamError`) instead of returning the end
of the file. A caller who needs every byte verified before use downloads
the file.

:class:`StreamReads` is the engine's side: it opens streams over records,
and asks a peer that has the content for the missing blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from csembed import digests
from csembed.directory import sync_messages as msg
from csembed.directory.transfer_fetch import Request

if TYPE_CHECKING:
    from csembed.directory.sync_context import SyncContext


class StreamError(Exception):
    """A streamed read cannot be satisfied (see :attr:`RemoteStream.error`)."""


class RemoteStream:
    """A peer's file read in ranges through a bounded block cache."""

    def __init__(self, key: str, sha256: str, size: int, block_size: int,
                 max_blocks: int = 4) -> None:
        if block_size < 1 or max_blocks < 1:
            raise ValueError("block_size and max_blocks must be positive")
        self.key = key
        self.sha256 = sha256
        self.size = size
        self.block_size = block_size
        self.max_blocks = max_blocks
        self.error: str | None = None
        self.closed = False
        self.on_update: Callable[[RemoteStream], None] | None = None
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._filling: dict[int, bytearray] = {}
        self.requested: set[int] = set()  #: blocks asked for and not yet complete
        self._hasher = digests.sha256()
        self._hashed = 0  #: bytes of the file hashed so far, in order from its start

    def window(self, offset: int, count: int) -> int:
        """The part of a ``count``-byte read at ``offset`` the cache can hold at once."""
        room = self.max_blocks * self.block_size - offset % self.block_size
        return max(0, min(count, room, self.size - offset))

    def check(self, offset: int, data: bytes) -> None:
        """Hash bytes about to be returned; fail when the whole file does not match."""
        end = offset + len(data)
        if offset <= self._hashed < end:
            self._hasher.update(data[self._hashed - offset:])
            self._hashed = end
            if self._hashed == self.size and self._hasher.hexdigest() != self.sha256:
                self.fail(f"the streamed content of {self.key!r} does not match its sha256 "
                          f"{self.sha256}")
                raise StreamError(self.error or "")

    def block_range(self, index: int) -> tuple[int, int]:
        """``(start, count)`` of block ``index``."""
        start = index * self.block_size
        return start, min(self.block_size, self.size - start)

    def blocks_for(self, offset: int, count: int) -> list[int]:
        """Indexes of the blocks a read of ``count`` bytes at ``offset`` touches."""
        if offset < 0 or count < 0:
            raise ValueError("offset and count must not be negative")
        end = min(offset + count, self.size)
        if end <= offset:
            return []
        first, last = offset // self.block_size, (end - 1) // self.block_size
        if last - first + 1 > self.max_blocks:
            raise ValueError(f"a read of {count} bytes needs more than the {self.max_blocks} "
                             f"cached blocks of {self.block_size} bytes")
        return list(range(first, last + 1))

    def missing(self, offset: int, count: int) -> list[int]:
        """Blocks the read needs that are neither cached nor requested."""
        return [i for i in self.blocks_for(offset, count)
                if i not in self._blocks and i not in self.requested]

    def read_cached(self, offset: int, count: int) -> bytes | None:
        """The bytes, if every block is cached; else ``None``."""
        if self.error is not None:
            raise StreamError(self.error)
        indexes = self.blocks_for(offset, count)
        if any(i not in self._blocks for i in indexes):
            return None
        parts = []
        for i in indexes:
            self._blocks.move_to_end(i)
            parts.append(self._blocks[i])
        if not parts:
            return b""
        joined = b"".join(parts)
        skip = offset - indexes[0] * self.block_size
        return joined[skip:skip + min(count, self.size - offset)]

    def feed(self, index: int, data: bytes) -> None:
        """Bytes of block ``index`` arrived (in order)."""
        buffer = self._filling.setdefault(index, bytearray())
        buffer += data
        _start, count = self.block_range(index)
        if len(buffer) > count:
            self.fail(f"peer sent more than block {index} holds")
        elif len(buffer) == count:
            self._store(index, bytes(buffer))

    def put_block(self, index: int, data: bytes) -> None:
        """A whole block read locally."""
        self._store(index, data)

    def _store(self, index: int, data: bytes) -> None:
        self._filling.pop(index, None)
        self.requested.discard(index)
        self._blocks[index] = data
        self._blocks.move_to_end(index)
        while len(self._blocks) > self.max_blocks:
            self._blocks.popitem(last=False)
        self._notify()

    def abandon(self, index: int) -> None:
        """A request for block ``index`` ended without all of its bytes."""
        self._filling.pop(index, None)
        self.requested.discard(index)
        self._notify()

    def fail(self, reason: str) -> None:
        """No read can be served any more."""
        if self.error is None:
            self.error = reason
        self._filling.clear()
        self.requested.clear()
        self._notify()

    def _notify(self) -> None:
        if self.on_update is not None:
            self.on_update(self)

    @property
    def cached_bytes(self) -> int:
        """Bytes held in the cache (complete and partial blocks)."""
        return sum(len(b) for b in self._blocks.values()) + sum(
            len(b) for b in self._filling.values())


class StreamReads:
    """The engine's streams: reads served from our copy or asked of a peer."""

    def __init__(self, ctx: SyncContext, max_blocks: int) -> None:
        self.ctx = ctx
        self.max_blocks = max_blocks
        self.open: set[RemoteStream] = set()

    def start(self, key: str) -> RemoteStream:
        """A :class:`RemoteStream` over the file record at ``key``."""
        ctx = self.ctx
        record = ctx.replica.get(key)
        if record is None:
            raise StreamError(f"no file {key!r} in the share")
        value = ctx.planner.check_record(record)
        if value is None or value.is_directory:
            raise StreamError(f"{key!r} is not a file")
        assert value.sha256 is not None and value.size is not None
        stream = RemoteStream(key, value.sha256, value.size, ctx.chunk_size, self.max_blocks)
        self.open.add(stream)
        return stream

    def close(self, stream: RemoteStream) -> None:
        """Stop a stream; data still arriving for it is discarded."""
        stream.closed = True
        self.open.discard(stream)
        for peer in self.ctx.peers.values():
            for request in peer.requests:
                if request.stream is stream:
                    request.stream = None

    def read(self, stream: RemoteStream, offset: int, count: int) -> bytes | None:
        """Up to ``count`` bytes at ``offset`` (fewer past the cache's reach), or
        ``None`` after requesting what is missing (read again on update)."""
        ctx = self.ctx
        count = stream.window(offset, count)
        data = stream.read_cached(offset, count)
        if data is not None:
            stream.check(offset, data)
            return data
        missing = stream.missing(offset, count)
        source = ctx.local.reader.open(stream.sha256)
        if source is not None:
            with source:
                for index in missing:
                    start, length = stream.block_range(index)
                    stream.put_block(index, b"".join(source.chunks(start, length, length)))
            data = stream.read_cached(offset, count)
            if data is not None:
                stream.check(offset, data)
            return data
        if not missing:
            return None
        peers = [p for p in ctx.peers.values()
                 if p.directory and p.may_have(stream.sha256, ctx.now)]
        if not peers:
            stream.fail("no connected peer has this content")
            raise StreamError(stream.error or "")
        peer = ctx.rng.choice(peers)
        for index in missing:
            start, length = stream.block_range(index)
            request = Request("stream", stream.sha256, start, length, stream=stream)
            peer.requests.append(request)
            peer.out.push(msg.encode(msg.Get(stream.sha256, (start, length))))
            stream.requested.add(index)
        return None

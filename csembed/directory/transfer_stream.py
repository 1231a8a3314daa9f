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

If we hold the content ourselves the engine reads it locally instead. Every
failure (no peer has the content, the peer answered ``not_present`` or
``get_error``, the connection closed) sets :attr:`RemoteStream.error`.
The blocks received are not hashed (only a whole file can be checked against
its SHA-256); a caller who needs verified bytes downloads the file.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


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

"""Streaming signature generation and loading.

:class:`SignatureWriter` turns basis bytes into a signature: feed chunks with
:meth:`~SignatureWriter.update`, collect the bytes it returns, then call
:meth:`~SignatureWriter.finish`. It holds at most one block in memory.

:class:`Signature` reads a signature back, also in chunks of any size, checks
it as hostile input (magic, block and strong lengths, a size limit chosen by
the caller, whole records) and indexes it for :class:`~csembed.rsync.DeltaWriter`.
Memory is the records plus a compact index, bounded by ``max_size``.
"""

from __future__ import annotations

import os
import stat
from types import ModuleType
from typing import Any, BinaryIO

from csembed.native.errors import (
    BadMagicError,
    CorruptError,
    LimitError,
    RsyncError,
    TruncatedError,
)
from csembed.native.rsync_format import (
    DELTA_MAGIC,
    MAX_BLOCK_LEN,
    SIG_HEADER_LEN,
    SIG_MAGICS,
    STRONG_MAX,
)
from csembed.native.types import BytesLike
from csembed.rsync.params import DEFAULT_MAGIC, SignatureParams, resolve_backend

#: Default cap on a signature's size: enough for a 1 TiB basis at rdiff's
#: default block length, far more than a small device should accept.
DEFAULT_MAX_SIGNATURE = 256 << 20


class SignatureWriter:
    """Basis bytes in, signature bytes out."""

    def __init__(self, block_len: int = 2048, strong_len: int = 0, magic: int = DEFAULT_MAGIC,
                 *, backend: ModuleType | str | None = None) -> None:
        """``strong_len`` 0 means the hash's maximum; see :class:`SignatureParams`."""
        if magic not in SIG_MAGICS:
            raise BadMagicError(f"not a signature magic number: 0x{magic:08x}")
        strong = strong_len or STRONG_MAX[SIG_MAGICS[magic][1]]
        self.params = SignatureParams(magic, block_len, strong)
        self._core = resolve_backend(backend).SigGenerator(magic, block_len, strong)

    @classmethod
    def from_params(cls, params: SignatureParams, *,
                    backend: ModuleType | str | None = None) -> SignatureWriter:
        """A writer for already-chosen parameters."""
        return cls(params.block_len, params.strong_len, params.magic, backend=backend)

    def update(self, data: BytesLike) -> bytes:
        """Feed basis bytes; returns signature bytes (header, whole blocks) now final."""
        return bytes(self._core.update(data))

    def finish(self) -> bytes:
        """End of basis; returns the remaining signature bytes (short last block)."""
        return bytes(self._core.finish())


class Signature:
    """A signature read from untrusted bytes and indexed for delta generation."""

    def __init__(self, *, max_size: int = DEFAULT_MAX_SIGNATURE,
                 backend: ModuleType | str | None = None) -> None:
        """``max_size`` bounds the signature in bytes; beyond it :class:`LimitError`."""
        self.max_size = max_size
        self.backend = resolve_backend(backend)
        self.params: SignatureParams | None = None
        self.size = 0  # bytes received
        self.finished = False
        self._head = bytearray()  # header, then a partial record
        self._sums: Any = None

    @classmethod
    def from_bytes(cls, data: BytesLike, **kwargs: object) -> Signature:
        """Load a whole signature held in memory."""
        sig = cls(**kwargs)  # type: ignore[arg-type]
        sig.update(data)
        return sig.finish()

    @classmethod
    def from_file(cls, f: BinaryIO, chunk_size: int = 256 << 10, **kwargs: object) -> Signature:
        """Load a signature from a binary file object, reading in chunks."""
        sig = cls(**kwargs)  # type: ignore[arg-type]
        while chunk := f.read(chunk_size):
            sig.update(chunk)
        return sig.finish()

    @property
    def block_count(self) -> int:
        """Blocks (records) loaded so far."""
        return 0 if self._sums is None else int(self._sums.count)

    @property
    def memory(self) -> int:
        """Bytes of memory held by the records and their index."""
        return 0 if self._sums is None else int(self._sums.memory)

    @property
    def sums(self) -> Any:
        """The backend's indexed sum set (for :class:`~csembed.rsync.DeltaWriter`)."""
        if not self.finished or self._sums is None:
            raise RsyncError("signature is not complete: call finish() first")
        return self._sums

    def _parse_header(self) -> None:
        raw = bytes(self._head[:SIG_HEADER_LEN])
        del self._head[:SIG_HEADER_LEN]
        magic, block_len, strong_len = (int.from_bytes(raw[i:i + 4], "big") for i in (0, 4, 8))
        if magic == DELTA_MAGIC:
            raise BadMagicError("signature: this is a delta (magic 0x72730236), not a signature")
        if magic not in SIG_MAGICS:
            raise BadMagicError(f"signature: unknown magic number 0x{magic:08x}")
        strong = SIG_MAGICS[magic][1]
        if block_len == 0:
            raise CorruptError("signature: block length 0 in header")
        if block_len > MAX_BLOCK_LEN:
            raise LimitError(f"signature: block length {block_len} exceeds the limit "
                             f"{MAX_BLOCK_LEN}")
        if strong_len == 0:
            strong_len = STRONG_MAX[strong]  # librsync reads 0 as "the maximum"
        if strong_len > STRONG_MAX[strong]:
            raise CorruptError(f"signature: strong sum length {strong_len} exceeds "
                               f"{STRONG_MAX[strong]} for {strong}")
        self.params = SignatureParams(magic, block_len, strong_len)
        self._sums = self.backend.SumSet(magic, block_len, strong_len)

    def update(self, data: BytesLike) -> None:
        """Feed the next chunk of signature bytes."""
        if self.finished:
            raise RsyncError("signature: update() after finish()")
        view = memoryview(data).cast("B")
        self.size += len(view)
        if self.size > self.max_size:
            raise LimitError(f"signature larger than the limit of {self.max_size} bytes")
        if self.params is None:
            take = min(SIG_HEADER_LEN - len(self._head), len(view))
            self._head += view[:take]
            view = view[take:]
            if len(self._head) < SIG_HEADER_LEN:
                return
            self._parse_header()
        assert self.params is not None and self._sums is not None
        rec = self.params.record_len
        if self._head:  # complete the partial record carried over
            take = min(rec - len(self._head), len(view))
            self._head += view[:take]
            view = view[take:]
            if len(self._head) < rec:
                return
            self._sums.add(self._head)
            self._head.clear()
        whole = len(view) // rec * rec
        if whole:
            self._sums.add(view[:whole])
        self._head += view[whole:]

    def finish(self) -> Signature:
        """End of signature: checks it is complete and builds the index. Returns self."""
        if self.finished:
            return self
        if self.params is None:
            raise TruncatedError(f"signature: header truncated ({len(self._head)} of "
                                 f"{SIG_HEADER_LEN} bytes)")
        if self._head:
            raise TruncatedError(f"signature: ends inside a block record ({len(self._head)} "
                                 f"of {self.params.record_len} bytes)")
        self._sums.index()
        self.finished = True
        return self


def signature_size(basis_size: int, params: SignatureParams) -> int:
    """Bytes of the signature of a ``basis_size``-byte basis with these parameters."""
    blocks = -(-basis_size // params.block_len)
    return SIG_HEADER_LEN + blocks * params.record_len


def file_size(f: BinaryIO) -> int | None:
    """Bytes left in a regular file from its position, or None (pipe, socket, in-memory)."""
    try:
        st = os.fstat(f.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    try:
        return max(st.st_size - f.tell(), 0)
    except OSError:
        return None

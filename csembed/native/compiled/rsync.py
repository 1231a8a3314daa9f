"""Typed wrappers over the C rsync engine: signature writer, sum set, delta, patch decoder.

Each wrapper owns its C object through ``ffi.gc`` so it is freed with the
Python object. Parameters are validated by the callers in
:mod:`csembed.rsync`; a C status that still reports a bad parameter becomes
:class:`RsyncParamError`, a failed allocation :class:`MemoryError`. The C
calls release the GIL, so separate objects can work in parallel threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from csembed._native import ffi, lib
from csembed.native import rsync_format as fmt
from csembed.native.errors import LimitError, RsyncError, RsyncParamError
from csembed.native.types import BytesLike

#: Output buffer for one delta call; must be at least CS_DELTA_MIN_OUT.
_DELTA_OUT = 256 * 1024


def _check(status: int, what: str) -> int:
    if status >= 0:
        return status
    if status == lib.CS_ERR_NOMEM:
        raise MemoryError(f"{what}: out of memory")
    if status == lib.CS_ERR_LIMIT:
        raise LimitError(f"{what}: too many blocks")
    if status == lib.CS_ERR_MAGIC:
        raise RsyncParamError(f"{what}: not a signature magic number")
    if status == lib.CS_ERR_STATE:
        raise RsyncError(f"{what}: called in the wrong state")
    raise RsyncParamError(f"{what}: invalid parameter (status {status})")


def _header_values(magic: int, block_len: int, strong_len: int, what: str) -> None:
    """Refuse values a 32-bit header field cannot hold, as the pure twin does (cffi would
    raise OverflowError instead)."""
    if not 0 <= magic <= 0xFFFFFFFF:
        raise RsyncParamError(f"{what}: not a signature magic number")
    if not (0 <= block_len <= 0xFFFFFFFF and 0 <= strong_len <= 0xFFFFFFFF):
        raise RsyncParamError(f"{what}: invalid parameter (status {lib.CS_ERR_PARAM})")


class SigGenerator:
    """Basis bytes in, signature bytes out (header first, one record per block)."""

    def __init__(self, magic: int, block_len: int, strong_len: int) -> None:
        _header_values(magic, block_len, strong_len, "signature")
        ptr = ffi.new("cs_sigwriter **")
        _check(lib.cs_sigwriter_new(magic, block_len, strong_len, ptr), "signature")
        self._w = ffi.gc(ptr[0], lib.cs_sigwriter_free)
        self._out: Any = ffi.new("uint8_t[]", 4096)
        self._out_len = ffi.new("size_t *")

    def _room(self, need: int) -> Any:
        if len(self._out) < need:
            self._out = ffi.new("uint8_t[]", need)
        return self._out

    def update(self, data: BytesLike) -> bytes:
        """Hash more basis bytes; returns the signature bytes now complete."""
        src = ffi.from_buffer("uint8_t[]", data)
        out = self._room(lib.cs_sigwriter_bound(self._w, len(src)))
        _check(lib.cs_sigwriter_feed(self._w, src, len(src), out, len(out), self._out_len),
               "signature")
        return bytes(ffi.buffer(out, self._out_len[0]))

    def finish(self) -> bytes:
        """End of basis: returns the last record (and the header if nothing came yet)."""
        out = self._room(lib.cs_sigwriter_bound(self._w, 0))
        _check(lib.cs_sigwriter_finish(self._w, out, len(out), self._out_len), "signature")
        return bytes(ffi.buffer(out, self._out_len[0]))


class SumSet:
    """A signature's records in memory, indexed for the delta search."""

    def __init__(self, magic: int, block_len: int, strong_len: int) -> None:
        _header_values(magic, block_len, strong_len, "signature")
        ptr = ffi.new("cs_sumset **")
        _check(lib.cs_sumset_new(magic, block_len, strong_len, ptr), "signature")
        self._s = ffi.gc(ptr[0], lib.cs_sumset_free)
        self.magic, self.block_len, self.strong_len = magic, block_len, strong_len

    @property
    def count(self) -> int:
        """Number of blocks (records) loaded."""
        return int(lib.cs_sumset_count(self._s))

    @property
    def memory(self) -> int:
        """Bytes of memory the records and index occupy."""
        return int(lib.cs_sumset_memory(self._s))

    def add(self, records: BytesLike) -> None:
        """Append whole records (``4 + strong_len`` bytes each)."""
        src = ffi.from_buffer("uint8_t[]", records)
        n, rest = divmod(len(src), 4 + self.strong_len)
        if rest:
            raise ValueError("SumSet.add takes whole records only")
        _check(lib.cs_sumset_add(self._s, src, n), "signature")

    def index(self) -> None:
        """Build the lookup index; no records can be added afterwards."""
        _check(lib.cs_sumset_index(self._s), "signature index")


class DeltaGenerator:
    """New-file bytes in, delta bytes out, searched against an indexed :class:`SumSet`."""

    def __init__(self, sums: SumSet) -> None:
        ptr = ffi.new("cs_delta **")
        _check(lib.cs_delta_new(sums._s, ptr), "delta")
        self._sums = sums  # the C object points into it: keep it alive
        self._d = ffi.gc(ptr[0], lib.cs_delta_free)
        self._out = ffi.new("uint8_t[]", _DELTA_OUT)
        self._out_len = ffi.new("size_t *")
        self._in_used = ffi.new("size_t *")

    @property
    def stats(self) -> tuple[int, int, int]:
        """(literal bytes, copied bytes, commands) emitted so far."""
        return (int(self._d.literal_bytes), int(self._d.copy_bytes), int(self._d.commands))

    def update(self, data: BytesLike) -> bytes:
        """Search more new-file bytes; returns the delta bytes now final."""
        src = ffi.from_buffer("uint8_t[]", data)
        total, done = len(src), 0
        pieces = []
        while True:
            st = _check(lib.cs_delta_feed(self._d, src + done, total - done, self._in_used,
                                          self._out, _DELTA_OUT, self._out_len), "delta")
            done += self._in_used[0]
            pieces.append(bytes(ffi.buffer(self._out, self._out_len[0])))
            if st == lib.CS_NEED_INPUT and done == total:
                return b"".join(pieces)

    def finish(self) -> bytes:
        """End of new file: returns the rest of the delta, through END."""
        pieces = []
        while True:
            st = _check(lib.cs_delta_finish(self._d, self._out, _DELTA_OUT, self._out_len),
                        "delta")
            pieces.append(bytes(ffi.buffer(self._out, self._out_len[0])))
            if st == lib.CS_DONE:
                return b"".join(pieces)


class PatchDecoder:
    """Parses a delta stream into LITERAL/COPY/DONE events; does no I/O itself."""

    def __init__(self) -> None:
        self._p = ffi.new("cs_patch *")
        lib.cs_patch_init(self._p)
        self._used = ffi.new("size_t *")
        self._a = ffi.new("uint64_t *")
        self._b = ffi.new("uint64_t *")

    @property
    def offset(self) -> int:
        """Delta bytes consumed so far."""
        return int(self._p.offset)

    def events(self, data: BytesLike) -> Iterator[tuple[int, int, int]]:
        """Decode one chunk of delta, yielding ``(event, a, b)`` in order.

        ``LITERAL``: the literal bytes are ``data[a:a+b]``; ``COPY``: copy ``b``
        bytes from basis offset ``a``; ``DONE``: END was read (the last event;
        bytes after it are ignored). The generator ends when the chunk is used
        up; raises :class:`RsyncError` subclasses on a corrupt delta.
        """
        src = ffi.from_buffer("uint8_t[]", data)
        start, total = 0, len(src)
        while start < total:
            st = lib.cs_patch_next(self._p, src + start, total - start, self._used, self._a,
                                   self._b)
            a, b = int(self._a[0]), int(self._b[0])
            if st == lib.CS_LITERAL:
                yield fmt.LITERAL, start + a, b
            elif st == lib.CS_COPY:
                yield fmt.COPY, a, b
            elif st == lib.CS_DONE:
                yield fmt.DONE, 0, 0
                return
            elif st == lib.CS_ERR_MAGIC:
                raise fmt.bad_delta_magic(self.offset)
            elif st == lib.CS_ERR_CORRUPT:
                raise fmt.corrupt_command(int(self._p.op), self.offset)
            elif st < 0:
                raise RsyncError("delta: decoder used after an error")
            start += self._used[0]

"""The record layer: one XChaCha20-Poly1305 secretstream per direction.

After the handshake each side opens a libsodium ``crypto_secretstream``
push state with its direction's key and sends the 24-byte stream header
first. Every record on the wire is then::

    u16 big-endian length n (17 <= n <= 65535) || n bytes of secretstream ciphertext

so a record carries at most :data:`MAX_PLAINTEXT` (65518) bytes of plaintext
and 17 bytes of overhead (tag byte + Poly1305 MAC). Secretstream numbers
messages implicitly, so a replayed, reordered, dropped or altered record
fails to open, and a stream ends only with a record tagged ``FINAL``: a
connection that stops without one was truncated. Any failure is final; the
reader refuses everything after it.

Speed matters here (bulk transfers go through every byte): records are
sealed straight into one output buffer per call and opened straight from the
caller's buffer, calling libsodium through PyNaCl's cffi module
(:mod:`csembed.security.sodium`) without per-record allocations or copies.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final

from csembed.security import sodium
from csembed.security.errors import RecordError
from csembed.security.sodium import SecretStreamState, SodiumError
from csembed.security.sodium import ffi as _ffi
from csembed.security.sodium import lib as _lib

HEADER_BYTES: Final = sodium.STREAM_HEADER_BYTES
OVERHEAD: Final = sodium.STREAM_ABYTES
LENGTH_BYTES: Final = 2
MAX_CIPHERTEXT: Final = 0xFFFF
MAX_PLAINTEXT: Final = MAX_CIPHERTEXT - OVERHEAD
TAG_MESSAGE: Final = sodium.STREAM_TAG_MESSAGE
TAG_FINAL: Final = sodium.STREAM_TAG_FINAL

_LENGTH = struct.Struct(">H")
Buffer = bytes | bytearray | memoryview


def _pieces(parts: Sequence[Buffer]) -> list[memoryview | bytes]:
    """The plaintext of each record: slices of ``parts`` (copied only where a
    record straddles two parts), at most MAX_PLAINTEXT bytes each."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    pieces: list[memoryview | bytes] = []
    carry: list[memoryview] = []
    carried = 0
    for view in views:
        offset = 0
        if carry:
            take = min(MAX_PLAINTEXT - carried, len(view))
            carry.append(view[:take])
            carried += take
            offset = take
            if carried < MAX_PLAINTEXT:
                continue
            pieces.append(b"".join(carry))
            carry, carried = [], 0
        while len(view) - offset >= MAX_PLAINTEXT:
            pieces.append(view[offset:offset + MAX_PLAINTEXT])
            offset += MAX_PLAINTEXT
        if offset < len(view):
            carry.append(view[offset:])
            carried = len(view) - offset
    if carry:
        pieces.append(carry[0] if len(carry) == 1 else b"".join(carry))
    return pieces or [b""]


class RecordWriter:
    """Seals plaintext into framed records for one direction."""

    def __init__(self, key: bytes) -> None:
        self._state, self.header = SecretStreamState.push(key)
        self.finished = False
        self.records_sealed = 0

    def seal(self, *parts: Buffer, final: bool = False) -> bytearray:
        """Framed records carrying the concatenation of ``parts``, split at
        :data:`MAX_PLAINTEXT` bytes.

        With ``final`` the last record is tagged ``FINAL`` and the writer is
        finished; no parts with ``final`` is the bare close record.
        """
        if self.finished:
            raise RecordError("the stream is already closed (FINAL record sent)")
        pieces = _pieces(parts)
        out = bytearray(sum(len(p) for p in pieces) + len(pieces) * (LENGTH_BYTES + OVERHEAD))
        tags = [TAG_MESSAGE] * len(pieces)
        tags[-1] = TAG_FINAL if final else TAG_MESSAGE
        position = 0
        push = _lib.crypto_secretstream_xchacha20poly1305_push
        with _ffi.from_buffer(out, require_writable=True) as target:
            for piece, tag in zip(pieces, tags, strict=True):
                size = len(piece)
                _LENGTH.pack_into(out, position, size + OVERHEAD)
                position += LENGTH_BYTES
                with _ffi.from_buffer(piece) as source:
                    rc = push(self._state.statebuf, target + position, _ffi.NULL,
                              source if size else _ffi.NULL, size, _ffi.NULL, 0, tag)
                if rc != 0:  # pragma: no cover - libsodium fails only on absurd sizes
                    raise RecordError("secretstream push failed")
                position += size + OVERHEAD
        self.records_sealed += len(pieces)
        self.finished = final
        return out


_UNCLEARED = _ffi.new_allocator(should_clear_after_alloc=False)


class RecordReader:
    """Opens framed records of one direction, in order, exactly once each.

    ``capacity`` is how much plaintext :meth:`open_at` can gather before
    :meth:`take` (at least one record's; its pages are touched only as used).
    """

    def __init__(self, key: bytes, header: bytes, capacity: int = MAX_PLAINTEXT) -> None:
        if len(header) != HEADER_BYTES:
            raise RecordError(f"stream header must be {HEADER_BYTES} bytes, got {len(header)}")
        try:
            self._state = SecretStreamState.pull(key, header)
        except SodiumError as exc:
            raise RecordError("stream header rejected") from exc
        self.finished = False
        self.records_opened = 0
        self.capacity = max(capacity, MAX_PLAINTEXT)
        self._plain: Any = _UNCLEARED("unsigned char[]", self.capacity)
        self._tag: Any = _ffi.new("unsigned char *")

    @staticmethod
    def frame_length(prefix: Buffer) -> int:
        """The ciphertext length announced by a 2-byte prefix, validated."""
        (length,) = _LENGTH.unpack(prefix)
        if length < OVERHEAD:
            raise RecordError(f"record length {length} is shorter than the {OVERHEAD}-byte "
                              "authentication overhead")
        return int(length)

    def open(self, ciphertext: Buffer) -> tuple[bytes, bool]:
        """Decrypt one record's ciphertext; returns ``(plaintext, is_final)``."""
        size, final = self.open_at(ciphertext, 0)
        return self.take(size), final

    def open_at(self, ciphertext: Buffer, offset: int) -> tuple[int, bool]:
        """Decrypt one record's ciphertext to ``offset`` of the gathering buffer
        (``offset`` plus the record's plaintext must fit ``capacity``); returns
        ``(plaintext size, is_final)``. Read the gathered bytes with :meth:`take`."""
        if self.finished:
            raise RecordError("record received after the peer's close (FINAL) record")
        if not OVERHEAD <= len(ciphertext) <= MAX_CIPHERTEXT:
            raise RecordError(f"record of {len(ciphertext)} bytes is outside "
                              f"{OVERHEAD}..{MAX_CIPHERTEXT}")
        size = len(ciphertext) - OVERHEAD
        if not 0 <= offset <= self.capacity - size:
            raise ValueError(f"{size} bytes at {offset} do not fit {self.capacity}")
        with _ffi.from_buffer(ciphertext) as source:
            rc = _lib.crypto_secretstream_xchacha20poly1305_pull(
                self._state.statebuf, self._plain + offset, _ffi.NULL, self._tag, source,
                len(ciphertext), _ffi.NULL, 0)
        tag = int(self._tag[0])
        if rc != 0 or tag not in (TAG_MESSAGE, TAG_FINAL):
            self.finished = True
            raise RecordError(
                f"record {self.records_opened + 1} failed authentication "
                "(altered, replayed, reordered or a record is missing)")
        self.records_opened += 1
        self.finished = tag == TAG_FINAL
        return size, self.finished

    def take(self, size: int) -> bytes:
        """The first ``size`` bytes gathered by :meth:`open_at` (a copy)."""
        return _ffi.buffer(self._plain, size)[:]

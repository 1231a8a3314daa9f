"""Pure-Python MD4 (RFC 1320), twin of ``native/md4.c``.

OpenSSL 3 no longer offers MD4 to :mod:`hashlib`, and librsync's older
signature formats need it, so both backends carry their own.
"""

from __future__ import annotations

import struct

from csembed.native.types import BytesLike

MASK32 = 0xFFFFFFFF
BLOCK = 64
_WORDS = struct.Struct("<16I")
# (message word, shift) for the 16 steps of rounds 1, 2 and 3 (RFC 1320 section 3.4).
_R1 = tuple((k, (3, 7, 11, 19)[k % 4]) for k in range(16))
_R2 = tuple((k, (3, 5, 9, 13)[i % 4]) for i, k in enumerate(
    (0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)))
_R3 = tuple((k, (3, 9, 11, 15)[i % 4]) for i, k in enumerate(
    (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)))


def _rotl(x: int, s: int) -> int:
    return ((x << s) | (x >> (32 - s))) & MASK32


def _block(state: list[int], block: BytesLike) -> None:
    x = _WORDS.unpack(block)
    v = list(state)  # a, b, c, d rotate through positions 0, 3, 2, 1
    for i, (k, s) in enumerate(_R1):
        a, b, c, d = (-i) % 4, (1 - i) % 4, (2 - i) % 4, (3 - i) % 4
        f = (v[b] & v[c]) | (~v[b] & v[d])
        v[a] = _rotl((v[a] + f + x[k]) & MASK32, s)
    for i, (k, s) in enumerate(_R2):
        a, b, c, d = (-i) % 4, (1 - i) % 4, (2 - i) % 4, (3 - i) % 4
        g = (v[b] & v[c]) | (v[b] & v[d]) | (v[c] & v[d])
        v[a] = _rotl((v[a] + g + x[k] + 0x5A827999) & MASK32, s)
    for i, (k, s) in enumerate(_R3):
        a, b, c, d = (-i) % 4, (1 - i) % 4, (2 - i) % 4, (3 - i) % 4
        h = v[b] ^ v[c] ^ v[d]
        v[a] = _rotl((v[a] + h + x[k] + 0x6ED9EBA1) & MASK32, s)
    for i in range(4):
        state[i] = (state[i] + v[i]) & MASK32


class MD4:
    """Incremental MD4; 16-byte digest."""

    __slots__ = ("_state", "_length", "_buf")
    digest_size = 16

    def __init__(self, data: BytesLike = b"") -> None:
        self._state = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
        self._length = 0
        self._buf = bytearray()
        if data:
            self.update(data)

    def update(self, data: BytesLike) -> None:
        """Hash more bytes."""
        buf = self._buf
        before = len(buf)
        buf += data
        self._length += len(buf) - before
        n = len(buf) // BLOCK * BLOCK
        if n:
            view = memoryview(buf)
            for off in range(0, n, BLOCK):
                _block(self._state, view[off:off + BLOCK])
            view.release()
            del buf[:n]

    def digest(self) -> bytes:
        """The digest of everything hashed so far (hashing may continue)."""
        state = list(self._state)
        tail = bytes(self._buf) + b"\x80"
        bits = (self._length * 8) & (2**64 - 1)
        tail += bytes((56 - len(tail)) % BLOCK) + struct.pack("<Q", bits)
        for off in range(0, len(tail), BLOCK):
            _block(state, tail[off:off + BLOCK])
        return struct.pack("<4I", *state)

    def hexdigest(self) -> str:
        """:meth:`digest` as lowercase hex."""
        return self.digest().hex()

    def copy(self) -> MD4:
        """An independent copy of this state."""
        other = MD4()
        other._state, other._length = list(self._state), self._length
        other._buf = bytearray(self._buf)
        return other


def md4(data: BytesLike) -> bytes:
    """One-shot MD4 of ``data``."""
    return MD4(data).digest()

"""Pure-Python BLAKE2b (RFC 7693), twin of ``native/blake2b.c``.

Slow (a few MB/s) but complete: any digest length 1..64, incremental, and the
same non-destructive ``digest()`` as :mod:`hashlib`. The last block is held
back until ``digest()`` because it must be compressed with the final flag.
"""

from __future__ import annotations

import struct

from csembed.native.types import BytesLike

MASK64 = 0xFFFFFFFFFFFFFFFF
BLOCK = 128
IV = (
    0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
    0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179,
)
SIGMA = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    (14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3),
    (11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4),
    (7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8),
    (9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13),
    (2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9),
    (12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11),
    (13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10),
    (6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5),
    (10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0),
)
# Column then diagonal quarter-rounds: (a, b, c, d) indices into the work vector.
_LANES = ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
          (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))
_WORDS = struct.Struct("<16Q")


def _compress(h: list[int], block: BytesLike, t: int, last: bool) -> None:
    m = _WORDS.unpack(block)
    v = h + list(IV)
    v[12] ^= t & MASK64
    v[13] ^= t >> 64
    if last:
        v[14] ^= MASK64
    for r in range(12):
        s = SIGMA[r % 10]
        for lane, (a, b, c, d) in enumerate(_LANES):
            x, y = m[s[2 * lane]], m[s[2 * lane + 1]]
            va, vb, vc, vd = v[a], v[b], v[c], v[d]
            va = (va + vb + x) & MASK64
            vd ^= va
            vd = (vd >> 32) | ((vd << 32) & MASK64)
            vc = (vc + vd) & MASK64
            vb ^= vc
            vb = (vb >> 24) | ((vb << 40) & MASK64)
            va = (va + vb + y) & MASK64
            vd ^= va
            vd = (vd >> 16) | ((vd << 48) & MASK64)
            vc = (vc + vd) & MASK64
            vb ^= vc
            vb = (vb >> 63) | ((vb << 1) & MASK64)
            v[a], v[b], v[c], v[d] = va, vb, vc, vd
    for i in range(8):
        h[i] ^= v[i] ^ v[i + 8]


class Blake2b:
    """Incremental unkeyed BLAKE2b with a digest length of 1..64 bytes."""

    __slots__ = ("digest_size", "_h", "_t", "_buf")

    def __init__(self, data: BytesLike = b"", digest_size: int = 32) -> None:
        if not 1 <= digest_size <= 64:
            raise ValueError(f"BLAKE2b digest_size must be 1..64, got {digest_size}")
        self.digest_size = digest_size
        self._h = list(IV)
        self._h[0] ^= 0x01010000 | digest_size
        self._t = 0
        self._buf = bytearray()
        if data:
            self.update(data)

    def update(self, data: BytesLike) -> None:
        """Hash more bytes."""
        buf = self._buf
        buf += data
        if len(buf) > BLOCK:
            # Compress every full block except the last: it may be the final one.
            n = (len(buf) - 1) // BLOCK * BLOCK
            view = memoryview(buf)
            for off in range(0, n, BLOCK):
                self._t += BLOCK
                _compress(self._h, view[off:off + BLOCK], self._t, False)
            view.release()
            del buf[:n]

    def digest(self) -> bytes:
        """The digest of everything hashed so far (hashing may continue)."""
        h = list(self._h)
        block = bytes(self._buf) + bytes(BLOCK - len(self._buf))
        _compress(h, block, self._t + len(self._buf), True)
        return struct.pack("<8Q", *h)[: self.digest_size]

    def hexdigest(self) -> str:
        """:meth:`digest` as lowercase hex."""
        return self.digest().hex()

    def copy(self) -> Blake2b:
        """An independent copy of this state."""
        other = Blake2b(digest_size=self.digest_size)
        other._h, other._t, other._buf = list(self._h), self._t, bytearray(self._buf)
        return other


def blake2b(data: BytesLike, digest_size: int = 32) -> bytes:
    """One-shot BLAKE2b of ``data`` with the given digest length."""
    return Blake2b(data, digest_size).digest()

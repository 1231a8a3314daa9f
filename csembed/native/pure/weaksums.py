"""Pure-Python rolling checksums, twins of ``native/rollsum.c`` and ``native/rabinkarp.c``.

Both keep their state modulo 2^32 exactly as the C code does, so every
intermediate value, not just the digest, matches. See the C headers for the
definitions; the closed forms below add a whole buffer with C-level builtins
(``sum`` and ``itertools.accumulate``) instead of a Python loop per byte.
"""

from __future__ import annotations

from functools import reduce
from itertools import accumulate

from csembed.native.types import BytesLike

MASK32 = 0xFFFFFFFF
ROLLSUM_CHAR_OFFSET = 31
RK_SEED = 1
RK_MULT = 0x08104225
RK_INVM = 0x98F009AD  # RK_MULT**-1 mod 2**32
RK_ADJ = 0x08104224  # (RK_MULT - 1) * RK_SEED


def _check_roll(outs: BytesLike, ins: BytesLike) -> tuple[memoryview, memoryview]:
    o, i = memoryview(outs).cast("B"), memoryview(ins).cast("B")
    if len(o) != len(i):
        raise ValueError(f"roll needs equal lengths, got {len(o)} out and {len(i)} in")
    return o, i


class RollSum:
    """rsync/librsync rolling checksum over a window of bytes."""

    __slots__ = ("_count", "_s1", "_s2")

    def __init__(self, data: BytesLike = b"") -> None:
        self._count = 0
        self._s1 = 0
        self._s2 = 0
        if data:
            self.update(data)

    @property
    def count(self) -> int:
        """Number of bytes in the window (read-only, as in the C API)."""
        return self._count

    def update(self, data: BytesLike) -> None:
        """Append bytes to the end of the window."""
        view = memoryview(data).cast("B")
        n = len(view)
        if not n:
            return
        off = ROLLSUM_CHAR_OFFSET
        self._s2 = (self._s2 + n * self._s1 + sum(accumulate(view))
                    + off * (n * (n + 1) // 2)) & MASK32
        self._s1 = (self._s1 + sum(view) + off * n) & MASK32
        self._count += n

    def rotate(self, out: int, in_: int) -> None:
        """Slide the window one byte: ``out`` leaves the front, ``in_`` joins the end."""
        self._s1 = (self._s1 + in_ - out) & MASK32
        self._s2 = (self._s2 + self._s1 - self._count * (out + ROLLSUM_CHAR_OFFSET)) & MASK32

    def rollin(self, in_: int) -> None:
        """Grow the window by one byte at the end."""
        self._s1 = (self._s1 + in_ + ROLLSUM_CHAR_OFFSET) & MASK32
        self._s2 = (self._s2 + self._s1) & MASK32
        self._count += 1

    def rollout(self, out: int) -> None:
        """Shrink the window by dropping its first byte, ``out``."""
        if self._count == 0:
            raise ValueError("rollout from an empty window")
        v = out + ROLLSUM_CHAR_OFFSET
        self._s1 = (self._s1 - v) & MASK32
        self._s2 = (self._s2 - self._count * v) & MASK32
        self._count -= 1

    def roll(self, outs: BytesLike, ins: BytesLike) -> None:
        """Rotate once per byte pair: ``outs[i]`` leaves as ``ins[i]`` enters."""
        o, i = _check_roll(outs, ins)
        s1, s2, w = self._s1, self._s2, self._count
        for a, b in zip(o, i, strict=True):
            s1 = (s1 + b - a) & MASK32
            s2 = (s2 + s1 - w * (a + ROLLSUM_CHAR_OFFSET)) & MASK32
        self._s1, self._s2 = s1, s2

    def digest(self) -> int:
        """The 32-bit weak sum ``(s2 << 16) | s1`` of the current window."""
        return ((self._s2 << 16) | (self._s1 & 0xFFFF)) & MASK32

    def copy(self) -> RollSum:
        """An independent copy of this state."""
        other = RollSum()
        other._count, other._s1, other._s2 = self._count, self._s1, self._s2
        return other


class RabinKarp:
    """librsync's Rabin-Karp polynomial hash (mod 2^32, seed 1) over a window."""

    __slots__ = ("_count", "_hash", "_mult")

    def __init__(self, data: BytesLike = b"") -> None:
        self._count = 0
        self._hash = RK_SEED
        self._mult = 1
        if data:
            self.update(data)

    @property
    def count(self) -> int:
        """Number of bytes in the window (read-only, as in the C API)."""
        return self._count

    def update(self, data: BytesLike) -> None:
        """Append bytes to the end of the window."""
        view = memoryview(data).cast("B")
        m = RK_MULT
        self._hash = reduce(lambda h, b: (h * m + b) & MASK32, view, self._hash)
        self._mult = (self._mult * pow(m, len(view), 1 << 32)) & MASK32
        self._count += len(view)

    def rotate(self, out: int, in_: int) -> None:
        """Slide the window one byte: ``out`` leaves the front, ``in_`` joins the end."""
        self._hash = (self._hash * RK_MULT + in_ - self._mult * (out + RK_ADJ)) & MASK32

    def rollin(self, in_: int) -> None:
        """Grow the window by one byte at the end."""
        self._hash = (self._hash * RK_MULT + in_) & MASK32
        self._mult = (self._mult * RK_MULT) & MASK32
        self._count += 1

    def rollout(self, out: int) -> None:
        """Shrink the window by dropping its first byte, ``out``."""
        if self._count == 0:
            raise ValueError("rollout from an empty window")
        self._mult = (self._mult * RK_INVM) & MASK32
        self._hash = (self._hash - self._mult * (out + RK_ADJ)) & MASK32
        self._count -= 1

    def roll(self, outs: BytesLike, ins: BytesLike) -> None:
        """Rotate once per byte pair: ``outs[i]`` leaves as ``ins[i]`` enters."""
        o, i = _check_roll(outs, ins)
        h, mult = self._hash, self._mult
        madj = mult * RK_ADJ
        for a, b in zip(o, i, strict=True):
            h = (h * RK_MULT + b - mult * a - madj) & MASK32
        self._hash = h

    def digest(self) -> int:
        """The 32-bit hash of the current window."""
        return self._hash

    def copy(self) -> RabinKarp:
        """An independent copy of this state."""
        other = RabinKarp()
        other._count, other._hash, other._mult = self._count, self._hash, self._mult
        return other


def rollsum(data: BytesLike) -> int:
    """One-shot rollsum digest of ``data``."""
    return RollSum(data).digest()


def rabinkarp(data: BytesLike) -> int:
    """One-shot Rabin-Karp digest of ``data``."""
    return RabinKarp(data).digest()

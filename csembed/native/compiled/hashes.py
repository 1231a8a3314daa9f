"""Typed wrappers over the C weak sums and strong hashes in ``csembed._native``.

Each class owns one C state struct allocated by cffi (freed with the object).
Arguments are checked here, before C sees them, so C never gets a bad length;
buffers are passed zero-copy with ``ffi.from_buffer``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from csembed._native import ffi, lib
from csembed.native.types import BytesLike


def _buf(data: BytesLike) -> Any:
    return ffi.from_buffer("uint8_t[]", data)


class _WeakSum:
    """One rolling weak sum in C; a subclass names its struct and functions.

    Both sums have the same C API shape (``cs_<name>_init``, ``_update``,
    ``_rotate``, ``_rollin``, ``_rollout``, ``_roll``, ``_digest``), so one
    wrapper serves both; ``__init_subclass__`` binds the functions once.
    """

    __slots__ = ("_s",)
    _ctype: ClassVar[str]
    _init: ClassVar[Any]
    _update: ClassVar[Any]
    _rotate: ClassVar[Any]
    _rollin: ClassVar[Any]
    _rollout: ClassVar[Any]
    _roll: ClassVar[Any]
    _digest: ClassVar[Any]

    def __init_subclass__(cls, c_name: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._ctype = f"{c_name} *"
        for op in ("init", "update", "rotate", "rollin", "rollout", "roll", "digest"):
            setattr(cls, f"_{op}", staticmethod(getattr(lib, f"{c_name}_{op}")))

    def __init__(self, data: BytesLike = b"") -> None:
        self._s = ffi.new(self._ctype)
        self._init(self._s)
        if data:
            self.update(data)

    @property
    def count(self) -> int:
        """Number of bytes in the window."""
        return int(self._s.count)

    def update(self, data: BytesLike) -> None:
        """Append bytes to the end of the window."""
        b = _buf(data)
        self._update(self._s, b, len(b))

    def rotate(self, out: int, in_: int) -> None:
        """Slide the window one byte: ``out`` leaves the front, ``in_`` joins the end."""
        self._rotate(self._s, out, in_)

    def rollin(self, in_: int) -> None:
        """Grow the window by one byte at the end."""
        self._rollin(self._s, in_)

    def rollout(self, out: int) -> None:
        """Shrink the window by dropping its first byte, ``out``."""
        if self._s.count == 0:
            raise ValueError("rollout from an empty window")
        self._rollout(self._s, out)

    def roll(self, outs: BytesLike, ins: BytesLike) -> None:
        """Rotate once per byte pair: ``outs[i]`` leaves as ``ins[i]`` enters."""
        o, i = _buf(outs), _buf(ins)
        if len(o) != len(i):
            raise ValueError(f"roll needs equal lengths, got {len(o)} out and {len(i)} in")
        self._roll(self._s, o, i, len(o))

    def digest(self) -> int:
        """The 32-bit digest of the current window (see the class docstring)."""
        return int(self._digest(self._s))

    def copy(self) -> Self:
        """An independent copy of this state."""
        other = type(self)()
        other._s[0] = self._s[0]
        return other


class RollSum(_WeakSum, c_name="cs_rollsum"):
    """rsync/librsync rolling checksum over a window of bytes; digest ``(s2 << 16) | s1``."""

    __slots__ = ()


class RabinKarp(_WeakSum, c_name="cs_rabinkarp"):
    """librsync's Rabin-Karp polynomial hash (mod 2^32, seed 1) over a window."""

    __slots__ = ()


class Blake2b:
    """Incremental unkeyed BLAKE2b with a digest length of 1..64 bytes."""

    __slots__ = ("digest_size", "_s")

    def __init__(self, data: BytesLike = b"", digest_size: int = 32) -> None:
        if not 1 <= digest_size <= 64:
            raise ValueError(f"BLAKE2b digest_size must be 1..64, got {digest_size}")
        self.digest_size = digest_size
        self._s = ffi.new("cs_blake2b *")
        lib.cs_blake2b_init(self._s, digest_size)
        if data:
            self.update(data)

    def update(self, data: BytesLike) -> None:
        """Hash more bytes."""
        b = _buf(data)
        lib.cs_blake2b_update(self._s, b, len(b))

    def digest(self) -> bytes:
        """The digest of everything hashed so far (hashing may continue)."""
        out = ffi.new("uint8_t[64]")
        lib.cs_blake2b_final(self._s, out)
        return bytes(ffi.buffer(out, self.digest_size))

    def hexdigest(self) -> str:
        """:meth:`digest` as lowercase hex."""
        return self.digest().hex()

    def copy(self) -> Blake2b:
        """An independent copy of this state."""
        other = Blake2b(digest_size=self.digest_size)
        other._s[0] = self._s[0]
        return other


class MD4:
    """Incremental MD4; 16-byte digest."""

    __slots__ = ("_s",)
    digest_size = 16

    def __init__(self, data: BytesLike = b"") -> None:
        self._s = ffi.new("cs_md4 *")
        lib.cs_md4_init(self._s)
        if data:
            self.update(data)

    def update(self, data: BytesLike) -> None:
        """Hash more bytes."""
        b = _buf(data)
        lib.cs_md4_update(self._s, b, len(b))

    def digest(self) -> bytes:
        """The digest of everything hashed so far (hashing may continue)."""
        out = ffi.new("uint8_t[16]")
        lib.cs_md4_final(self._s, out)
        return bytes(ffi.buffer(out, 16))

    def hexdigest(self) -> str:
        """:meth:`digest` as lowercase hex."""
        return self.digest().hex()

    def copy(self) -> MD4:
        """An independent copy of this state."""
        other = MD4()
        other._s[0] = self._s[0]
        return other


def rollsum(data: BytesLike) -> int:
    """One-shot rollsum digest of ``data``."""
    b = _buf(data)
    return int(lib.cs_rollsum_oneshot(b, len(b)))


def rabinkarp(data: BytesLike) -> int:
    """One-shot Rabin-Karp digest of ``data``."""
    b = _buf(data)
    return int(lib.cs_rabinkarp_oneshot(b, len(b)))


def blake2b(data: BytesLike, digest_size: int = 32) -> bytes:
    """One-shot BLAKE2b of ``data`` with the given digest length."""
    if not 1 <= digest_size <= 64:
        raise ValueError(f"BLAKE2b digest_size must be 1..64, got {digest_size}")
    b = _buf(data)
    out = ffi.new("uint8_t[64]")
    lib.cs_blake2b_oneshot(out, digest_size, b, len(b))
    return bytes(ffi.buffer(out, digest_size))


def md4(data: BytesLike) -> bytes:
    """One-shot MD4 of ``data``."""
    b = _buf(data)
    out = ffi.new("uint8_t[16]")
    lib.cs_md4_oneshot(out, b, len(b))
    return bytes(ffi.buffer(out, 16))

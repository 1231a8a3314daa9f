"""Signature parameters and librsync's rules for choosing them.

A signature is described by three numbers, all written in its header: the
magic (which weak sum and which strong hash), the block length and the strong
sum length. :class:`SignatureParams` holds and validates them;
:meth:`SignatureParams.for_basis` applies ``rdiff``'s defaults:

* block length 0 = recommended: 256 for a basis up to 64 KiB, else
  floor(sqrt(size)) rounded down to a multiple of 128; 2048 when the size is
  unknown (a pipe);
* strong length 0 = the hash's maximum (32 for BLAKE2b, 16 for MD4);
  -1 = the minimum ``2 + (lg(size + 2^24) + lg(size / block_len + 1) + 7) / 8``
  (lg = floor log2, integer division), 12 when the size is unknown. Shorter
  than that minimum is allowed (rdiff only warns); longer than the maximum
  is an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType

from csembed import native
from csembed.native.errors import RsyncParamError
from csembed.native.rsync_format import (
    BLAKE2_SIG_MAGIC,
    MAX_BLOCK_LEN,
    MD4_SIG_MAGIC,
    RK_BLAKE2_SIG_MAGIC,
    RK_MD4_SIG_MAGIC,
    SIG_MAGICS,
    STRONG_MAX,
)

DEFAULT_MAGIC = RK_BLAKE2_SIG_MAGIC
#: Block length when the basis size is unknown (librsync RS_DEFAULT_BLOCK_LEN).
UNKNOWN_SIZE_BLOCK_LEN = 2048
#: Minimum strong length when the basis size is unknown (RS_DEFAULT_MIN_STRONG_LEN).
UNKNOWN_SIZE_MIN_STRONG_LEN = 12

_MAGIC_BY_NAMES = {
    ("rollsum", "md4"): MD4_SIG_MAGIC,
    ("rollsum", "blake2"): BLAKE2_SIG_MAGIC,
    ("rabinkarp", "md4"): RK_MD4_SIG_MAGIC,
    ("rabinkarp", "blake2"): RK_BLAKE2_SIG_MAGIC,
}


def signature_magic(hash: str = "blake2", rollsum: str = "rabinkarp") -> int:
    """The magic for a strong hash (``blake2``/``md4``) and weak sum (``rabinkarp``/``rollsum``)."""
    try:
        return _MAGIC_BY_NAMES[(rollsum, hash)]
    except KeyError:
        raise RsyncParamError(f"unknown hash {hash!r} or rollsum {rollsum!r}; expected "
                              "blake2|md4 and rabinkarp|rollsum") from None


def _lg(n: int) -> int:
    return n.bit_length() - 1


def default_block_len(size: int | None) -> int:
    """rdiff's recommended block length for a basis of ``size`` bytes (None: unknown)."""
    if size is None:
        return UNKNOWN_SIZE_BLOCK_LEN
    if size <= 256 * 256:
        return 256
    return min(math.isqrt(size) & ~127, MAX_BLOCK_LEN)


def min_strong_len(size: int | None, block_len: int) -> int:
    """rdiff's minimum safe strong length for this basis size and block length."""
    if size is None:
        return UNKNOWN_SIZE_MIN_STRONG_LEN
    return 2 + (_lg(size + (1 << 24)) + _lg(size // block_len + 1) + 7) // 8


def resolve_backend(backend: ModuleType | str | None) -> ModuleType:
    """A backend module from a module, a name (``"c"``/``"python"``) or None (the default)."""
    if backend is None:
        return native.get_backend(native.BACKEND)
    if isinstance(backend, str):
        return native.get_backend(backend)
    return backend


@dataclass(frozen=True)
class SignatureParams:
    """The header of a signature: magic, block length and strong-sum length."""

    magic: int
    block_len: int
    strong_len: int

    def __post_init__(self) -> None:
        if self.magic not in SIG_MAGICS:
            raise RsyncParamError(f"not a signature magic number: 0x{self.magic:08x}")
        if not 1 <= self.block_len <= MAX_BLOCK_LEN:
            raise RsyncParamError(f"block length must be 1..{MAX_BLOCK_LEN}, "
                                  f"got {self.block_len}")
        if not 1 <= self.strong_len <= self.strong_max:
            raise RsyncParamError(f"strong sum length must be 1..{self.strong_max} for "
                                  f"{self.strong}, got {self.strong_len}")

    @property
    def weak(self) -> str:
        """``"rollsum"`` or ``"rabinkarp"``."""
        return SIG_MAGICS[self.magic][0]

    @property
    def strong(self) -> str:
        """``"blake2"`` or ``"md4"``."""
        return SIG_MAGICS[self.magic][1]

    @property
    def strong_max(self) -> int:
        """Longest strong sum this hash offers."""
        return STRONG_MAX[self.strong]

    @property
    def record_len(self) -> int:
        """Bytes per block in the signature."""
        return 4 + self.strong_len

    def header(self) -> bytes:
        """The 12-byte signature header."""
        return b"".join(v.to_bytes(4, "big") for v in (self.magic, self.block_len,
                                                       self.strong_len))

    @classmethod
    def for_basis(cls, size: int | None, *, block_len: int = 0, strong_len: int = 0,
                  hash: str = "blake2", rollsum: str = "rabinkarp") -> SignatureParams:
        """Parameters as ``rdiff signature`` picks them (0 = default, strong_len -1 = minimum)."""
        magic = signature_magic(hash, rollsum)
        if block_len < 0:
            raise RsyncParamError(f"block length must not be negative, got {block_len}")
        bl = block_len or default_block_len(size)
        if strong_len == 0:
            sl = STRONG_MAX[hash]
        elif strong_len == -1:
            sl = min(min_strong_len(size, bl), STRONG_MAX[hash])
        else:
            sl = strong_len
        return cls(magic, bl, sl)

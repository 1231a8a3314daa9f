"""File presence as a bloom filter (directory.md "File Presence").

Theory of operation
-------------------
A peer tells another which contents it holds with a bloom filter over the
files' SHA-256 digests. No further hashing is done: for ``k`` bits per file,
the ``i``-th bit position is the ``i``-th 32-bit big-endian word of the
digest modulo the filter size in bits (so ``1 <= k <= 8``). The draft's
example, ``c16987a1...`` in a 1000-bit filter, sets bits 689 and 229.

Wire form (our reading of the draft, written down in ``protocol/directory.md``):
the ``directory.bloom_filter`` message carries ``k_value``; its binary
attachment is the bit array, and its size in bits is eight times the
attachment's length (the draft gives no other size field, so a sender's
size is always a multiple of 8). Bit ``i`` is bit ``i mod 8``, counted from
the least significant, of byte ``i div 8`` (LSB-first, as in most bitset
code). The draft's special values fall out of this form with no special
casing: a one-byte attachment ``0xff`` has every bit set, so every file tests
present ("probe by trial and error"); ``0x00`` has none, so nothing is asked
for until ``directory.present`` says otherwise. :meth:`BloomFilter.everything`
and :meth:`BloomFilter.nothing` build them.

Sizing (:func:`choose_parameters`): for ``n`` files and false-positive rate
``p``, ``m = -n ln p / (ln 2)^2`` bits rounded up to whole bytes and
``k = (m / n) ln 2`` rounded and clamped to 1..8, then capped at the
caller's byte budget. A received filter is hostile input: its ``k_value``
must be an integer 1..8, its attachment 1 byte to ``max_bytes``, checked while
the chunks arrive (:func:`receive_filter`).

:class:`CountingBloomFilter` keeps 8-bit saturating counters so files can
be removed without rebuilding; :meth:`CountingBloomFilter.to_filter` squeezes
it into a plain filter for sending.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from csembed.directory.errors import BloomError
from csembed.protocol.jsonvalues import is_strict_int

MIN_K: Final = 1
MAX_K: Final = 8  #: eight 32-bit words in a SHA-256 digest
DEFAULT_MAX_BYTES: Final = 1 << 20  #: default bound on a filter we build or accept


def _digest(sha256: str | bytes) -> bytes:
    if isinstance(sha256, bytes | bytearray):
        if len(sha256) != 32:
            raise BloomError(f"a SHA-256 digest is 32 bytes, got {len(sha256)}")
        return bytes(sha256)
    try:
        raw = bytes.fromhex(sha256)
    except (TypeError, ValueError):
        raise BloomError(f"not a hex SHA-256: {sha256!r}") from None
    if len(raw) != 32:
        raise BloomError(f"not a hex SHA-256: {sha256!r}")
    return raw


def bit_positions(sha256: str | bytes, k: int, size_bits: int) -> list[int]:
    """The ``k`` bit positions of a digest in a filter of ``size_bits`` bits."""
    digest = _digest(sha256)
    return [int.from_bytes(digest[4 * i:4 * i + 4], "big") % size_bits for i in range(k)]


def _check_k(k: object) -> int:
    if not is_strict_int(k) or not MIN_K <= k <= MAX_K:
        raise BloomError(f"k_value must be an integer from {MIN_K} to {MAX_K}, got {k!r}")
    return k


def choose_parameters(count: int, false_positive_rate: float = 0.01,
                      max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[int, int]:
    """``(size_bits, k)`` for ``count`` files at the wanted false-positive rate.

    The size is a whole number of bytes, at least one and at most
    ``max_bytes``; when the cap binds, ``k`` is re-chosen for the smaller
    filter.
    """
    if count < 0:
        raise BloomError(f"file count cannot be negative: {count}")
    if not 0 < false_positive_rate < 1:
        raise BloomError(f"false-positive rate must be between 0 and 1, "
                         f"got {false_positive_rate}")
    if max_bytes < 1:
        raise BloomError(f"max_bytes must be at least 1, got {max_bytes}")
    if count == 0:
        return 8, 1
    ideal = -count * math.log(false_positive_rate) / (math.log(2) ** 2)
    size_bytes = min(max(1, math.ceil(ideal / 8)), max_bytes)
    size_bits = size_bytes * 8
    k = max(MIN_K, min(MAX_K, round(size_bits / count * math.log(2))))
    return size_bits, k


class BloomFilter:
    """A plain bloom filter over SHA-256 digests, as sent on the wire."""

    def __init__(self, data: bytes | bytearray, k: int) -> None:
        if len(data) < 1:
            raise BloomError("a bloom filter needs at least one byte")
        self.k = _check_k(k)
        self._bits = bytearray(data)

    @classmethod
    def empty(cls, size_bits: int, k: int) -> BloomFilter:
        """A filter of at least ``size_bits`` bits (rounded up to bytes), all clear."""
        if size_bits < 1:
            raise BloomError(f"filter size must be at least 1 bit, got {size_bits}")
        return cls(bytes((size_bits + 7) // 8), k)

    @classmethod
    def for_hashes(cls, hashes: Iterable[str | bytes], count: int,
                   false_positive_rate: float = 0.01,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> BloomFilter:
        """A filter sized for ``count`` files holding every digest in ``hashes``."""
        size_bits, k = choose_parameters(count, false_positive_rate, max_bytes)
        result = cls.empty(size_bits, k)
        for sha in hashes:
            result.add(sha)
        return result

    @classmethod
    def everything(cls) -> BloomFilter:
        """The draft's ``0xff``: every file tests present (peer probes for what it needs)."""
        return cls(b"\xff", 1)

    @classmethod
    def nothing(cls) -> BloomFilter:
        """The draft's ``0x00``: nothing is present until ``directory.present`` says so."""
        return cls(b"\x00", 1)

    @property
    def size_bits(self) -> int:
        """The modulus used for bit positions: eight times the byte length."""
        return len(self._bits) * 8

    @property
    def is_everything(self) -> bool:
        """True when every bit is set."""
        return all(b == 0xFF for b in self._bits)

    @property
    def is_nothing(self) -> bool:
        """True when no bit is set."""
        return not any(self._bits)

    def add(self, sha256: str | bytes) -> None:
        """Set the digest's ``k`` bits."""
        for bit in bit_positions(sha256, self.k, self.size_bits):
            self._bits[bit >> 3] |= 1 << (bit & 7)

    def __contains__(self, sha256: object) -> bool:
        if not isinstance(sha256, str | bytes):
            return False
        return all(self._bits[bit >> 3] >> (bit & 7) & 1
                   for bit in bit_positions(sha256, self.k, self.size_bits))

    def may_contain(self, sha256: str | bytes) -> bool:
        """True if the peer may hold the content (false positives possible)."""
        return sha256 in self

    def fill_ratio(self) -> float:
        """Fraction of bits set (a full filter tells nothing)."""
        return sum(bin(b).count("1") for b in self._bits) / self.size_bits

    def to_bytes(self) -> bytes:
        """The binary attachment of ``directory.bloom_filter``."""
        return bytes(self._bits)


def receive_filter(k_value: object, chunks: Iterable[bytes],
                   max_bytes: int = DEFAULT_MAX_BYTES) -> BloomFilter:
    """Build a peer's filter from ``k_value`` and its attachment's chunks.

    Stops with :class:`BloomError` as soon as the attachment exceeds
    ``max_bytes``, so a hostile peer cannot make us buffer more.
    """
    k = _check_k(k_value)
    data = bytearray()
    for chunk in chunks:
        if len(data) + len(chunk) > max_bytes:
            raise BloomError(f"bloom filter larger than {max_bytes} bytes")
        data += chunk
    if not data:
        raise BloomError("empty bloom filter attachment")
    return BloomFilter(data, k)


class CountingBloomFilter:
    """A bloom filter with 8-bit counters, so files can also be removed.

    Counters saturate at 255 and a saturated counter is never decremented
    (it may stand for more files than it can count), which keeps the filter
    free of false negatives at the cost of a few stale positives.
    """

    def __init__(self, size_bits: int, k: int) -> None:
        if size_bits < 8 or size_bits % 8:
            raise BloomError(f"size must be a positive multiple of 8 bits, got {size_bits}")
        self.k = _check_k(k)
        self._counts = bytearray(size_bits)

    @property
    def size_bits(self) -> int:
        """The filter size in bits."""
        return len(self._counts)

    def add(self, sha256: str | bytes) -> None:
        """Count one more file with this digest."""
        for bit in bit_positions(sha256, self.k, self.size_bits):
            if self._counts[bit] < 255:
                self._counts[bit] += 1

    def remove(self, sha256: str | bytes) -> None:
        """Count one file fewer (only call for digests that were added)."""
        for bit in bit_positions(sha256, self.k, self.size_bits):
            if 0 < self._counts[bit] < 255:
                self._counts[bit] -= 1

    def __contains__(self, sha256: object) -> bool:
        if not isinstance(sha256, str | bytes):
            return False
        return all(self._counts[bit] for bit in bit_positions(sha256, self.k, self.size_bits))

    def to_filter(self) -> BloomFilter:
        """The plain filter to send."""
        data = bytearray(self.size_bits // 8)
        for bit, count in enumerate(self._counts):
            if count:
                data[bit >> 3] |= 1 << (bit & 7)
        return BloomFilter(data, self.k)

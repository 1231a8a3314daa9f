"""Constants of librsync's signature and delta formats, shared by both backends.

See ``protocol/rsync.md`` for the formats in full. Everything here mirrors
``native/rsync_format.h``; the error constructors at the bottom give both
backends the same messages for the same faults.
"""

from __future__ import annotations

from csembed.native.errors import BadMagicError, CorruptError

DELTA_MAGIC = 0x72730236
MD4_SIG_MAGIC = 0x72730136  # rollsum + MD4
BLAKE2_SIG_MAGIC = 0x72730137  # rollsum + BLAKE2b
RK_MD4_SIG_MAGIC = 0x72730146  # Rabin-Karp + MD4
RK_BLAKE2_SIG_MAGIC = 0x72730147  # Rabin-Karp + BLAKE2b: rdiff's default

#: magic -> (weak sum, strong hash)
SIG_MAGICS: dict[int, tuple[str, str]] = {
    MD4_SIG_MAGIC: ("rollsum", "md4"),
    BLAKE2_SIG_MAGIC: ("rollsum", "blake2"),
    RK_MD4_SIG_MAGIC: ("rabinkarp", "md4"),
    RK_BLAKE2_SIG_MAGIC: ("rabinkarp", "blake2"),
}
#: longest strong sum per hash (MD4 digest, BLAKE2b-256 digest)
STRONG_MAX = {"md4": 16, "blake2": 32}
SIG_HEADER_LEN = 12
#: Largest block length accepted (the sqrt rule reaches it only for 256 TiB files).
MAX_BLOCK_LEN = 1 << 24
#: Literal runs are cut into commands of at most this many bytes.
LITERAL_FLUSH = 32768

# Delta opcodes.
OP_END = 0x00
OP_LITERAL_64 = 0x40
OP_LITERAL_N1 = 0x41
OP_LITERAL_N8 = 0x44
OP_COPY_N1_N1 = 0x45
OP_COPY_N8_N8 = 0x54

# Patch decoder events (values match cs_status in native/cs_status.h).
NEED_INPUT = 1
DONE = 3
LITERAL = 4
COPY = 5


def magic_kinds(magic: int) -> tuple[str, str]:
    """(weak, strong) names for a signature magic; :class:`BadMagicError` if unknown."""
    try:
        return SIG_MAGICS[magic]
    except KeyError:
        raise BadMagicError(f"signature: unknown magic number 0x{magic:08x}") from None


def bad_delta_magic(offset: int) -> BadMagicError:
    """The delta does not start with ``rs\\x026`` (``offset``: first wrong byte)."""
    return BadMagicError(f"delta: bad magic number (byte {offset} differs from 72 73 02 36)")


def corrupt_command(op: int, offset: int) -> CorruptError:
    """A command the patcher must refuse; ``offset`` is where decoding stopped."""
    if op > OP_COPY_N8_N8:
        return CorruptError(f"delta: reserved opcode 0x{op:02x} at byte {offset}")
    if op <= OP_LITERAL_N8:
        return CorruptError(f"delta: LITERAL of length 0 (opcode 0x{op:02x}) ending at byte "
                            f"{offset}")
    return CorruptError(f"delta: COPY with zero length or an offset/length of 2^63 or more "
                        f"(opcode 0x{op:02x}) ending at byte {offset}")

"""uTP packets (BEP 29): the 20-byte header, the extension chain, the
selective-ack bitmask, and 16-bit sequence arithmetic.

Pure functions over bytes. :func:`decode` accepts only what BEP 29 defines
(version 1, types 0-4, a well-formed extension chain) and raises
:class:`UtpPacketError` otherwise, so the connection machine never sees a
malformed packet. Unknown extensions are skipped, as BEP 29 asks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "HEADER_SIZE",
    "ST_DATA",
    "ST_FIN",
    "ST_RESET",
    "ST_STATE",
    "ST_SYN",
    "Packet",
    "UtpPacketError",
    "decode",
    "encode",
    "looks_like_utp",
    "seq_diff",
    "seq_le",
    "seq_lt",
]

ST_DATA: Final = 0
ST_FIN: Final = 1
ST_STATE: Final = 2
ST_RESET: Final = 3
ST_SYN: Final = 4
VERSION: Final = 1
EXT_SACK: Final = 1
MAX_EXTENSIONS: Final = 8
"""More than this many extensions in one packet is treated as hostile."""

_HEADER = struct.Struct("!BBHIIIHH")
HEADER_SIZE: Final = _HEADER.size  # 20


class UtpPacketError(ValueError):
    """A datagram that is not a well-formed uTP packet."""


@dataclass(frozen=True)
class Packet:
    """One uTP packet; ``sack`` is the selective-ack bitmask, if any."""

    type: int
    connection_id: int
    timestamp: int
    timestamp_diff: int
    wnd_size: int
    seq_nr: int
    ack_nr: int
    payload: bytes = b""
    sack: bytes | None = None


def encode(packet: Packet) -> bytes:
    """The packet as a datagram."""
    extension = EXT_SACK if packet.sack is not None else 0
    head = _HEADER.pack((packet.type << 4) | VERSION, extension, packet.connection_id,
                        packet.timestamp & 0xFFFFFFFF, packet.timestamp_diff & 0xFFFFFFFF,
                        packet.wnd_size & 0xFFFFFFFF, packet.seq_nr, packet.ack_nr)
    if packet.sack is None:
        return head + packet.payload
    return head + bytes((0, len(packet.sack))) + packet.sack + packet.payload


def looks_like_utp(data: bytes) -> bool:
    """Cheap test used to tell uTP from STUN on a shared socket."""
    return len(data) >= HEADER_SIZE and data[0] & 0x0F == VERSION and data[0] >> 4 <= ST_SYN


def decode(data: bytes) -> Packet:
    """Parse a datagram; raises :class:`UtpPacketError` for anything malformed."""
    if len(data) < HEADER_SIZE:
        raise UtpPacketError(f"uTP packet of {len(data)} bytes is shorter than the header")
    type_ver, extension, conn, ts, tdiff, wnd, seq, ack = _HEADER.unpack_from(data)
    if type_ver & 0x0F != VERSION:
        raise UtpPacketError(f"uTP version {type_ver & 0x0F}, expected {VERSION}")
    kind = type_ver >> 4
    if kind > ST_SYN:
        raise UtpPacketError(f"uTP packet type {kind} is not defined by BEP 29")
    offset = HEADER_SIZE
    sack: bytes | None = None
    count = 0
    while extension:
        count += 1
        if count > MAX_EXTENSIONS:
            raise UtpPacketError("uTP packet has too many extensions")
        if offset + 2 > len(data):
            raise UtpPacketError("uTP extension header runs past the packet")
        following, length = data[offset], data[offset + 1]
        body = data[offset + 2: offset + 2 + length]
        if len(body) != length:
            raise UtpPacketError("uTP extension runs past the packet")
        if extension == EXT_SACK:
            # BEP 29: "the bitmask ... length is at least 4 and a multiple of 4"
            if length < 4 or length % 4:
                raise UtpPacketError(f"uTP selective ack of {length} bytes")
            sack = bytes(body)
        extension = following
        offset += 2 + length
    return Packet(kind, conn, ts, tdiff, wnd, seq, ack, bytes(data[offset:]), sack)


def seq_diff(a: int, b: int) -> int:
    """``a - b`` for 16-bit sequence numbers, as a signed number in [-32768, 32767]."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def seq_lt(a: int, b: int) -> bool:
    """``a`` comes before ``b`` (wrapping)."""
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    """``a`` comes before ``b`` or is ``b`` (wrapping)."""
    return seq_diff(a, b) <= 0

"""PCP (RFC 6887) MAP requests and responses, sans-I/O.

Theory of operation
-------------------
PCP is NAT-PMP's successor on the same UDP port 5351 of the gateway. We
speak only its MAP opcode: one 60-byte request asks for an inbound mapping
of ``internal_port`` (protocol 6 = TCP or 17 = UDP) for ``lifetime``
seconds, suggesting an external port and address; lifetime 0 deletes it.
The request carries our own address as the gateway sees it (IPv4 as an
IPv4-mapped IPv6 address) and a 96-bit nonce; the answer must echo the
nonce, protocol and internal port, and carries a result code, the lifetime
granted, the gateway's epoch and the external port and address assigned.
Renewals and the deletion reuse the mapping's nonce (RFC 6887 11.2).

Version negotiation (RFC 6887 9): a NAT-PMP-only gateway answers a PCP
request with a NAT-PMP "unsupported version" answer (version 0, result 1);
:func:`parse_map_response` raises :class:`PcpVersionError` for it, and the
caller falls back to NAT-PMP at once. The other way round,
:func:`csembed.nat.natpmp.parse_response` names a PCP answer to a NAT-PMP
request. Options in answers are skipped after their framing is checked;
we send none.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from csembed.security.keys import Rng

__all__ = [
    "MAX_MESSAGE",
    "PCP_PORT",
    "PcpError",
    "PcpMapResponse",
    "PcpResultError",
    "PcpVersionError",
    "map_request",
    "new_nonce",
    "parse_map_response",
]

PCP_PORT: Final = 5351
VERSION: Final = 2
OP_MAP: Final = 1
RESPONSE_BIT: Final = 0x80
MAP_SIZE: Final = 60  #: 24-byte common header + 36-byte MAP body
MAX_MESSAGE: Final = 1100  #: RFC 6887 7: no PCP message is longer
PROTOCOLS: Final = {"tcp": 6, "udp": 17}
RESULTS: Final = {
    1: "UNSUPP_VERSION", 2: "NOT_AUTHORIZED", 3: "MALFORMED_REQUEST",
    4: "UNSUPP_OPCODE", 5: "UNSUPP_OPTION", 6: "MALFORMED_OPTION",
    7: "NETWORK_FAILURE", 8: "NO_RESOURCES", 9: "UNSUPP_PROTOCOL",
    10: "USER_EX_QUOTA", 11: "CANNOT_PROVIDE_EXTERNAL", 12: "ADDRESS_MISMATCH",
    13: "EXCESSIVE_REMOTE_PEERS",
}
_UNSPECIFIED_V4 = ipaddress.IPv6Address("::ffff:0.0.0.0")


class PcpError(ValueError):
    """A datagram that is not a usable PCP MAP answer."""


class PcpResultError(PcpError):
    """The gateway answered with a non-zero result code."""

    def __init__(self, result: int, lifetime: int) -> None:
        name = RESULTS.get(result, f"result {result}")
        super().__init__(f"gateway refused the PCP mapping: {name}")
        self.result = result
        self.lifetime = lifetime  #: for errors, how long the condition is expected to last


class PcpVersionError(PcpError):
    """The gateway speaks another version (NAT-PMP's 0, or a PCP version we lack)."""

    def __init__(self, version: int) -> None:
        what = "NAT-PMP only" if version == 0 else f"PCP version {version}"
        super().__init__(f"gateway does not speak PCP version {VERSION} ({what})")
        self.version = version


@dataclass(frozen=True)
class PcpMapResponse:
    """A successful MAP answer."""

    lifetime: int
    epoch: int
    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_ip: str


def new_nonce(rng: Rng) -> bytes:
    """A mapping's 96-bit nonce."""
    nonce = rng(12)
    if len(nonce) != 12:
        raise ValueError("rng gave a nonce of the wrong length")
    return nonce


def _address16(address: str) -> bytes:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        ip = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed)
    return ip.packed


def _address_text(packed: bytes) -> str:
    ip = ipaddress.IPv6Address(packed)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


def map_request(*, client_ip: str, nonce: bytes, protocol: str, internal_port: int,
                lifetime: int, external_port: int = 0, external_ip: str | None = None) -> bytes:
    """A MAP request (``lifetime`` 0 deletes); ``external_*`` are suggestions."""
    if len(nonce) != 12:
        raise ValueError("a PCP nonce is 12 bytes")
    if not (0 < internal_port < 65536 and 0 <= external_port < 65536
            and 0 <= lifetime < 1 << 32):
        raise ValueError("PCP port or lifetime out of range")
    suggested = _address16(external_ip) if external_ip else _UNSPECIFIED_V4.packed
    return (struct.pack("!BBHI", VERSION, OP_MAP, 0, lifetime) + _address16(client_ip)
            + nonce + struct.pack("!B3xHH", PROTOCOLS[protocol], internal_port,
                                  external_port) + suggested)


def _check_options(data: bytes) -> None:
    offset = MAP_SIZE
    while offset < len(data):
        if offset + 4 > len(data):
            raise PcpError("PCP answer ends inside an option header")
        length = struct.unpack_from("!H", data, offset + 2)[0]
        offset += 4 + (length + 3) // 4 * 4
        if offset > len(data):
            raise PcpError("PCP option runs past the end of the answer")


def parse_map_response(data: bytes, *, nonce: bytes, protocol: str,
                       internal_port: int) -> PcpMapResponse:
    """Parse the answer to our MAP request; raise :class:`PcpError` (or a subclass)."""
    if len(data) < 4:
        raise PcpError(f"PCP answer of {len(data)} bytes")
    if data[0] == 0 and data[1] & RESPONSE_BIT and struct.unpack_from("!H", data, 2)[0] == 1:
        raise PcpVersionError(0)  # NAT-PMP's "unsupported version" (RFC 6887 9)
    if not data[1] & RESPONSE_BIT or data[1] & 0x7F != OP_MAP:
        raise PcpError("not a PCP MAP answer")
    if data[0] != VERSION:
        if data[3] == 1:
            raise PcpVersionError(data[0])
        raise PcpError(f"PCP answer of version {data[0]}")
    if len(data) > MAX_MESSAGE or len(data) % 4 or len(data) < 24:
        raise PcpError(f"PCP answer of {len(data)} bytes")
    result = data[3]
    lifetime, epoch = struct.unpack_from("!II", data, 4)
    if result == 1:
        raise PcpVersionError(VERSION)
    if result:
        raise PcpResultError(result, lifetime)
    if len(data) < MAP_SIZE:
        raise PcpError(f"PCP MAP answer of {len(data)} bytes")
    _check_options(data)
    got_nonce = data[24:36]
    proto, internal, external = struct.unpack_from("!B3xHH", data, 36)
    if got_nonce != nonce or proto != PROTOCOLS[protocol] or internal != internal_port:
        raise PcpError("PCP answer is for another mapping (nonce, protocol or port)")
    if lifetime and not external:
        raise PcpError("PCP answer grants external port 0")
    return PcpMapResponse(lifetime=lifetime, epoch=epoch, nonce=got_nonce, protocol=proto,
                          internal_port=internal, external_port=external,
                          external_ip=_address_text(data[44:60]))

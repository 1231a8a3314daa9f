"""NAT-PMP (RFC 6886) messages, sans-I/O: the external address and port mappings.

Theory of operation
-------------------
A client sends small UDP requests to its default gateway's port 5351: opcode
0 asks for the external IPv4 address, 1 (UDP) and 2 (TCP) ask for a mapping
of an internal port for a lifetime in seconds (0 deletes it). Answers carry
opcode + 128, a result code (0 = success) and the gateway's seconds since
its mappings were last lost (the epoch). RFC 6886 resends a request after
250 ms, doubling, up to nine times; the runtime asks fewer times, since a
gateway that speaks NAT-PMP answers the first. PCP (RFC 6887), NAT-PMP's
successor on the same port, is in :mod:`csembed.nat.pcp`; a PCP-only
gateway answers a NAT-PMP request with a version-2 "unsupported version"
answer, which :func:`parse_response` names as such (RFC 6887 9).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "NATPMP_PORT",
    "NatPmpError",
    "NatPmpRefused",
    "NatPmpResponse",
    "external_address_request",
    "mapping_request",
    "parse_response",
]

NATPMP_PORT: Final = 5351
OP_EXTERNAL: Final = 0
OP_MAP_UDP: Final = 1
OP_MAP_TCP: Final = 2
RESULTS: Final = {1: "unsupported version", 2: "not authorized or refused",
                  3: "network failure", 4: "out of resources", 5: "unsupported opcode"}


class NatPmpError(ValueError):
    """A datagram that is not a usable NAT-PMP answer, or a refusal."""


class NatPmpRefused(NatPmpError):
    """A real answer that says no: a result code, or PCP's "unsupported version"."""


@dataclass(frozen=True)
class NatPmpResponse:
    """An answer: ``external_ip`` for opcode 0, ports and lifetime for mappings."""

    opcode: int
    epoch: int
    external_ip: str | None = None
    internal_port: int = 0
    external_port: int = 0
    lifetime: int = 0


def external_address_request() -> bytes:
    return bytes((0, OP_EXTERNAL))


def mapping_request(protocol: str, internal_port: int, external_port: int,
                    lifetime: int) -> bytes:
    """Map (or with ``lifetime`` 0, delete) ``protocol`` ``"tcp"``/``"udp"``."""
    op = {"udp": OP_MAP_UDP, "tcp": OP_MAP_TCP}[protocol]
    return struct.pack("!BBHHHI", 0, op, 0, internal_port, external_port, lifetime)


def parse_response(data: bytes) -> NatPmpResponse:
    """Parse an answer; a non-zero result code raises :class:`NatPmpError`."""
    if len(data) >= 4 and data[0] >= 2 and data[1] >= 128 and data[3] == 1:
        raise NatPmpRefused(f"gateway speaks PCP version {data[0]}, not NAT-PMP")
    if len(data) < 8 or data[0] != 0 or data[1] < 128:
        raise NatPmpError("not a NAT-PMP answer")
    op = data[1] - 128
    result, epoch = struct.unpack_from("!HI", data, 2)
    if result:
        raise NatPmpRefused(f"gateway refused NAT-PMP opcode {op}: "
                          f"{RESULTS.get(result, f'result {result}')}")
    if op == OP_EXTERNAL:
        if len(data) != 12:
            raise NatPmpError(f"NAT-PMP address answer of {len(data)} bytes")
        return NatPmpResponse(op, epoch, external_ip=str(ipaddress.IPv4Address(data[8:12])))
    if op in (OP_MAP_UDP, OP_MAP_TCP):
        if len(data) != 16:
            raise NatPmpError(f"NAT-PMP mapping answer of {len(data)} bytes")
        internal, external, lifetime = struct.unpack_from("!HHI", data, 8)
        return NatPmpResponse(op, epoch, internal_port=internal, external_port=external,
                              lifetime=lifetime)
    raise NatPmpError(f"NAT-PMP answer for unknown opcode {op}")

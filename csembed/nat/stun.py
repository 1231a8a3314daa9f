"""STUN binding requests (RFC 5389), enough to learn our public UDP address.

Theory of operation
-------------------
:func:`binding_request` builds a request with a caller-chosen 96-bit
transaction ID; :func:`parse_response` checks a datagram is a STUN success
(or error) response and pulls out XOR-MAPPED-ADDRESS (or the older
MAPPED-ADDRESS). :class:`StunProbe` is the sans-I/O client for one server:
it resends the request on RFC 5389's doubling schedule (500 ms, 1 s, 2 s, ...)
until an answer with its transaction ID arrives or the tries run out, and
:func:`classify` compares what two servers saw: the same public address from
both means an endpoint-independent ("cone") mapping, different ports mean a
symmetric NAT, where a peer cannot reuse the address a STUN server saw.

A STUN message starts with two zero bits and carries the magic cookie at
bytes 4-7, so :func:`is_stun` tells it apart from uTP on the same socket.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAGIC_COOKIE",
    "StunError",
    "StunProbe",
    "StunResponse",
    "binding_request",
    "classify",
    "is_stun",
    "parse_response",
]

MAGIC_COOKIE: Final = 0x2112A442
BINDING_REQUEST: Final = 0x0001
BINDING_SUCCESS: Final = 0x0101
BINDING_ERROR: Final = 0x0111
ATTR_MAPPED_ADDRESS: Final = 0x0001
ATTR_XOR_MAPPED_ADDRESS: Final = 0x0020
ATTR_XOR_MAPPED_ADDRESS_OLD: Final = 0x8020
ATTR_ERROR_CODE: Final = 0x0009
_HEADER = struct.Struct("!HHI12s")
MAX_MESSAGE: Final = 1280


class StunError(ValueError):
    """A datagram that is not a usable STUN response."""


@dataclass(frozen=True)
class StunResponse:
    """A parsed response: ``mapped`` is (host, port), or ``error`` says why not."""

    transaction_id: bytes
    mapped: tuple[str, int] | None
    error: str | None = None


def is_stun(data: bytes) -> bool:
    """True when ``data`` has a STUN header (first two bits zero, magic cookie)."""
    return len(data) >= 20 and data[0] & 0xC0 == 0 and \
        int.from_bytes(data[4:8], "big") == MAGIC_COOKIE


def binding_request(transaction_id: bytes) -> bytes:
    """A Binding request with no attributes."""
    if len(transaction_id) != 12:
        raise ValueError("a STUN transaction ID is 12 bytes")
    return _HEADER.pack(BINDING_REQUEST, 0, MAGIC_COOKIE, transaction_id)


def _address(value: bytes, xor: bool, tid: bytes) -> tuple[str, int]:
    if len(value) < 8:
        raise StunError("STUN address attribute is too short")
    family, port = value[1], int.from_bytes(value[2:4], "big")
    raw = value[4:]
    if xor:
        port ^= MAGIC_COOKIE >> 16
        mask = struct.pack("!I", MAGIC_COOKIE) + tid
        raw = bytes(b ^ m for b, m in zip(raw, mask, strict=False))
    if family == 1 and len(raw) == 4:
        return str(ipaddress.IPv4Address(raw)), port
    if family == 2 and len(raw) == 16:
        return str(ipaddress.IPv6Address(raw)), port
    raise StunError(f"STUN address family {family} with {len(raw)} address bytes")


def parse_response(data: bytes) -> StunResponse:
    """Parse a Binding response; raises :class:`StunError` for anything else."""
    if not is_stun(data):
        raise StunError("not a STUN message")
    kind, length, _, tid = _HEADER.unpack_from(data)
    if length % 4 or 20 + length != len(data) or len(data) > MAX_MESSAGE:
        raise StunError(f"STUN length {length} does not match a {len(data)}-byte datagram")
    if kind not in (BINDING_SUCCESS, BINDING_ERROR):
        raise StunError(f"STUN message type {kind:#06x} is not a Binding response")
    mapped: tuple[str, int] | None = None
    fallback: tuple[str, int] | None = None
    error: str | None = None
    offset = 20
    while offset + 4 <= len(data):
        attr, size = struct.unpack_from("!HH", data, offset)
        value = data[offset + 4: offset + 4 + size]
        if len(value) != size:
            raise StunError("STUN attribute runs past the message")
        if attr in (ATTR_XOR_MAPPED_ADDRESS, ATTR_XOR_MAPPED_ADDRESS_OLD) and mapped is None:
            mapped = _address(value, True, tid)
        elif attr == ATTR_MAPPED_ADDRESS:
            fallback = _address(value, False, tid)
        elif attr == ATTR_ERROR_CODE and len(value) >= 4:
            code = (value[2] & 7) * 100 + value[3]
            error = f"STUN error {code}: {value[4:].decode('utf-8', 'replace')}"
        offset += 4 + (size + 3) // 4 * 4
    if kind == BINDING_ERROR:
        return StunResponse(tid, None, error or "STUN error response")
    if mapped is None:
        mapped = fallback
    if mapped is None:
        return StunResponse(tid, None, "STUN response carries no mapped address")
    return StunResponse(tid, mapped)


class StunProbe:
    """One Binding transaction with one server, sans-I/O.

    ``datagrams_to_send()`` gives the request when it is due; feed answers to
    :meth:`receive`; ``done`` turns true with ``mapped`` or ``error`` set.
    """

    def __init__(self, server: tuple[str, int], transaction_id: bytes, now: float, *,
                 first_rto: float = 0.5, tries: int = 4) -> None:
        self.server = server
        self.transaction_id = transaction_id
        self.mapped: tuple[str, int] | None = None
        self.error: str | None = None
        self.done = False
        self._request = binding_request(transaction_id)
        self._rto = first_rto
        self._tries_left = tries
        self._due: float | None = now

    def datagrams_to_send(self, now: float) -> list[bytes]:
        if self.done or self._due is None or now < self._due:
            return []
        self._tries_left -= 1
        self._due = now + self._rto
        self._rto *= 2
        return [self._request]

    def get_timer(self) -> float | None:
        return None if self.done else self._due

    def handle_timer(self, now: float) -> None:
        if not self.done and self._tries_left <= 0 and self._due is not None \
                and now >= self._due:
            self.done, self.error = True, f"no answer from STUN server {self.server[0]}"

    def receive(self, response: StunResponse) -> bool:
        """Take a parsed response; True if it was ours."""
        if self.done or response.transaction_id != self.transaction_id:
            return False
        self.done = True
        self.mapped, self.error = response.mapped, response.error
        return True


def classify(local: tuple[str, int], seen: list[tuple[str, int]]) -> str:
    """What the STUN answers say about our NAT.

    ``"none"``: a server saw our own address (no NAT); ``"cone"``: every
    server saw the same public address; ``"symmetric"``: servers saw
    different ports (each destination gets a new mapping); ``"unknown"``:
    fewer than one answer, or a single answer behind a NAT (cannot tell yet).
    """
    if not seen:
        return "unknown"
    if any(s == local for s in seen):
        return "none"
    if len(set(seen)) > 1:
        return "symmetric"
    return "cone" if len(seen) > 1 else "unknown"

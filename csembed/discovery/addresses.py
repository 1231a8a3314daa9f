"""IDs and peer addresses as the discovery messages carry them.

Theory of operation
-------------------
Three kinds of strings travel in tracker and LAN messages:

* a **club ID** -- an access ID or key ID, SHA-256 sized: 64 hex digits;
* a **peer ID** -- 128 random bits: 32 hex digits;
* a **peer address** -- ``scheme:HOST:PORT`` (core.md, "Peer Discovery" and
  "Tracker Protocol"), where HOST is an IPv4 address, an IPv6 address in
  square brackets, or a DNS name, e.g. ``tcp:192.168.1.2:49221``,
  ``tcp:[2600:3c01::f03c:91ff:feae:914c]:49221``, ``utp:1.2.1.1:3824``.

IDs are accepted in either case and always handed on in lower case, so one
club can never be split by spelling. Addresses are checked at two depths:
:func:`check_address_text` is the tracker's check -- a bounded printable
string with a scheme prefix, relayed verbatim because "the addresses array
isn't parsed by the tracker" -- and :func:`parse_address` is the client's full
parse of the schemes we know (``tcp``, ``utp``). Clients drop addresses whose
scheme they do not know, for forward compatibility, through
:func:`parse_known_addresses`.

Everything here is pure and raises :class:`AddressError` with the offending
field named.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from csembed.discovery.errors import AddressError
from csembed.hex_ids import lower_hex_of

__all__ = [
    "CLUB_ID_LENGTH",
    "KNOWN_SCHEMES",
    "MAX_ADDRESS_LENGTH",
    "PEER_ID_LENGTH",
    "PeerAddress",
    "check_address_text",
    "read_club_id",
    "read_peer_id",
    "format_ip",
    "parse_address",
    "parse_ip",
    "parse_known_addresses",
]

CLUB_ID_LENGTH: Final = 64
"""Hex digits of an access ID or key ID (256 bits)."""
PEER_ID_LENGTH: Final = 32
"""Hex digits of a peer ID (128 bits)."""
MAX_ADDRESS_LENGTH: Final = 300
"""Our bound on one address string: ``utp:`` + a 253-character DNS name + ``:65535`` fits."""
KNOWN_SCHEMES: Final = ("tcp", "utp")
"""The pseudo-protocols core.md knows; a client ignores any other."""

_ADDRESS_TEXT = re.compile(r"[a-z][a-z0-9+.-]{0,15}:[\x21-\x7e]+")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DIGITS_AND_DOTS = re.compile(r"[0-9.]+")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_hex(value: Any, length: int, kind: str, what: str) -> str:
    if not isinstance(value, str):
        raise AddressError(f"{what}: a {kind} must be a string, got {type(value).__name__}")
    lowered = lower_hex_of(value, length)
    if lowered is None:
        raise AddressError(f"{what}: a {kind} is {length} hex digits, got {_short(value)}")
    return lowered


def read_club_id(value: Any, what: str = "id") -> str:
    """Return ``value`` in lower case if it is 64 hex digits in any case (an access or key ID).

    ``discovery.md``: IDs are read in upper or lower case, sent in lower case.
    """
    return _check_hex(value, CLUB_ID_LENGTH, "club ID", what)


def read_peer_id(value: Any, what: str = "peer") -> str:
    """Return ``value`` in lower case if it is 32 hex digits in any case (a peer ID).

    The tracker/LAN reading; a peer ID in our own records and the core
    greeting is checked strictly by :func:`csembed.security.keys.check_peer_id`.
    """
    return _check_hex(value, PEER_ID_LENGTH, "peer ID", what)


def check_address_text(value: Any, what: str = "address") -> str:
    """Check an address as a tracker relays it: ``scheme:`` then printable ASCII.

    The scheme is 1-16 lower-case characters (letters, digits, ``+.-``); the
    whole string is at most :data:`MAX_ADDRESS_LENGTH` characters with no
    spaces or control characters. The rest is not parsed, so schemes that do
    not exist yet pass through.
    """
    if not isinstance(value, str):
        raise AddressError(f"{what}: an address must be a string, got {type(value).__name__}")
    if len(value) > MAX_ADDRESS_LENGTH:
        raise AddressError(f"{what}: address is {len(value)} characters, "
                           f"over the limit of {MAX_ADDRESS_LENGTH}")
    if not _ADDRESS_TEXT.fullmatch(value):
        raise AddressError(f"{what}: not a 'scheme:host:port' address: {_short(value)}")
    return value


def _check_hostname(host: str, what: str) -> str:
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise AddressError(f"{what}: {_short(host)} is not an IP address or a DNS name")
    if _DIGITS_AND_DOTS.fullmatch(host):
        raise AddressError(f"{what}: {_short(host)} is not a valid IPv4 address")
    return host.lower()


@dataclass(frozen=True, order=True)
class PeerAddress:
    """One way to reach a peer: ``scheme`` (``tcp``/``utp``), ``host``, ``port``.

    ``host`` is an IPv4 address, an IPv6 address *without* brackets, or a
    lower-case DNS name; ``str()`` gives the wire form with brackets restored.
    """

    scheme: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if self.scheme not in KNOWN_SCHEMES:
            raise AddressError(f"address scheme {_short(self.scheme)} is not one of "
                               f"{', '.join(KNOWN_SCHEMES)}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise AddressError(f"port must be an int, got {type(self.port).__name__}")
        if not 1 <= self.port <= 65535:
            raise AddressError(f"port {self.port} is outside 1..65535")
        if not isinstance(self.host, str) or not self.host:
            raise AddressError("host must be a non-empty string")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            _check_hostname(self.host, "host")

    @property
    def is_ipv6(self) -> bool:
        """True when ``host`` is an IPv6 address."""
        return ":" in self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return f"{self.scheme}:{host}:{self.port}"


def parse_address(text: Any, what: str = "address") -> PeerAddress:
    """Parse ``tcp:HOST:PORT`` / ``utp:HOST:PORT`` (IPv6 hosts in brackets).

    Raises :class:`AddressError` for anything else, including schemes we do
    not know (use :func:`parse_known_addresses` to skip those quietly).
    """
    text = check_address_text(text, what)
    scheme, _, rest = text.partition(":")
    if scheme not in KNOWN_SCHEMES:
        raise AddressError(f"{what}: unknown address scheme {scheme!r}")
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0 or rest[close + 1: close + 2] != ":":
            raise AddressError(f"{what}: expected '[IPv6]:PORT' in {_short(text)}")
        host, port_text = rest[1:close], rest[close + 2:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise AddressError(f"{what}: {_short(host)} is not an IPv6 address") from None
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep or not host:
            raise AddressError(f"{what}: expected 'HOST:PORT' in {_short(text)}")
        if ":" in host:
            raise AddressError(f"{what}: an IPv6 address must be in brackets: {_short(text)}")
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            host = _check_hostname(host, what)
    if not port_text.isdigit() or len(port_text) > 5 or port_text.startswith("0"):
        raise AddressError(f"{what}: bad port {_short(port_text)} in {_short(text)}")
    try:
        return PeerAddress(scheme, host, int(port_text))
    except AddressError as exc:
        raise AddressError(f"{what}: {exc}") from None


def parse_known_addresses(texts: Iterable[Any]) -> tuple[tuple[PeerAddress, ...], int]:
    """Parse what can be parsed; return (addresses, how many were skipped).

    Unknown schemes and malformed entries are skipped, not fatal: a tracker
    relays addresses verbatim from other clients, so one bad client must not
    break our view of the rest. Duplicates are dropped, order is kept.
    """
    out: list[PeerAddress] = []
    seen: set[PeerAddress] = set()
    skipped = 0
    for text in texts:
        try:
            address = parse_address(text)
        except AddressError:
            skipped += 1
            continue
        if address not in seen:
            seen.add(address)
            out.append(address)
    return tuple(out), skipped


def parse_ip(text: Any, what: str = "your_ip") -> str:
    """Parse an IP as the tracker's ``your_ip`` gives it: IPv4 or ``[IPv6]``.

    Returns the address without brackets. Bare IPv6 is accepted too, since
    the draft only says it "will be surrounded" and being strict gains nothing.
    """
    if not isinstance(text, str) or not 2 <= len(text) <= 64:
        raise AddressError(f"{what}: expected an IP address string, got {_short(text)}")
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        raise AddressError(f"{what}: {_short(text)} is not an IP address") from None


def format_ip(host: str) -> str:
    """Format a socket's peer IP for ``your_ip``: IPv6 in brackets.

    An IPv4-mapped IPv6 address (``::ffff:1.2.3.4``, seen on dual-stack
    listeners) is given as the plain IPv4 address it stands for.
    """
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise AddressError(f"{_short(host)} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"[{ip}]"
    return str(ip)
